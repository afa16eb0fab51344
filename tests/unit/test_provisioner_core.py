"""Provisioner core with an in-memory provider: operations, idempotency, failures, reconcile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from sqlalchemy import Engine

from helpers import wait_until
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.provider import (
    PLANE_LABEL,
    AgentLaunch,
    Capabilities,
    InstanceStatus,
    Offer,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
)
from styx.provisioner.core import PLANE_ID, InstanceState, OperationKind, OperationState, Provisioner


def _offer(provider: str, region: str, instance_type: str) -> Offer:
    return Offer(provider=provider, region=region, zone="", instance_type=instance_type, cpus=1, memory_gib=1)


OFFER = Offer(provider="fake", region="r1", zone="", instance_type="small", cpus=2, memory_gib=4, max_instances=3)
LAUNCH = AgentLaunch("127.0.0.1:1", "127.0.0.1:2", token="tok")


class FakeProvider:
    """An in-memory cloud: instances are dict entries. ``fail`` makes the next creates fail."""

    name = "fake"

    def __init__(self) -> None:
        self.instances: dict[str, str] = {}  # instance_id -> node_id
        self.planes: dict[str, str] = {}  # instance_id -> its styx-plane label
        self.labels: dict[str, dict[str, str]] = {}  # request_id -> labels create got
        self.by_request: dict[str, str] = {}  # request_id -> instance_id (idempotency)
        self.create_calls: list[str] = []
        self.terminated: list[str] = []
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None  # when set, create waits for it
        self.enabled = True
        self.seen_launch: AgentLaunch | None = None
        self._lock = threading.Lock()

    def check(self) -> ProviderStatus:
        return ProviderStatus(self.enabled, "" if self.enabled else "no credentials", "" if self.enabled else "login")

    def offers(self) -> list[Offer]:
        return [OFFER]

    def create(
        self,
        *,
        node_id: str,
        offer: Offer,
        spot: bool,
        labels: Mapping[str, str],
        request_id: str,
        agent_launch: AgentLaunch,
    ) -> str:
        self.create_calls.append(request_id)
        self.seen_launch = agent_launch
        self.labels[request_id] = dict(labels)
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        with self._lock:
            if request_id in self.by_request:
                return self.by_request[request_id]
            instance_id = f"i-{len(self.by_request) + 1}"
            self.by_request[request_id] = instance_id
            self.instances[instance_id] = node_id
            self.planes[instance_id] = labels.get(PLANE_LABEL, "")
            return instance_id

    def terminate(self, instance_id: str) -> None:
        self.terminated.append(instance_id)
        self.instances.pop(instance_id, None)

    def list_instances(self) -> list[ProviderInstance]:
        return [
            ProviderInstance(i, n, InstanceStatus.RUNNING, self.planes.get(i, ""))
            for i, n in list(self.instances.items())
        ]


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def engine(engine_factory: Callable[[str], Engine]) -> Engine:
    return engine_factory("provisioner")


@pytest.fixture
def prov(engine: Engine, fake: FakeProvider) -> Iterator[Provisioner]:
    core = Provisioner(engine, {"fake": fake}, LAUNCH, reconcile_interval_s=3600)
    core.start(reconcile=False)
    yield core
    if fake.gate is not None:
        fake.gate.set()
    core.stop()


def _done(prov: Provisioner, op_id: str) -> object:
    return wait_until(
        lambda: prov.get_operation(op_id).state.terminal and prov.get_operation(op_id),
        message=f"operation {op_id} to finish",
    )


def test_provision_creates_an_instance(prov: Provisioner, fake: FakeProvider) -> None:
    op = prov.provision("req-1", OFFER, "node-a", labels={"team": "ml"})
    assert op.kind is OperationKind.PROVISION
    assert op.state in (OperationState.PENDING, OperationState.RUNNING, OperationState.DONE)
    final = _done(prov, op.operation_id)
    assert final.state is OperationState.DONE  # type: ignore[attr-defined]
    assert final.instance.instance_id == "i-1"  # type: ignore[attr-defined]
    assert final.instance.state is InstanceState.RUNNING  # type: ignore[attr-defined]
    assert fake.seen_launch == LAUNCH
    (inst,) = prov.list_instances()
    assert (inst.node_id, inst.instance_id, inst.labels) == (
        "node-a",
        "i-1",
        {"team": "ml", PLANE_LABEL: prov.plane_id},
    )


def test_provision_is_idempotent_on_request_id(prov: Provisioner, fake: FakeProvider) -> None:
    first = prov.provision("req-1", OFFER, "node-a")
    again = prov.provision("req-1", OFFER, "node-a")
    assert again.operation_id == first.operation_id
    _done(prov, first.operation_id)
    assert prov.provision("req-1", OFFER, "node-a").operation_id == first.operation_id
    assert fake.create_calls == ["req-1"]
    with pytest.raises(InvalidArgument, match="request_id"):
        prov.provision("req-1", OFFER, "node-b")


def test_provider_failure_maps_to_failed_operation_with_kind(prov: Provisioner, fake: FakeProvider) -> None:
    fake.fail = ProviderError(ProviderErrorKind.CAPACITY, "no small instances in r1")
    op = _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
    assert op.state is OperationState.FAILED  # type: ignore[attr-defined]
    assert op.error_kind is ProviderErrorKind.CAPACITY  # type: ignore[attr-defined]
    assert op.error_message == "no small instances in r1"  # type: ignore[attr-defined]
    assert prov.list_instances() == []
    assert prov.list_instances(include_terminated=True)[0].state is InstanceState.TERMINATED


def test_unexpected_provider_exception_is_internal_without_details(prov: Provisioner, fake: FakeProvider) -> None:
    fake.fail = RuntimeError("secret=hunter2")
    op = _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
    assert op.error_kind is ProviderErrorKind.INTERNAL  # type: ignore[attr-defined]
    assert "hunter2" not in op.error_message  # type: ignore[attr-defined]
    assert "reference err-" in op.error_message  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"request_id": ""}, "request_id"),
        ({"node_id": ""}, "node_id"),
        ({"node_id": "bad/../id"}, "node_id"),
        ({"offer": _offer("", "r1", "small")}, "offer.provider"),
        ({"offer": _offer("nope", "r1", "small")}, "offer.provider"),
        ({"offer": _offer("fake", "r1", "")}, "offer.instance_type"),
        ({"offer": _offer("fake", "r1", "huge")}, "offer"),
        ({"offer": _offer("fake", "r9", "small")}, "offer"),
        ({"labels": {"": "x"}}, "labels"),
    ],
)
def test_invalid_provision_names_the_field(prov: Provisioner, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"request_id": "req-1", "offer": OFFER, "node_id": "node-a", **kwargs}
    with pytest.raises(InvalidArgument) as info:
        prov.provision(**args)  # type: ignore[arg-type]
    assert info.value.message.startswith(f"{field}:")


def test_disabled_provider_is_a_failed_precondition(engine: Engine, fake: FakeProvider) -> None:
    fake.enabled = False
    core = Provisioner(engine, {"fake": fake}, LAUNCH)
    core.start(reconcile=False)
    try:
        with pytest.raises(FailedPrecondition, match="no credentials"):
            core.provision("req-1", OFFER, "node-a")
        with pytest.raises(FailedPrecondition):
            core.list_offers("fake")
        assert core.list_offers() == []
        (info,) = core.list_providers()
        assert (info.name, info.enabled, info.reason, info.hint) == ("fake", False, "no credentials", "login")
    finally:
        core.stop()


def test_max_instances_fails_with_capacity(prov: Provisioner) -> None:
    for i in range(3):
        _done(prov, prov.provision(f"req-{i}", OFFER, f"node-{i}").operation_id)
    op = prov.provision("req-x", OFFER, "node-x")
    assert op.state is OperationState.FAILED
    assert op.error_kind is ProviderErrorKind.CAPACITY
    assert "at most 3" in op.error_message


def test_node_with_a_live_instance_cannot_be_provisioned_again(prov: Provisioner) -> None:
    _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
    with pytest.raises(FailedPrecondition, match="node-a"):
        prov.provision("req-2", OFFER, "node-a")


def test_terminate(prov: Provisioner, fake: FakeProvider) -> None:
    _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
    op = prov.terminate("term-1", "node-a")
    assert op.kind is OperationKind.TERMINATE
    final = _done(prov, op.operation_id)
    assert final.state is OperationState.DONE  # type: ignore[attr-defined]
    assert fake.terminated == ["i-1"]
    assert prov.list_instances() == []
    assert prov.terminate("term-1", "node-a").operation_id == op.operation_id
    # Terminating what is already gone succeeds at once.
    again = prov.terminate("term-2", "node-a")
    assert again.state is OperationState.DONE
    assert fake.terminated == ["i-1"]
    with pytest.raises(NotFound, match="node-zzz"):
        prov.terminate("term-3", "node-zzz")
    with pytest.raises(NotFound):
        prov.get_operation("op-missing")


def test_terminate_waits_for_a_create_in_progress(prov: Provisioner, fake: FakeProvider) -> None:
    fake.gate = threading.Event()
    p_op = prov.provision("req-1", OFFER, "node-a")
    wait_until(lambda: fake.create_calls, message="create to start")
    t_op = prov.terminate("term-1", "node-a")
    fake.gate.set()
    assert _done(prov, p_op.operation_id).state is OperationState.DONE  # type: ignore[attr-defined]
    assert _done(prov, t_op.operation_id).state is OperationState.DONE  # type: ignore[attr-defined]
    assert fake.terminated == ["i-1"]


def test_watch_yields_each_change_until_done(prov: Provisioner, fake: FakeProvider) -> None:
    fake.gate = threading.Event()
    op = prov.provision("req-1", OFFER, "node-a")
    seen: list[OperationState] = []

    def watch() -> None:
        for o in prov.watch_operation(op.operation_id):
            seen.append(o.state)

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_until(lambda: OperationState.RUNNING in seen, message="RUNNING to be watched")
    fake.gate.set()
    watcher.join(10)
    assert not watcher.is_alive()
    assert seen[-1] is OperationState.DONE
    assert seen == sorted(set(seen), key=seen.index)  # no state repeated


def test_reconcile_marks_vanished_instances_and_terminates_leaks(engine: Engine, fake: FakeProvider) -> None:
    gone: list[tuple[str, str]] = []
    prov = Provisioner(
        engine,
        {"fake": fake},
        LAUNCH,
        reconcile_interval_s=3600,
        leak_grace_s=0.3,
        on_instance_gone=lambda node, why: gone.append((node, why)),
    )
    prov.start(reconcile=False)
    try:
        _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
        _done(prov, prov.provision("req-2", OFFER, "node-b").operation_id)
        fake.instances.pop("i-1")  # node-a's machine died
        # Created by this plane but owned by no record (a crash between create and commit)...
        fake.instances["i-leak"], fake.planes["i-leak"] = "node-unknown", prov.plane_id
        # ...and two that are not this plane's to reap: another plane's, and an unlabelled one.
        fake.instances["i-theirs"], fake.planes["i-theirs"] = "node-x", "plane-other"
        fake.instances["i-nolabel"] = "node-y"
        prov.reconcile_once()
        states = {i.node_id: i.state for i in prov.list_instances(include_terminated=True)}
        assert states == {"node-a": InstanceState.TERMINATED, "node-b": InstanceState.RUNNING}
        assert gone == [("node-a", "instance i-1 vanished")]  # reported, so its tasks re-queue now
        assert fake.terminated == []  # within the grace period an unowned instance is left alone
        time.sleep(0.35)
        prov.reconcile_once()
        assert fake.terminated == ["i-leak"]
        assert {"i-theirs", "i-nolabel"} <= set(fake.instances)
    finally:
        prov.stop()


def test_unfinished_operations_resume_after_restart(engine: Engine, fake: FakeProvider) -> None:
    fake.gate = threading.Event()
    first = Provisioner(engine, {"fake": fake}, LAUNCH)
    first.start(reconcile=False)
    op = first.provision("req-1", OFFER, "node-a")
    wait_until(lambda: fake.create_calls, message="create to start")
    # A new process (same store, same cloud) takes over while the first is stuck.
    fresh = FakeProvider()
    fresh.by_request, fresh.instances = fake.by_request, fake.instances
    second = Provisioner(engine, {"fake": fresh}, LAUNCH)
    second.start(reconcile=False)
    try:
        final = _done(second, op.operation_id)
        assert final.state is OperationState.DONE  # type: ignore[attr-defined]
        fake.gate.set()
        first.stop()
        # The cloud saw the same request id twice and created one instance.
        assert fresh.create_calls == ["req-1"]
        assert len(fresh.instances) == 1
    finally:
        fake.gate.set()
        second.stop()


class StoppableProvider(FakeProvider):
    """A fake whose instances can be stopped and started, like EC2 or GCE."""

    capabilities = Capabilities(stop_start=True)

    def __init__(self) -> None:
        super().__init__()
        self.stopped: set[str] = set()

    def stop(self, instance_id: str) -> None:
        self.stopped.add(instance_id)

    def start(self, instance_id: str) -> None:
        self.stopped.discard(instance_id)

    def list_instances(self) -> list[ProviderInstance]:
        return [
            ProviderInstance(i, n, InstanceStatus.STOPPED if i in self.stopped else InstanceStatus.RUNNING)
            for i, n in list(self.instances.items())
        ]


def test_stop_and_start_where_the_provider_can(engine: Engine) -> None:
    cloud = StoppableProvider()
    prov = Provisioner(engine, {"fake": cloud}, LAUNCH, reconcile_interval_s=3600)
    prov.start(reconcile=False)
    try:
        _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
        op = _done(prov, prov.stop_instance("stop-1", "node-a").operation_id)
        assert op.state == OperationState.DONE and cloud.stopped == {"i-1"}
        assert prov.stop_instance("stop-1", "node-a").operation_id == op.operation_id  # idempotent
        (inst,) = prov.list_instances()
        assert inst.state == InstanceState.STOPPED
        prov.reconcile_once()  # a stopped instance is not a vanished one
        assert prov.list_instances()[0].state == InstanceState.STOPPED
        _done(prov, prov.start_instance("start-1", "node-a").operation_id)
        assert cloud.stopped == set() and prov.list_instances()[0].state == InstanceState.RUNNING
    finally:
        prov.stop()


def test_stop_is_refused_where_the_provider_cannot(prov: Provisioner) -> None:
    _done(prov, prov.provision("req-1", OFFER, "node-a").operation_id)
    with pytest.raises(FailedPrecondition, match="cannot stop instances"):
        prov.stop_instance("stop-1", "node-a")


def test_every_instance_is_labelled_with_a_plane_id_kept_across_restarts(engine: Engine, fake: FakeProvider) -> None:
    first = Provisioner(engine, {"fake": fake}, LAUNCH)
    first.start(reconcile=False)
    plane = first.plane_id
    assert PLANE_ID.match(plane)
    _done(first, first.provision("req-1", OFFER, "node-a").operation_id)
    assert fake.labels["req-1"][PLANE_LABEL] == plane
    with pytest.raises(InvalidArgument, match=PLANE_LABEL):
        first.provision("req-2", OFFER, "node-b", labels={PLANE_LABEL: "plane-forged"})
    first.stop()
    again = Provisioner(engine, {"fake": fake}, LAUNCH)
    again.start(reconcile=False)
    assert again.plane_id == plane  # the same store, the same plane: its instances stay its own
    again.stop()
    named = Provisioner(engine, {"fake": fake}, LAUNCH, plane_id="team-a-prod")
    named.start(reconcile=False)
    assert named.plane_id == "team-a-prod"
    named.stop()
    with pytest.raises(InvalidArgument, match="plane_id"):
        Provisioner(engine, {"fake": fake}, LAUNCH, plane_id="Team A")
