"""Matching rules the optimizer and its explanations share: exact or at-least amounts, the
default architecture and general-purpose rule, host offers as slices, provider state."""

from __future__ import annotations

from collections.abc import Mapping

from styx.broker.model import offer_fits
from styx.common.offers import Offer
from styx.common.resources import DEFAULT_ARCH, DEFAULT_TASK_CPUS, Resources, normalize_arch

EPS = 1e-6
_EPS = EPS


def cpus_exact(res: Resources) -> bool:
    """Whether ``res.cpus`` is an exact vCPU count (the scheduler's 0.5 default means any size)."""
    return not res.cpus_at_least and res.cpus > DEFAULT_TASK_CPUS + _EPS


def wanted_arch(res: Resources) -> str:
    """The architecture catalog offers must have: the request's, else x86_64 unless it names
    an instance type ("": any, the named type's own)."""
    if res.arch:
        return normalize_arch(res.arch)
    return "" if res.instance_type else DEFAULT_ARCH


def general_only(res: Resources) -> bool:
    """Whether only general-purpose families may serve ``res`` (CPU-only, no type named)."""
    return not res.accelerators and not res.instance_type


def amount_ok(have: float, want: float, exact: bool) -> bool:
    """``have`` equals ``want`` (exact) or covers it, with float slack."""
    if exact:
        return abs(have - want) <= _EPS * max(1.0, want)
    return have + _EPS >= want


def host_offer_fits(offer: Offer, res: Resources) -> bool:
    """Whether one instance of a host offer (a slice of an existing machine) holds the request."""
    return (not res.instance_type or res.instance_type == offer.instance_type) and offer_fits(offer, res)


def provider_state(provider: str, enabled: Mapping[str, str] | None) -> str:
    """ "" when the provider is enabled, else why not (``enabled`` as in ``rank``)."""
    if enabled is None:
        return ""
    if provider not in enabled:
        return "no provider plugin loaded by the provisioner"
    return enabled[provider]
