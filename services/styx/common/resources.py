"""Resource requests and capacity: parsing user input ("4+", "A100:8") and fitting.

Plain dataclasses used by the CLI, the scheduler and the broker; protobuf conversion
lives at the edges (``convert`` modules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from styx.common.errors import InvalidArgument

# Reserved when a task asks for no CPUs; half a CPU, as SkyPilot reserves for jobs.
DEFAULT_TASK_CPUS = 0.5
# CPU architectures a request may name, and the one new catalog instances get by default
# (x86 binaries do not run on ARM, so ARM is opt-in, as in SkyPilot).
ARCHES = ("x86_64", "arm64")
DEFAULT_ARCH = "x86_64"
# What users, clouds and ``platform.machine()`` call the two architectures.
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(\+?)\s*$")
_ACCEL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(?::\s*(\d+))?\s*$")


@dataclass(frozen=True)
class Accelerator:
    """One accelerator alternative: a name and a count."""

    name: str
    count: int


@dataclass(frozen=True)
class Resources:
    """What a task needs; ``*_at_least`` mark "N+" lower bounds."""

    cpus: float = DEFAULT_TASK_CPUS
    cpus_at_least: bool = False
    memory_gib: float = 0.0
    memory_at_least: bool = False
    accelerators: tuple[Accelerator, ...] = ()
    use_spot: bool = False
    infra: str = ""
    disk_gb: float = 0.0
    # Highest acceptable total price (hourly price x nodes) in USD per hour; 0: no cap.
    max_hourly_cost: float = 0.0
    # Pin an instance type of the catalog, e.g. "p4d.24xlarge"; empty: any.
    instance_type: str = ""
    # Alternatives of whole resource sets: the cheapest feasible one (any_of), or the
    # first with any feasible offer (ordered). At most one of the two is set.
    any_of: tuple[Resources, ...] = ()
    ordered: tuple[Resources, ...] = ()
    # Run only on this named cluster's nodes; "" means the shared pool.
    cluster: str = ""
    # CPU architecture (ARCHES); "": x86_64 for new catalog instances unless instance_type
    # names one, any architecture for machines that already exist.
    arch: str = ""
    # The container image new nodes run ("docker:IMAGE"); "": the provider's default.
    image_id: str = ""

    def __post_init__(self) -> None:
        # Stores rebuild Resources from JSON (asdict output): turn nested dicts and lists
        # back into Resources / Accelerator tuples so callers need no special decoding.
        if not isinstance(self.accelerators, tuple) or any(isinstance(a, dict) for a in self.accelerators):
            accels = tuple(Accelerator(**a) if isinstance(a, dict) else a for a in self.accelerators)
            object.__setattr__(self, "accelerators", accels)
        for name in ("any_of", "ordered"):
            alts = getattr(self, name)
            if not isinstance(alts, tuple) or any(isinstance(a, dict) for a in alts):
                object.__setattr__(self, name, tuple(Resources(**a) if isinstance(a, dict) else a for a in alts))


@dataclass(frozen=True)
class GpuDevice:
    """One GPU on a node."""

    index: int
    name: str
    memory_gib: float = 0.0


@dataclass
class Capacity:
    """CPUs, memory and GPUs of a node (total or free)."""

    cpus: float
    memory_gib: float
    gpus: list[GpuDevice] = field(default_factory=list)


def parse_amount(text: str, field_name: str) -> tuple[float, bool]:
    """Parse "4", "4+" or "0.5" into (amount, at_least). Raises InvalidArgument naming the field."""
    match = _AMOUNT.match(str(text))
    if not match and _AMOUNT.match(str(text).strip().removeprefix("-")):
        raise InvalidArgument(f"{field_name}: must be a positive number (N or N+), got {text!r}")
    if not match:
        raise InvalidArgument(f"{field_name}: {text!r} is not a number; use N or N+ (at least N), e.g. 4 or 4+")
    value = float(match.group(1))
    if value <= 0:
        raise InvalidArgument(f"{field_name}: must be greater than 0, got {text!r}")
    return value, bool(match.group(2))


def parse_accelerator(text: str, field_name: str) -> Accelerator:
    """Parse "A100:8" or "T4" (count 1) into an Accelerator."""
    match = _ACCEL.match(str(text))
    if not match:
        raise InvalidArgument(f"{field_name}: {text!r} is not NAME[:COUNT], e.g. A100:8 or T4")
    count = int(match.group(2) or 1)
    if count < 1:
        raise InvalidArgument(f"{field_name}: count must be at least 1, got {text!r}")
    return Accelerator(match.group(1), count)


def parse_arch(text: str, field_name: str) -> str:
    """A requested architecture: "x86_64" or "arm64" ("aarch64" is an alias); "" stays unset."""
    value = str(text or "").strip().lower()
    if not value:
        return ""
    if value not in ("x86_64", "arm64", "aarch64"):
        raise InvalidArgument(f"{field_name}: {text!r} is not an architecture; use x86_64 or arm64 (alias aarch64)")
    return _ARCH_ALIASES[value]


#: The only image kind a task names today: a container image a node runs as.
IMAGE_PREFIX = "docker:"
#: Label (node, and instance request) carrying the image_id a node was started with.
IMAGE_LABEL = "styx.dev/image"


def parse_image_id(text: str, field_name: str) -> str:
    """A task's ``image_id``: "docker:IMAGE" with a reference a registry could hold; "" stays unset."""
    value = str(text or "").strip()
    if not value:
        return ""
    ref = value.removeprefix(IMAGE_PREFIX)
    if not value.startswith(IMAGE_PREFIX) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,500}", ref):
        raise InvalidArgument(
            f"{field_name}: {text!r} is not docker:IMAGE, e.g. docker:ghcr.io/acme/train:1.2 "
            "(the image must hold the Styx agent; only kubernetes nodes run one)"
        )
    return value


