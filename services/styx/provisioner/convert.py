"""Conversion between styx.v1 provisioner messages and the provisioner's dataclasses."""

from __future__ import annotations

from styx.common.offers import offer_from_pb, offer_to_pb
from styx.common.timeutil import to_timestamp
from styx.provisioner import core
from styx.provisioner.provider import ProviderErrorKind
from styx.v1 import provisioner_pb2

_OP_STATE = {
    core.OperationState.PENDING: provisioner_pb2.OPERATION_STATE_PENDING,
    core.OperationState.RUNNING: provisioner_pb2.OPERATION_STATE_RUNNING,
    core.OperationState.DONE: provisioner_pb2.OPERATION_STATE_DONE,
    core.OperationState.FAILED: provisioner_pb2.OPERATION_STATE_FAILED,
}
_OP_KIND = {
    core.OperationKind.PROVISION: provisioner_pb2.OPERATION_KIND_PROVISION,
    core.OperationKind.TERMINATE: provisioner_pb2.OPERATION_KIND_TERMINATE,
    core.OperationKind.STOP: provisioner_pb2.OPERATION_KIND_STOP,
    core.OperationKind.START: provisioner_pb2.OPERATION_KIND_START,
}
_INSTANCE_STATE = {
    core.InstanceState.PENDING: provisioner_pb2.INSTANCE_STATE_PENDING,
    core.InstanceState.RUNNING: provisioner_pb2.INSTANCE_STATE_RUNNING,
    core.InstanceState.TERMINATING: provisioner_pb2.INSTANCE_STATE_TERMINATING,
    core.InstanceState.TERMINATED: provisioner_pb2.INSTANCE_STATE_TERMINATED,
    core.InstanceState.STOPPED: provisioner_pb2.INSTANCE_STATE_STOPPED,
}
_ERROR_KIND = {
    ProviderErrorKind.CAPACITY: provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY,
    ProviderErrorKind.QUOTA: provisioner_pb2.PROVIDER_ERROR_KIND_QUOTA,
    ProviderErrorKind.AUTH: provisioner_pb2.PROVIDER_ERROR_KIND_AUTH,
    ProviderErrorKind.INVALID: provisioner_pb2.PROVIDER_ERROR_KIND_INVALID,
    ProviderErrorKind.INTERNAL: provisioner_pb2.PROVIDER_ERROR_KIND_INTERNAL,
}


offer_to_proto = offer_to_pb
offer_from_proto = offer_from_pb


def provider_info_to_proto(info: core.ProviderInfo) -> provisioner_pb2.ProviderInfo:
    """Domain provider info -> ``styx.v1.ProviderInfo``."""
    return provisioner_pb2.ProviderInfo(
        name=info.name,
        enabled=info.enabled,
        reason=info.reason,
        hint=info.hint,
        capabilities=sorted(info.capabilities),
    )


def instance_to_proto(inst: core.Instance) -> provisioner_pb2.Instance:
    """Domain instance -> ``styx.v1.Instance``."""
    return provisioner_pb2.Instance(
        instance_id=inst.instance_id,
        node_id=inst.node_id,
        provider=inst.provider,
        offer=offer_to_proto(inst.offer),
        state=_INSTANCE_STATE[inst.state],
        spot=inst.spot,
        created_at=to_timestamp(inst.created_at),
    )


def operation_to_proto(op: core.Operation) -> provisioner_pb2.Operation:
    """Domain operation -> ``styx.v1.Operation``."""
    msg = provisioner_pb2.Operation(
        operation_id=op.operation_id,
        kind=_OP_KIND[op.kind],
        state=_OP_STATE[op.state],
        node_id=op.node_id,
        created_at=to_timestamp(op.created_at),
        updated_at=to_timestamp(op.updated_at),
    )
    if op.instance is not None:
        msg.instance.CopyFrom(instance_to_proto(op.instance))
    if op.error_kind is not None:
        msg.error.CopyFrom(provisioner_pb2.ProviderError(kind=_ERROR_KIND[op.error_kind], message=op.error_message))
    return msg
