import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from styx.v1 import common_pb2 as _common_pb2
from styx.v1 import rules_pb2 as _rules_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_PENDING: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_DONE: _ClassVar[OperationState]
    OPERATION_STATE_FAILED: _ClassVar[OperationState]

class ProviderErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_ERROR_KIND_UNSPECIFIED: _ClassVar[ProviderErrorKind]
    PROVIDER_ERROR_KIND_CAPACITY: _ClassVar[ProviderErrorKind]
    PROVIDER_ERROR_KIND_QUOTA: _ClassVar[ProviderErrorKind]
    PROVIDER_ERROR_KIND_AUTH: _ClassVar[ProviderErrorKind]
    PROVIDER_ERROR_KIND_INVALID: _ClassVar[ProviderErrorKind]
    PROVIDER_ERROR_KIND_INTERNAL: _ClassVar[ProviderErrorKind]

class OperationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_KIND_UNSPECIFIED: _ClassVar[OperationKind]
    OPERATION_KIND_PROVISION: _ClassVar[OperationKind]
    OPERATION_KIND_TERMINATE: _ClassVar[OperationKind]
    OPERATION_KIND_STOP: _ClassVar[OperationKind]
    OPERATION_KIND_START: _ClassVar[OperationKind]

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_STATE_PENDING: _ClassVar[InstanceState]
    INSTANCE_STATE_RUNNING: _ClassVar[InstanceState]
    INSTANCE_STATE_TERMINATING: _ClassVar[InstanceState]
    INSTANCE_STATE_TERMINATED: _ClassVar[InstanceState]
    INSTANCE_STATE_STOPPED: _ClassVar[InstanceState]
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_PENDING: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_DONE: OperationState
OPERATION_STATE_FAILED: OperationState
PROVIDER_ERROR_KIND_UNSPECIFIED: ProviderErrorKind
PROVIDER_ERROR_KIND_CAPACITY: ProviderErrorKind
PROVIDER_ERROR_KIND_QUOTA: ProviderErrorKind
PROVIDER_ERROR_KIND_AUTH: ProviderErrorKind
PROVIDER_ERROR_KIND_INVALID: ProviderErrorKind
PROVIDER_ERROR_KIND_INTERNAL: ProviderErrorKind
OPERATION_KIND_UNSPECIFIED: OperationKind
OPERATION_KIND_PROVISION: OperationKind
OPERATION_KIND_TERMINATE: OperationKind
OPERATION_KIND_STOP: OperationKind
OPERATION_KIND_START: OperationKind
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_STATE_PENDING: InstanceState
INSTANCE_STATE_RUNNING: InstanceState
INSTANCE_STATE_TERMINATING: InstanceState
INSTANCE_STATE_TERMINATED: InstanceState
INSTANCE_STATE_STOPPED: InstanceState

class ProviderInfo(_message.Message):
    __slots__ = ("name", "enabled", "reason", "hint", "capabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    reason: str
    hint: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., reason: _Optional[str] = ..., hint: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers", "next_page_token")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderInfo]
    next_page_token: str
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListOffersRequest(_message.Message):
    __slots__ = ("provider", "page_size", "page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    page_size: int
    page_token: str
    def __init__(self, provider: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOffersResponse(_message.Message):
    __slots__ = ("offers", "next_page_token")
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    offers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Offer]
    next_page_token: str
    def __init__(self, offers: _Optional[_Iterable[_Union[_common_pb2.Offer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ProvisionRequest(_message.Message):
    __slots__ = ("request_id", "offer", "node_id", "use_spot", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    USE_SPOT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    offer: _common_pb2.Offer
    node_id: str
    use_spot: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., offer: _Optional[_Union[_common_pb2.Offer, _Mapping]] = ..., node_id: _Optional[str] = ..., use_spot: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TerminateRequest(_message.Message):
    __slots__ = ("request_id", "node_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("request_id", "node_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("request_id", "node_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class ProviderError(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: ProviderErrorKind
    message: str
    def __init__(self, kind: _Optional[_Union[ProviderErrorKind, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("instance_id", "node_id", "provider", "offer", "state", "spot", "created_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    node_id: str
    provider: str
    offer: _common_pb2.Offer
    state: InstanceState
    spot: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., node_id: _Optional[str] = ..., provider: _Optional[str] = ..., offer: _Optional[_Union[_common_pb2.Offer, _Mapping]] = ..., state: _Optional[_Union[InstanceState, str]] = ..., spot: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("operation_id", "kind", "state", "node_id", "instance", "error", "created_at", "updated_at")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    kind: OperationKind
    state: OperationState
    node_id: str
    instance: Instance
    error: ProviderError
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, operation_id: _Optional[str] = ..., kind: _Optional[_Union[OperationKind, str]] = ..., state: _Optional[_Union[OperationState, str]] = ..., node_id: _Optional[str] = ..., instance: _Optional[_Union[Instance, _Mapping]] = ..., error: _Optional[_Union[ProviderError, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetProviderCatalogRequest(_message.Message):
    __slots__ = ("provider", "regions")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, provider: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ...) -> None: ...

class GetProviderCatalogResponse(_message.Message):
    __slots__ = ("offers",)
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    offers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Offer]
    def __init__(self, offers: _Optional[_Iterable[_Union[_common_pb2.Offer, _Mapping]]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("provider", "include_terminated", "page_size", "page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TERMINATED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    include_terminated: bool
    page_size: int
    page_token: str
    def __init__(self, provider: _Optional[str] = ..., include_terminated: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
