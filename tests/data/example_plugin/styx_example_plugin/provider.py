"""The "example" provider: a pretend cloud whose instances are entries in a dictionary.

It shows every part of the kit a real plugin uses: ``ProviderBase`` (create arrives as one
``CreateRequest``), declared ``Capabilities``, ``TagRules`` + ``instance_tags`` for the
Styx tag set, ``ErrorCodes`` to classify the cloud's errors, ``ProviderConfig`` for
settings from the environment or a file, and ``CachedCheck`` for a cheap ``check()``.
"""

from __future__ import annotations

import itertools
import threading

from styx.provider import (
    PLANE_LABEL,
    TAG_MANAGED,
    TAG_NODE,
    TAG_REQUEST,
    CachedCheck,
    Capabilities,
    ConfigError,
    CreateRequest,
    ErrorCodes,
    InstanceStatus,
    ProviderBase,
    ProviderConfig,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    TagRules,
    TextRule,
    hookimpl,
    instance_tags,
)

NAME = "example"
# The pretend cloud allows tag keys and values of letters, digits, '-', '_', '.' and '/'.
TAGS = TagRules(key=TextRule(max_len=64, invalid=r"[^\w./-]"), value=TextRule(max_len=128, invalid=r"[^\w./-]"))
CODES = ErrorCodes(capacity=frozenset({"NoCapacity"}), quota=frozenset({"QuotaExceeded"}))

# The pretend cloud: instance id -> (tags, state). One per process, shared by every provider object.
CLOUD: dict[str, tuple[dict[str, str], str]] = {}
_CLOUD_LOCK = threading.Lock()
_IDS = itertools.count(1)


class CloudError(Exception):
    """What the pretend cloud's SDK raises."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class ExampleProvider(ProviderBase):
    """Creates pretend instances; thread-safe."""

    name = NAME
    capabilities = Capabilities(stop_start=True, multi_node=True)

    def __init__(self) -> None:
        super().__init__()
        self._check = CachedCheck(self._probe, ok_ttl_s=60.0, fail_ttl_s=10.0, clock=self.clock)

    def _settings(self) -> ProviderConfig:
        return ProviderConfig.load("STYX_EXAMPLE_")

    def _probe(self) -> ProviderStatus:
        try:
            self._settings().integer("STYX_EXAMPLE_MAX_INSTANCES", 10, positive=True)
        except ConfigError as exc:
            return ProviderStatus(False, exc.reason, exc.hint)
        return ProviderStatus(True)

    def check(self) -> ProviderStatus:
        """Enabled unless a setting is malformed (probed at most once a minute)."""
        return self._check()

    def create_instance(self, request: CreateRequest) -> str:
        """Create the instance, or return the one this request created before."""
        tags = instance_tags(request.node_id, request.request_id, request.labels, TAGS)
        limit = self._settings().integer("STYX_EXAMPLE_MAX_INSTANCES", 10, positive=True)
        try:
            return _cloud_create(tags, limit)
        except CloudError as exc:
            # The kit's table turns the cloud's code into the kind the broker fails over on.
            raise ProviderError(CODES.kind_of([exc.code]), f"create {request.node_id}: {exc.code}") from None

    def terminate(self, instance_id: str) -> None:
        """Mark the instance terminated; an unknown one is already gone."""
        with _CLOUD_LOCK:
            if instance_id in CLOUD:
                CLOUD[instance_id] = (CLOUD[instance_id][0], "terminated")

    def list_instances(self) -> list[ProviderInstance]:
        """Every live instance carrying the Styx tags."""
        status = {"running": InstanceStatus.RUNNING, "stopped": InstanceStatus.STOPPED}
        with _CLOUD_LOCK:
            return [
                ProviderInstance(instance_id, tags[TAG_NODE], status[state], tags.get(PLANE_LABEL, ""))
                for instance_id, (tags, state) in sorted(CLOUD.items())
                if state != "terminated" and tags.get(TAG_MANAGED) == "true"
            ]

    def stop(self, instance_id: str) -> None:
        """Stop a running instance (declared by ``Capabilities.stop_start``)."""
        self._power(instance_id, "stopped")

    def start(self, instance_id: str) -> None:
        """Start a stopped instance again."""
        self._power(instance_id, "running")

    def _power(self, instance_id: str, state: str) -> None:
        with _CLOUD_LOCK:
            if CLOUD.get(instance_id, ({}, "terminated"))[1] == "terminated":
                raise ProviderError(ProviderErrorKind.INVALID, f"instance {instance_id} does not exist")
            CLOUD[instance_id] = (CLOUD[instance_id][0], state)


def _cloud_create(tags: dict[str, str], limit: int) -> str:
    """The pretend cloud's create call: idempotent on the request-id tag, limited in number."""
    with _CLOUD_LOCK:
        for instance_id, (existing, state) in CLOUD.items():
            if existing[TAG_REQUEST] == tags[TAG_REQUEST] and state != "terminated":
                return instance_id
        if sum(state != "terminated" for _, state in CLOUD.values()) >= limit:
            raise CloudError("QuotaExceeded")
        instance_id = f"ex-{next(_IDS)}"
        CLOUD[instance_id] = (tags, "running")
        return instance_id


@hookimpl
def styx_provider() -> ExampleProvider:
    """Contribute the example provider."""
    return ExampleProvider()
