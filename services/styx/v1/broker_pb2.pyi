import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from styx.v1 import common_pb2 as _common_pb2
from styx.v1 import provisioner_pb2 as _provisioner_pb2
from styx.v1 import rules_pb2 as _rules_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_STATE_UNSPECIFIED: _ClassVar[ClusterState]
    CLUSTER_STATE_INIT: _ClassVar[ClusterState]
    CLUSTER_STATE_UP: _ClassVar[ClusterState]
    CLUSTER_STATE_DOWN: _ClassVar[ClusterState]
    CLUSTER_STATE_FAILED: _ClassVar[ClusterState]
    CLUSTER_STATE_STOPPED: _ClassVar[ClusterState]
    CLUSTER_STATE_STARTING: _ClassVar[ClusterState]

class AllocationOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_OUTCOME_UNSPECIFIED: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_PLACED: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_WAITING: _ClassVar[AllocationOutcome]
    ALLOCATION_OUTCOME_INFEASIBLE: _ClassVar[AllocationOutcome]

class ProvisioningAttemptState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVISIONING_ATTEMPT_STATE_UNSPECIFIED: _ClassVar[ProvisioningAttemptState]
    PROVISIONING_ATTEMPT_STATE_PENDING: _ClassVar[ProvisioningAttemptState]
    PROVISIONING_ATTEMPT_STATE_REGISTERED: _ClassVar[ProvisioningAttemptState]
    PROVISIONING_ATTEMPT_STATE_FAILED: _ClassVar[ProvisioningAttemptState]
    PROVISIONING_ATTEMPT_STATE_LOST: _ClassVar[ProvisioningAttemptState]
CLUSTER_STATE_UNSPECIFIED: ClusterState
CLUSTER_STATE_INIT: ClusterState
CLUSTER_STATE_UP: ClusterState
CLUSTER_STATE_DOWN: ClusterState
CLUSTER_STATE_FAILED: ClusterState
CLUSTER_STATE_STOPPED: ClusterState
CLUSTER_STATE_STARTING: ClusterState
ALLOCATION_OUTCOME_UNSPECIFIED: AllocationOutcome
ALLOCATION_OUTCOME_PLACED: AllocationOutcome
ALLOCATION_OUTCOME_WAITING: AllocationOutcome
ALLOCATION_OUTCOME_INFEASIBLE: AllocationOutcome
PROVISIONING_ATTEMPT_STATE_UNSPECIFIED: ProvisioningAttemptState
PROVISIONING_ATTEMPT_STATE_PENDING: ProvisioningAttemptState
PROVISIONING_ATTEMPT_STATE_REGISTERED: ProvisioningAttemptState
PROVISIONING_ATTEMPT_STATE_FAILED: ProvisioningAttemptState
PROVISIONING_ATTEMPT_STATE_LOST: ProvisioningAttemptState

class Cluster(_message.Message):
    __slots__ = ("name", "state", "resources", "num_nodes", "node_ids", "idle_minutes", "autostop_down", "reason", "hourly_price", "where")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_MINUTES_FIELD_NUMBER: _ClassVar[int]
    AUTOSTOP_DOWN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOURLY_PRICE_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ClusterState
    resources: _common_pb2.ResourceRequest
    num_nodes: int
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    idle_minutes: int
    autostop_down: bool
    reason: str
    hourly_price: float
    where: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ClusterState, str]] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., num_nodes: _Optional[int] = ..., node_ids: _Optional[_Iterable[str]] = ..., idle_minutes: _Optional[int] = ..., autostop_down: _Optional[bool] = ..., reason: _Optional[str] = ..., hourly_price: _Optional[float] = ..., where: _Optional[str] = ...) -> None: ...

class CreateClusterRequest(_message.Message):
    __slots__ = ("request_id", "name", "resources", "num_nodes", "idle_minutes", "autostop_down")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    IDLE_MINUTES_FIELD_NUMBER: _ClassVar[int]
    AUTOSTOP_DOWN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    resources: _common_pb2.ResourceRequest
    num_nodes: int
    idle_minutes: int
    autostop_down: bool
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., num_nodes: _Optional[int] = ..., idle_minutes: _Optional[int] = ..., autostop_down: _Optional[bool] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ("include_down", "page_size", "page_token")
    INCLUDE_DOWN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    include_down: bool
    page_size: int
    page_token: str
    def __init__(self, include_down: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters", "next_page_token")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    next_page_token: str
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DownClusterRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class StopClusterRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class StartClusterRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SetAutostopRequest(_message.Message):
    __slots__ = ("request_id", "name", "idle_minutes", "down")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IDLE_MINUTES_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    idle_minutes: int
    down: bool
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ..., idle_minutes: _Optional[int] = ..., down: _Optional[bool] = ...) -> None: ...