def normalize_arch(text: str) -> str:
    """An offer's architecture in the request's spelling ("aarch64" -> "arm64"); unknown names
    are kept (lower-case) so they match nothing a request can ask for, and "" stays ""."""
    value = str(text or "").strip().lower()
    return _ARCH_ALIASES.get(value, value)


def gpu_matches(device_name: str, wanted: str) -> bool:
    """True when a detected device name ("NVIDIA A100-SXM4-80GB") is the wanted kind ("A100").

    Matching is by case-insensitive token so "A10" does not match "A100".
    """
    tokens = re.split(r"[\s\-_/]+", device_name.upper())
    return wanted.upper() in tokens or device_name.upper() == wanted.upper()


#: Short names offers use; a label value containing one of these tokens maps to it.
KNOWN_GPUS = (
    "GB200",
    "B200",
    "H200",
    "H100",
    "GH200",
    "A100",
    "A10G",
    "A10",
    "A40",
    "L40S",
    "L40",
    "L4",
    "T4",
    "V100",
    "P100",
    "P4",
    "K80",
    "MI300X",
    "MI250X",
    "MI210",
    "RTX6000",
    "A6000",
    "A5000",
)


def gpu_model(value: str) -> str:
    """A short GPU name from a label value: "NVIDIA-A100-SXM4-80GB" and "nvidia-tesla-a100"
    give "A100"; a value with no known token is kept, cleaned ("MyGPU-X" -> "MyGPU-X")."""
    tokens = re.split(r"[\s\-_/]+", value.upper())
    for name in KNOWN_GPUS:
        if name in tokens:
            return name
    return re.sub(r"[^A-Za-z0-9.]", "", value) or "GPU"


#: Short provider names accepted in ``infra`` (SkyPilot's spelling): ``k8s/CONTEXT``.
PROVIDER_ALIASES = {"k8s": "kubernetes"}


def infra_parts(infra: str) -> tuple[str, str, str]:
    """Split "provider/region/zone" into three strings ("" where absent)."""
    parts = [p.strip() for p in infra.strip().strip("/").split("/")] if infra.strip() else []
    if len(parts) > 3 or any(not p for p in parts):
        raise InvalidArgument(f"infra: {infra!r} is not provider[/region[/zone]], e.g. aws/us-east-1")
    parts += [""] * (3 - len(parts))
    provider = parts[0].lower()
    return PROVIDER_ALIASES.get(provider, provider), parts[1], parts[2]


# ---- protobuf edges (one place for both directions; used by CLI, scheduler, broker) ----
def resources_from_pb(msg: Any) -> Resources:
    """ResourceRequest -> Resources (no defaults applied: the scheduler applied them)."""
    return Resources(
        cpus=msg.cpus,
        cpus_at_least=msg.cpus_at_least,
        memory_gib=msg.memory_gib,
        memory_at_least=msg.memory_at_least,
        accelerators=tuple(Accelerator(a.name, a.count) for a in msg.accelerators),
        use_spot=msg.use_spot,
        infra=msg.infra,
        disk_gb=msg.disk_gb,
        max_hourly_cost=msg.max_hourly_cost,
        instance_type=msg.instance_type,
        any_of=tuple(resources_from_pb(a) for a in msg.any_of),
        ordered=tuple(resources_from_pb(a) for a in msg.ordered),
        cluster=msg.cluster,
        arch=normalize_arch(msg.arch),
        image_id=msg.image_id,
    )


def resources_to_pb(res: Resources) -> Any:
    """Resources -> ResourceRequest (protobuf imported here, so this module stays light)."""
    from styx.v1 import common_pb2

    return common_pb2.ResourceRequest(
        cpus=res.cpus,
        cpus_at_least=res.cpus_at_least,
        memory_gib=res.memory_gib,
        memory_at_least=res.memory_at_least,
        accelerators=[common_pb2.AcceleratorRequest(name=a.name, count=a.count) for a in res.accelerators],
        use_spot=res.use_spot,
        infra=res.infra,
        disk_gb=res.disk_gb,
        max_hourly_cost=res.max_hourly_cost,
        instance_type=res.instance_type,
        any_of=[resources_to_pb(a) for a in res.any_of],
        ordered=[resources_to_pb(a) for a in res.ordered],
        cluster=res.cluster,
        arch=res.arch,
        image_id=res.image_id,
    )
