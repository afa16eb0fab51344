"""Providers as the provisioner sees them: their status, their offers, and the checks that
a request names an enabled provider and one of its offers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from styx.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from styx.provider import (
    CatalogSource,
    Offer,
    Provider,
    ProviderErrorKind,
    ProviderStatus,
    capabilities_of,
)
from styx.provisioner.model import (
    ProviderInfo,
    describe_failure,
)
from styx.provisioner.records import Records

log = logging.getLogger(__name__)


class ProviderAccess(Records):
    """The providers part of ``Provisioner``."""

    def refresh_status(self) -> None:
        """Ask every provider whether it is usable; a check that raises means disabled."""
        for name, provider in self._providers.items():
            try:
                status = provider.check()
            except Exception as exc:
                log.warning("provider %s check() raised", name, exc_info=exc)
                status = ProviderStatus(False, f"check() raised {type(exc).__name__}", "see the provisioner log")
            self._status[name] = status

    def list_providers(self) -> list[ProviderInfo]:
        """Every loaded provider with its status, sorted by name."""
        out = []
        for name in sorted(self._providers):
            status = self._status.get(name) or ProviderStatus(False, "not checked yet")
            caps = tuple(capabilities_of(self._providers[name]).names())
            out.append(ProviderInfo(name, status.enabled, status.reason, status.hint, caps))
        return out

    def list_offers(self, provider: str = "") -> list[Offer]:
        """Offers of one provider (``provider``) or of every enabled provider."""
        if provider:
            self._enabled_provider(provider, "provider")
            names = [provider]
        else:
            names = [n for n in sorted(self._providers) if self._status.get(n, ProviderStatus(False)).enabled]
        offers: list[Offer] = []
        for name in names:
            try:
                offers.extend(o for o in self._providers[name].offers() if o.provider == name)
            except Exception as exc:
                # One broken provider must not hide the others' offers from the broker.
                log.warning("provider %s offers() raised", name, exc_info=exc)
        return sorted(offers, key=lambda o: o.key)

    def provider_catalog(self, name: str, regions: Sequence[str] = ()) -> list[Offer]:
        """A provider's catalog from its cloud's own APIs (providers declaring ``catalog``)."""
        provider = self._enabled_provider(name, "provider")
        if not capabilities_of(provider).catalog:
            raise FailedPrecondition(
                f"provider {name!r} cannot list its catalog from the cloud; use `sky catalog import` instead"
            )
        source = cast(CatalogSource, provider)  # the loader checked the declared operation exists
        try:
            offers = source.catalog(list(regions) or None)
        except Exception as exc:
            kind, message = describe_failure(name, exc)
            if kind in (ProviderErrorKind.AUTH, ProviderErrorKind.INVALID):
                raise FailedPrecondition(f"provider {name!r}: {message}") from exc
            raise Unavailable(f"provider {name!r}: {message}") from exc
        return sorted(offers, key=lambda o: o.key)

    def _enabled_provider(self, name: str, field_name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise InvalidArgument(f"{field_name}: unknown provider {name!r}; loaded providers: {known}")
        status = self._status.get(name) or ProviderStatus(False, "not checked yet")
        if not status.enabled:
            hint = f" ({status.hint})" if status.hint else ""
            raise FailedPrecondition(f"provider {name!r} is disabled: {status.reason}{hint}")
        return provider

    def _resolve_offer(self, provider: Provider, wanted: Offer) -> Offer:
        listed = provider.offers()
        if not listed:
            # Cloud providers list no offers here: their catalog lives in the broker, and the
            # cloud itself refuses an instance type it does not have (an INVALID error).
            return wanted
        candidates = [o for o in listed if o.instance_type == wanted.instance_type]
        if wanted.region:
            candidates = [o for o in candidates if o.region == wanted.region]
        if wanted.zone:
            candidates = [o for o in candidates if o.zone == wanted.zone]
        if not candidates:
            place = "/".join(p for p in (wanted.provider, wanted.region, wanted.zone) if p)
            raise InvalidArgument(
                f"offer: provider {wanted.provider!r} has no instance type {wanted.instance_type!r} in "
                f"{place}; pick one from ListOffers"
            )
        # The provider's own offer is authoritative (price, size, limits), not the caller's copy.
        return candidates[0]