class JoinNodeRequest(_message.Message):
    __slots__ = ("request_id", "node_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class JoinNodeResponse(_message.Message):
    __slots__ = ("node_token",)
    NODE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_token: str
    def __init__(self, node_token: _Optional[str] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("request_id", "node_id", "provider", "instance_id", "capacity", "region", "zone", "instance_type", "labels", "address")
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
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    provider: str
    instance_id: str
    capacity: _common_pb2.Capacity
    region: str
    zone: str
    instance_type: str
    labels: _containers.ScalarMap[str, str]
    address: str
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ..., provider: _Optional[str] = ..., instance_id: _Optional[str] = ..., capacity: _Optional[_Union[_common_pb2.Capacity, _Mapping]] = ..., region: _Optional[str] = ..., zone: _Optional[str] = ..., instance_type: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., address: _Optional[str] = ...) -> None: ...

class DeregisterNodeRequest(_message.Message):
    __slots__ = ("request_id", "node_id", "reason", "instance_lost")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_LOST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    node_id: str
    reason: str
    instance_lost: bool
    def __init__(self, request_id: _Optional[str] = ..., node_id: _Optional[str] = ..., reason: _Optional[str] = ..., instance_lost: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("allocation_id", "task_id", "resources", "num_nodes")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    task_id: str
    resources: _common_pb2.ResourceRequest
    num_nodes: int
    def __init__(self, allocation_id: _Optional[str] = ..., task_id: _Optional[str] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., num_nodes: _Optional[int] = ...) -> None: ...

class NodePlacement(_message.Message):
    __slots__ = ("node_id", "gpu_indices", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    address: str
    def __init__(self, node_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., address: _Optional[str] = ...) -> None: ...

class AllocateRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AllocationRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AllocationRequest, _Mapping]]] = ...) -> None: ...

class AllocationResult(_message.Message):
    __slots__ = ("allocation_id", "outcome", "node_id", "gpu_indices", "reason", "nodes")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    outcome: AllocationOutcome
    node_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodePlacement]
    def __init__(self, allocation_id: _Optional[str] = ..., outcome: _Optional[_Union[AllocationOutcome, str]] = ..., node_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodePlacement, _Mapping]]] = ...) -> None: ...

class AllocateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AllocationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AllocationResult, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("allocation_id", "allocation_ids")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    allocation_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allocation_id: _Optional[str] = ..., allocation_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released", "released_count")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    released: bool
    released_count: int
    def __init__(self, released: _Optional[bool] = ..., released_count: _Optional[int] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("include_lost", "page_size", "page_token")
    INCLUDE_LOST_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    include_lost: bool
    page_size: int
    page_token: str
    def __init__(self, include_lost: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[_common_pb2.Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("resources", "num_nodes", "limit", "include_disabled")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    resources: _common_pb2.ResourceRequest
    num_nodes: int
    limit: int
    include_disabled: bool
    def __init__(self, resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., num_nodes: _Optional[int] = ..., limit: _Optional[int] = ..., include_disabled: _Optional[bool] = ...) -> None: ...

class RankedOffer(_message.Message):
    __slots__ = ("offer", "hourly_price", "total_hourly_price", "spot", "provider_enabled", "alternative")
    OFFER_FIELD_NUMBER: _ClassVar[int]
    HOURLY_PRICE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_HOURLY_PRICE_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_FIELD_NUMBER: _ClassVar[int]
    offer: _common_pb2.Offer
    hourly_price: float
    total_hourly_price: float
    spot: bool
    provider_enabled: bool
    alternative: int
    def __init__(self, offer: _Optional[_Union[_common_pb2.Offer, _Mapping]] = ..., hourly_price: _Optional[float] = ..., total_hourly_price: _Optional[float] = ..., spot: _Optional[bool] = ..., provider_enabled: _Optional[bool] = ..., alternative: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("family", "reason")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    family: str
    reason: str
    def __init__(self, family: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("offers", "rejections", "request_summary")
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    offers: _containers.RepeatedCompositeFieldContainer[RankedOffer]
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    request_summary: str
    def __init__(self, offers: _Optional[_Iterable[_Union[RankedOffer, _Mapping]]] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., request_summary: _Optional[str] = ...) -> None: ...

class ImportCatalogRequest(_message.Message):
    __slots__ = ("request_id", "offers")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    offers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Offer]
    def __init__(self, request_id: _Optional[str] = ..., offers: _Optional[_Iterable[_Union[_common_pb2.Offer, _Mapping]]] = ...) -> None: ...

class ImportCatalogResponse(_message.Message):
    __slots__ = ("count", "providers")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    count: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, count: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListCatalogsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class CatalogInfo(_message.Message):
    __slots__ = ("provider", "offers", "imported", "imported_at", "regions")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    offers: int
    imported: bool
    imported_at: _timestamp_pb2.Timestamp
    regions: int
    def __init__(self, provider: _Optional[str] = ..., offers: _Optional[int] = ..., imported: _Optional[bool] = ..., imported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., regions: _Optional[int] = ...) -> None: ...

class ListCatalogsResponse(_message.Message):
    __slots__ = ("catalogs", "next_page_token")
    CATALOGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    catalogs: _containers.RepeatedCompositeFieldContainer[CatalogInfo]
    next_page_token: str
    def __init__(self, catalogs: _Optional[_Iterable[_Union[CatalogInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAcceleratorsRequest(_message.Message):
    __slots__ = ("name", "include_disabled", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_disabled: bool
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., include_disabled: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AcceleratorOffer(_message.Message):
    __slots__ = ("count", "cheapest", "cheapest_spot_price_per_hour")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CHEAPEST_FIELD_NUMBER: _ClassVar[int]
    CHEAPEST_SPOT_PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    count: int
    cheapest: _common_pb2.Offer
    cheapest_spot_price_per_hour: float
    def __init__(self, count: _Optional[int] = ..., cheapest: _Optional[_Union[_common_pb2.Offer, _Mapping]] = ..., cheapest_spot_price_per_hour: _Optional[float] = ...) -> None: ...

class AcceleratorInfo(_message.Message):
    __slots__ = ("name", "counts", "providers", "offers", "memory_gib")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    name: str
    counts: _containers.RepeatedScalarFieldContainer[int]
    providers: _containers.RepeatedScalarFieldContainer[str]
    offers: _containers.RepeatedCompositeFieldContainer[AcceleratorOffer]
    memory_gib: float
    def __init__(self, name: _Optional[str] = ..., counts: _Optional[_Iterable[int]] = ..., providers: _Optional[_Iterable[str]] = ..., offers: _Optional[_Iterable[_Union[AcceleratorOffer, _Mapping]]] = ..., memory_gib: _Optional[float] = ...) -> None: ...

class ListAcceleratorsResponse(_message.Message):
    __slots__ = ("accelerators", "next_page_token")
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accelerators: _containers.RepeatedCompositeFieldContainer[AcceleratorInfo]
    next_page_token: str
    def __init__(self, accelerators: _Optional[_Iterable[_Union[AcceleratorInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListProvisioningAttemptsRequest(_message.Message):
    __slots__ = ("task_id", "allocation_id", "node_id", "limit", "page_size", "page_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    allocation_id: str
    node_id: str
    limit: int
    page_size: int
    page_token: str
    def __init__(self, task_id: _Optional[str] = ..., allocation_id: _Optional[str] = ..., node_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ProvisioningAttempt(_message.Message):
    __slots__ = ("node_id", "allocation_id", "task_id", "offer", "spot", "hourly_price", "state", "error", "error_kind", "operation_id", "started_at", "updated_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    HOURLY_PRICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    allocation_id: str
    task_id: str
    offer: _common_pb2.Offer
    spot: bool
    hourly_price: float
    state: ProvisioningAttemptState
    error: str
    error_kind: _provisioner_pb2.ProviderErrorKind
    operation_id: str
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., allocation_id: _Optional[str] = ..., task_id: _Optional[str] = ..., offer: _Optional[_Union[_common_pb2.Offer, _Mapping]] = ..., spot: _Optional[bool] = ..., hourly_price: _Optional[float] = ..., state: _Optional[_Union[ProvisioningAttemptState, str]] = ..., error: _Optional[str] = ..., error_kind: _Optional[_Union[_provisioner_pb2.ProviderErrorKind, str]] = ..., operation_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProvisioningAttemptsResponse(_message.Message):
    __slots__ = ("attempts", "next_page_token")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[ProvisioningAttempt]
    next_page_token: str
    def __init__(self, attempts: _Optional[_Iterable[_Union[ProvisioningAttempt, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
