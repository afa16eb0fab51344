import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from styx.v1 import rules_pb2 as _rules_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_SCHEDULED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_SKIPPED: _ClassVar[TaskState]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_READY: _ClassVar[NodeState]
    NODE_STATE_LOST: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]
    NODE_STATE_GONE: _ClassVar[NodeState]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SUBMITTED: _ClassVar[EventType]
    EVENT_TYPE_SCHEDULED: _ClassVar[EventType]
    EVENT_TYPE_STARTED: _ClassVar[EventType]
    EVENT_TYPE_SUCCEEDED: _ClassVar[EventType]
    EVENT_TYPE_FAILED: _ClassVar[EventType]
    EVENT_TYPE_CANCELLED: _ClassVar[EventType]
    EVENT_TYPE_RETRYING: _ClassVar[EventType]
    EVENT_TYPE_SKIPPED: _ClassVar[EventType]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_SCHEDULED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_SKIPPED: TaskState
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_READY: NodeState
NODE_STATE_LOST: NodeState
NODE_STATE_DRAINING: NodeState
NODE_STATE_GONE: NodeState
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SUBMITTED: EventType
EVENT_TYPE_SCHEDULED: EventType
EVENT_TYPE_STARTED: EventType
EVENT_TYPE_SUCCEEDED: EventType
EVENT_TYPE_FAILED: EventType
EVENT_TYPE_CANCELLED: EventType
EVENT_TYPE_RETRYING: EventType
EVENT_TYPE_SKIPPED: EventType

class AcceleratorRequest(_message.Message):
    __slots__ = ("name", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ResourceRequest(_message.Message):
    __slots__ = ("cpus", "cpus_at_least", "memory_gib", "memory_at_least", "accelerators", "use_spot", "infra", "disk_gb", "max_hourly_cost", "instance_type", "any_of", "ordered", "cluster", "arch", "image_id")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    CPUS_AT_LEAST_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AT_LEAST_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    USE_SPOT_FIELD_NUMBER: _ClassVar[int]
    INFRA_FIELD_NUMBER: _ClassVar[int]
    DISK_GB_FIELD_NUMBER: _ClassVar[int]
    MAX_HOURLY_COST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    cpus: float
    cpus_at_least: bool
    memory_gib: float
    memory_at_least: bool
    accelerators: _containers.RepeatedCompositeFieldContainer[AcceleratorRequest]
    use_spot: bool
    infra: str
    disk_gb: float
    max_hourly_cost: float
    instance_type: str
    any_of: _containers.RepeatedCompositeFieldContainer[ResourceRequest]
    ordered: _containers.RepeatedCompositeFieldContainer[ResourceRequest]
    cluster: str
    arch: str
    image_id: str
    def __init__(self, cpus: _Optional[float] = ..., cpus_at_least: _Optional[bool] = ..., memory_gib: _Optional[float] = ..., memory_at_least: _Optional[bool] = ..., accelerators: _Optional[_Iterable[_Union[AcceleratorRequest, _Mapping]]] = ..., use_spot: _Optional[bool] = ..., infra: _Optional[str] = ..., disk_gb: _Optional[float] = ..., max_hourly_cost: _Optional[float] = ..., instance_type: _Optional[str] = ..., any_of: _Optional[_Iterable[_Union[ResourceRequest, _Mapping]]] = ..., ordered: _Optional[_Iterable[_Union[ResourceRequest, _Mapping]]] = ..., cluster: _Optional[str] = ..., arch: _Optional[str] = ..., image_id: _Optional[str] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "resources", "setup", "run", "envs", "workdir", "priority", "depends_on", "retry", "timeout_s", "num_nodes", "secrets")
    class EnvsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ENVS_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    resources: ResourceRequest
    setup: str
    run: str
    envs: _containers.ScalarMap[str, str]
    workdir: str
    priority: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    retry: RetryPolicy
    timeout_s: float
    num_nodes: int
    secrets: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., resources: _Optional[_Union[ResourceRequest, _Mapping]] = ..., setup: _Optional[str] = ..., run: _Optional[str] = ..., envs: _Optional[_Mapping[str, str]] = ..., workdir: _Optional[str] = ..., priority: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout_s: _Optional[float] = ..., num_nodes: _Optional[int] = ..., secrets: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff_s", "max_backoff_s", "exit_codes")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODES_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    exit_codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, max_retries: _Optional[int] = ..., backoff_s: _Optional[float] = ..., max_backoff_s: _Optional[float] = ..., exit_codes: _Optional[_Iterable[int]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "job_id", "spec", "state", "attempt", "node_id", "gpu_indices", "exit_code", "has_exit_code", "failure_reason", "created_at", "scheduled_at", "started_at", "finished_at", "retry_at", "job_name", "ranks")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    spec: TaskSpec
    state: TaskState
    attempt: int
    node_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    exit_code: int
    has_exit_code: bool
    failure_reason: str
    created_at: _timestamp_pb2.Timestamp
    scheduled_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    retry_at: _timestamp_pb2.Timestamp
    job_name: str
    ranks: _containers.RepeatedCompositeFieldContainer[TaskRank]
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., failure_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_name: _Optional[str] = ..., ranks: _Optional[_Iterable[_Union[TaskRank, _Mapping]]] = ...) -> None: ...

