from styx.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocationOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_OUTCOME_UNSPECIFIED: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_PLACED: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_WAITING: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_INFEASIBLE: _ClassVar[AllocationOutcome]
ALLOCATION_OUTCOME_UNSPECIFIED: AllocationOutcome
ALLOCATION_OUTCOME_PLACED: AllocationOutcome
ALLOCATION_OUTCOME_WAITING: AllocationOutcome
ALLOCATION_OUTCOME_INFEASIBLE: AllocationOutcome

class RegisterNodeRequest(_message.Message):
    __slots__ = ("request_id", "node_id", "provider", "instance_id", "capacity", "region", "zone", "instance_type", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    provider: str
    instance_id: str
    capacity: _common_pb2.Capacity
    region: str
    zone: str
    instance_type: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ..., provider: _Optional[str] = ..., instance_id: _Optional[str] = ..., capacity: _Optional[_Union[_common_pb2.Capacity, _Mapping]] = ..., region: _Optional[str] = ..., zone: _Optional[str] = ..., instance_type: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known", "lease_seconds")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    known: bool
    lease_seconds: float
    def __init__(self, known: _Optional[bool] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class AllocationRequest(_message.Message):
    __slots__ = ("allocation_id", "task_id", "resources")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    task_id: str
    resources: _common_pb2.ResourceRequest
    def __init__(self, allocation_id: _Optional[str] = ..., task_id: _Optional[str] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ...) -> None: ...

class AllocateRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AllocationRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AllocationRequest, _Mapping]]] = ...) -> None: ...

class AllocationResult(_message.Message):
    __slots__ = ("allocation_id", "outcome", "node_id", "gpu_indices", "reason")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    outcome: AllocationOutcome
    node_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, allocation_id: _Optional[str] = ..., outcome: _Optional[_Union[AllocationOutcome, str]] = ..., node_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class AllocateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AllocationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AllocationResult, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("allocation_id",)
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    def __init__(self, allocation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("include_lost",)
    INCLUDE_LOST_FIELD_NUMBER: _ClassVar[int]
    include_lost: bool
    def __init__(self, include_lost: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_common_pb2.Node, _Mapping]]] = ...) -> None: ...