class TaskRank(_message.Message):
    __slots__ = ("node_id", "gpu_indices", "state", "exit_code", "has_exit_code", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    state: TaskState
    exit_code: int
    has_exit_code: bool
    address: str
    def __init__(self, node_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., state: _Optional[_Union[TaskState, str]] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., address: _Optional[str] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("index", "name", "memory_gib")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_gib: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_gib: _Optional[float] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("cpus", "memory_gib", "gpus")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpus: float
    memory_gib: float
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    def __init__(self, cpus: _Optional[float] = ..., memory_gib: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "provider", "instance_id", "region", "zone", "instance_type", "total", "allocated", "state", "labels", "last_heartbeat", "registered_at", "address")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    provider: str
    instance_id: str
    region: str
    zone: str
    instance_type: str
    total: Capacity
    allocated: Capacity
    state: NodeState
    labels: _containers.ScalarMap[str, str]
    last_heartbeat: _timestamp_pb2.Timestamp
    registered_at: _timestamp_pb2.Timestamp
    address: str
    def __init__(self, node_id: _Optional[str] = ..., provider: _Optional[str] = ..., instance_id: _Optional[str] = ..., region: _Optional[str] = ..., zone: _Optional[str] = ..., instance_type: _Optional[str] = ..., total: _Optional[_Union[Capacity, _Mapping]] = ..., allocated: _Optional[_Union[Capacity, _Mapping]] = ..., state: _Optional[_Union[NodeState, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., address: _Optional[str] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("provider", "region", "zone", "instance_type", "cpus", "memory_gib", "accelerator_name", "accelerator_count", "accelerator_memory_gib", "price_per_hour", "spot_price_per_hour", "arch", "max_instances")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    SPOT_PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    region: str
    zone: str
    instance_type: str
    cpus: float
    memory_gib: float
    accelerator_name: str
    accelerator_count: int
    accelerator_memory_gib: float
    price_per_hour: float
    spot_price_per_hour: float
    arch: str
    max_instances: int
    def __init__(self, provider: _Optional[str] = ..., region: _Optional[str] = ..., zone: _Optional[str] = ..., instance_type: _Optional[str] = ..., cpus: _Optional[float] = ..., memory_gib: _Optional[float] = ..., accelerator_name: _Optional[str] = ..., accelerator_count: _Optional[int] = ..., accelerator_memory_gib: _Optional[float] = ..., price_per_hour: _Optional[float] = ..., spot_price_per_hour: _Optional[float] = ..., arch: _Optional[str] = ..., max_instances: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "time", "type", "job_id", "task_id", "state", "attempt", "node_id", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    type: EventType
    job_id: str
    task_id: str
    state: TaskState
    attempt: int
    node_id: str
    message: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[EventType, str]] = ..., job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
