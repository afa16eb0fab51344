"""``sky check``, ``sky show-gpus`` and ``sky catalog import | list``.

Imported lazily by ``styx_cli.main`` (the command functions import grpc through
``styx_cli.services``). The ``*_rows`` / ``*_to_dict`` / ``*_lines`` helpers are pure and
unit-tested without sockets.

- ``sky check`` asks the provisioner which provider plugins it loaded (ListProviders).
- ``sky show-gpus`` asks the broker for the catalog's accelerators (ListAccelerators) and,
  for one accelerator, ranks its offers (Optimize, one call per count).
- ``sky catalog import`` parses SkyPilot v8 ``<provider>/vms.csv`` files here, with the
  broker's own loader (``styx.broker.catalog``), and sends one ImportCatalog per provider.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from styx_cli import output
from styx_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

# Formats `sky catalog import --format` reads.
IMPORT_FORMATS = ("skypilot",)
# Seconds one ImportCatalog may take: the broker validates, stores and re-indexes ~60k offers.
IMPORT_TIMEOUT_S = 180.0
# Most ranked offers asked per accelerator count in `sky show-gpus NAME` (the contract's cap).
SHOW_GPUS_LIMIT = 1000


# ---------------------------------------------------------------------- sky check


def provider_to_dict(info: Any) -> dict[str, Any]:
    """A styx.v1.ProviderInfo as plain data (what ``sky check --json`` prints)."""
    return {"name": info.name, "enabled": info.enabled, "reason": info.reason, "hint": info.hint}


def check_lines(providers: Sequence[dict[str, Any]], stream: TextIO) -> list[str]:
    """``sky check`` text: one line per provider, and for a disabled one why and the fix."""
    if not providers:
        return ["no provider plugin is loaded by the provisioner"]
    width = max(len(p["name"]) for p in providers)
    lines = []
    for p in providers:
        name = f"{p['name']:<{width}}"
        if p["enabled"]:
            # An enabled provider may still say something (e.g. which Kubernetes contexts answer).
            note = f": {p['reason']}" if p["reason"] else ""
            lines.append(f"  {name}  {output.paint('enabled', 'green', stream)}{note}")
            continue
        reason = p["reason"] or "no reason given"
        lines.append(f"  {name}  {output.paint('disabled', 'red', stream)}: {reason}")
        if p["hint"]:
            lines.append(f"  {'':<{width}}  {output.paint('fix:', 'yellow', stream)} {p['hint']}")
    enabled = [p["name"] for p in providers if p["enabled"]]
    lines.append(f"enabled: {', '.join(enabled) or 'none'}")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    """sky check: every provider plugin the provisioner loaded, enabled or not (and why)."""
    from styx.v1 import provisioner_pb2
    from styx_cli import services

    with services.provisioner() as client:
        reply = client.call("ListProviders", provisioner_pb2.ListProvidersRequest())
        endpoint = client.endpoint
    providers = [provider_to_dict(p) for p in reply.providers]
    wanted = [w.lower() for w in args.provider or ()]
    if wanted:
        known = {p["name"] for p in providers}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise CliError(
                f"{unknown[0]!r} is not a provider the provisioner loaded; loaded: {', '.join(sorted(known))}",
                EXIT_USAGE,
            )
        providers = [p for p in providers if p["name"] in wanted]
    if args.json:
        print(json.dumps(providers, indent=2))
        return EXIT_OK
    print(f"providers loaded by the provisioner at {endpoint}:")
    for line in check_lines(providers, sys.stdout):
        print(line)
    return EXIT_OK


# ---------------------------------------------------------------------- sky show-gpus


def _price(value: float) -> str:
    return f"${value:.2f}" if value > 0 else "-"


def _gib(value: float) -> str:
    # Catalogs give MiB-derived sizes (22.352 GiB for an A10G); whole GiB read better.
    return f"{max(1, round(value))}GB" if value > 0 else "-"


def accelerator_to_dict(info: Any, enabled: Iterable[str] | None = None) -> dict[str, Any]:
    """A styx.v1.AcceleratorInfo as plain data: counts, providers, cheapest price per provider.

    ``enabled``: the providers usable now (None: unknown); each provider entry then says
    whether it is enabled.
    """
    from styx.common.offers import offer_from_pb

    enabled_set = None if enabled is None else set(enabled)
    per_provider: dict[str, dict[str, Any]] = {}
    for acc in info.offers:
        offer = offer_from_pb(acc.cheapest)
        entry = per_provider.setdefault(
            offer.provider,
            {
                "provider": offer.provider,
                "enabled": None if enabled_set is None else offer.provider in enabled_set,
                "cheapest": None,
                "cheapest_spot": None,
            },
        )
        if entry["cheapest"] is None or offer.price_per_hour < entry["cheapest"]["price_per_hour"]:
            entry["cheapest"] = {
                "count": acc.count,
                "instance_type": offer.instance_type,
                "region": offer.region,
                "price_per_hour": offer.price_per_hour,
            }
        spot = acc.cheapest_spot_price_per_hour
        if spot > 0 and (entry["cheapest_spot"] is None or spot < entry["cheapest_spot"]["price_per_hour"]):
            entry["cheapest_spot"] = {"count": acc.count, "price_per_hour": spot}
    return {
        "name": info.name,
        "memory_gib": info.memory_gib,
        "counts": list(info.counts),
        "providers": list(info.providers),
        "by_provider": [per_provider[p] for p in sorted(per_provider)],
    }


def accelerator_rows(accels: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``sky show-gpus``: GPU, DEVICE MEM, QTY, then one provider per row with its
    cheapest on-demand and spot prices (``$3.67 (1x a2-highgpu-1g)``)."""
    rows = []
    for acc in accels:
        first = True
        for entry in acc["by_provider"] or [None]:
            head = [acc["name"], _gib(acc["memory_gib"]), ", ".join(map(str, acc["counts"]))] if first else ["", "", ""]
            first = False
            if entry is None:
                rows.append([*head, "-", "-", "-"])
                continue
            provider = entry["provider"] + (" (disabled)" if entry["enabled"] is False else "")
            cheap = entry["cheapest"]
            ondemand = "-"
            if cheap:
                ondemand = f"{_price(cheap['price_per_hour'])} ({cheap['count']}x {cheap['instance_type']})"
            spot = entry["cheapest_spot"]
            spot_text = f"{_price(spot['price_per_hour'])} ({spot['count']}x)" if spot else "-"
            rows.append([*head, provider, ondemand, spot_text])
    return rows


ACCELERATOR_COLUMNS = ("GPU", "DEVICE MEM", "QTY", "PROVIDER", "CHEAPEST $/h", "CHEAPEST SPOT $/h")
OFFER_COLUMNS = (
    "GPU",
    "QTY",
    "PROVIDER",
    "INSTANCE TYPE",
    "vCPUs",
    "HOST MEM",
    "DEVICE MEM",
    "$/h",
    "SPOT $/h",
    "REGION",
)


def ranked_to_dict(ranked: Any) -> dict[str, Any]:
    """A styx.v1.RankedOffer as plain data (``sky show-gpus NAME --json``)."""
    offer = ranked.offer
    return {
        "accelerator_name": offer.accelerator_name,
        "accelerator_count": offer.accelerator_count,
        "provider": offer.provider,
        "provider_enabled": ranked.provider_enabled,
        "instance_type": offer.instance_type,
        "cpus": offer.cpus,
        "memory_gib": offer.memory_gib,
        "accelerator_memory_gib": offer.accelerator_memory_gib,
        "price_per_hour": offer.price_per_hour,
        "spot_price_per_hour": offer.spot_price_per_hour,
        "region": offer.region,
        "zone": offer.zone,
    }


def cheapest_per_type(offers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One offer per (provider, instance type, count): its cheapest region; cheapest first.

    Zones and regions multiply a type's offers by tens; the cheapest place is what a user
    compares, as in SkyPilot's show-gpus. Ties keep the first seen (the broker's order).
    """
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for offer in offers:
        key = (offer["provider"], offer["instance_type"], offer["accelerator_count"])
        if key not in best or offer["price_per_hour"] < best[key]["price_per_hour"]:
            best[key] = offer
    return sorted(best.values(), key=lambda o: (o["price_per_hour"], o["provider"], o["instance_type"]))


def offer_rows(offers: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``sky show-gpus NAME``."""
    rows = []
    for o in offers:
        provider = o["provider"] + ("" if o.get("provider_enabled", True) else " (disabled)")
        rows.append(
            [
                o["accelerator_name"],
                str(o["accelerator_count"]),
                provider,
                o["instance_type"],
                f"{o['cpus']:g}",
                f"{o['memory_gib']:g}GB",
                _gib(o["accelerator_memory_gib"]),
                _price(o["price_per_hour"]),
                _price(o["spot_price_per_hour"]),
                o["region"],
            ]
        )
    return rows


def parse_gpu_name(text: str) -> tuple[str, int]:
    """``A100`` -> ("A100", 0: every count); ``A100:8`` -> ("A100", 8). Usage error otherwise."""
    from styx.common.errors import InvalidArgument
    from styx.common.resources import parse_accelerator

    try:
        accel = parse_accelerator(text, "NAME")
    except InvalidArgument as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    return accel.name, accel.count if ":" in text else 0


def _infra(text: str | None) -> tuple[str, str]:
    """--infra P[/R] -> (provider, region); usage error for anything else."""
    from styx.common.errors import InvalidArgument
    from styx.common.resources import infra_parts

    if not text:
        return "", ""
    try:
        provider, region, zone = infra_parts(text)
    except InvalidArgument as exc:
        raise CliError(f"--infra: {exc.message.removeprefix('infra: ')}", EXIT_USAGE) from None
    if zone:
        raise CliError(f"--infra: {text!r}: show-gpus takes PROVIDER[/REGION], e.g. gcp/us-central1", EXIT_USAGE)
    return provider, region


def cmd_show_gpus(args: argparse.Namespace) -> int:
    """sky show-gpus [NAME[:COUNT]] [--infra P[/R]] [--all]: accelerators and their prices."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    provider, region = _infra(args.infra)
    name, count = parse_gpu_name(args.name) if args.name else ("", 0)
    with services.broker() as client:
        reply = client.call(
            "ListAccelerators", broker_pb2.ListAcceleratorsRequest(name=name, include_disabled=args.all)
        )
        accels = list(reply.accelerators)
        enabled = None
        if args.all:
            # Which providers are usable now: those ListAccelerators keeps without include_disabled.
            live = client.call("ListAccelerators", broker_pb2.ListAcceleratorsRequest(name=name))
            enabled = {p for a in live.accelerators for p in a.providers}
        if name:
            exact = [a for a in accels if a.name.upper() == name.upper()]
            if not exact:
                _no_such_gpu(name, accels, args.all)
                return EXIT_FAILED
            return _show_one(client, exact[0], count, provider, region, args)
        if region:
            data = _cheapest_in_region(client, accels, provider, region, args.all, enabled)
        else:
            data = [accelerator_to_dict(a, enabled) for a in accels]
            if provider:
                for item in data:
                    item["by_provider"] = [e for e in item["by_provider"] if e["provider"] == provider]
                data = [d for d in data if d["by_provider"]]
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    if not data:
        where = f" in {args.infra}" if args.infra else ""
        more = "" if args.all else "; --all also shows providers that are disabled (sky check says why)"
        output.info(f"no accelerator offered{where} by an enabled provider{more}")
        return EXIT_OK
    output.print_table(ACCELERATOR_COLUMNS, accelerator_rows(data))
    for line in _provider_notes({e["provider"] for item in data for e in item["by_provider"]}):
        output.info(line)
    if not args.all:
        output.info("enabled providers only; --all also shows disabled ones (sky check says why)")
    return EXIT_OK


def _provider_notes(names: set[str]) -> list[str]:
    """What the shown providers' checks say now (e.g. a cluster's free GPUs); [] when the
    provisioner cannot be asked: the table stands on its own."""
    from styx.v1 import provisioner_pb2
    from styx_cli import services

    try:
        with services.provisioner() as client:
            reply = client.call("ListProviders", provisioner_pb2.ListProvidersRequest())
    except Exception:
        return []
    return [f"{p.name}: {p.reason}" for p in reply.providers if p.name in names and p.enabled and p.reason]


def _no_such_gpu(name: str, accels: Sequence[Any], include_disabled: bool) -> None:
    """Say that ``name`` is not in the catalog, with the names that contain it."""
    similar = ", ".join(a.name for a in accels[:12])
    scope = "" if include_disabled else " of enabled providers (--all: every provider)"
    hint = f"; did you mean: {similar}" if similar else "; sky show-gpus --all lists them"
    output.error(f"no accelerator named {name!r} in the catalog{scope}{hint}")


def _show_one(client: Any, info: Any, count: int, provider: str, region: str, args: argparse.Namespace) -> int:
    """Offers of one accelerator (every count, or ``count``), cheapest region per type."""
    from styx.v1 import broker_pb2, common_pb2

    counts = [count] if count else list(info.counts)
    infra = "/".join(p for p in (provider, region) if p)
    ranked: list[dict[str, Any]] = []
    for n in counts:
        request = broker_pb2.OptimizeRequest(
            resources=common_pb2.ResourceRequest(
                accelerators=[common_pb2.AcceleratorRequest(name=info.name, count=n)], infra=infra
            ),
            limit=SHOW_GPUS_LIMIT,
            include_disabled=args.all,
        )
        ranked += [ranked_to_dict(r) for r in client.call("Optimize", request).offers]
    offers = cheapest_per_type(ranked)
    if args.json:
        print(json.dumps(offers, indent=2))
        return EXIT_OK
    if not offers:
        where = f" in {infra}" if infra else ""
        want = f"{info.name}:{count}" if count else info.name
        output.error(f"no offer of {want}{where}; counts offered: {', '.join(map(str, info.counts))}")
        return EXIT_FAILED
    output.print_table(OFFER_COLUMNS, offer_rows(offers))
    output.info("cheapest region per instance type; --infra PROVIDER/REGION narrows the search")
    return EXIT_OK


def _cheapest_in_region(
    client: Any,
    accels: Sequence[Any],
    provider: str,
    region: str,
    include_disabled: bool,
    enabled: set[str] | None,
) -> list[dict[str, Any]]:
    """show-gpus --infra P/R without NAME: the cheapest offer per accelerator and count in
    that region (ListAccelerators has no region filter, so Optimize answers per count)."""
    from styx.v1 import broker_pb2, common_pb2

    out = []
    for info in accels:
        if provider not in info.providers:
            continue
        entry: dict[str, Any] = {
            "provider": provider,
            "enabled": None if enabled is None else provider in enabled,
            "cheapest": None,
            "cheapest_spot": None,
        }
        counts = []
        for n in info.counts:
            for spot in (False, True):
                request = broker_pb2.OptimizeRequest(
                    resources=common_pb2.ResourceRequest(
                        accelerators=[common_pb2.AcceleratorRequest(name=info.name, count=n)],
                        infra=f"{provider}/{region}",
                        use_spot=spot,
                    ),
                    limit=1,
                    include_disabled=include_disabled,
                )
                answer = client.call("Optimize", request)
                if not answer.offers:
                    continue
                best = answer.offers[0]
                if n not in counts:
                    counts.append(n)
                key = "cheapest_spot" if spot else "cheapest"
                if entry[key] is None or best.hourly_price < entry[key]["price_per_hour"]:
                    entry[key] = {
                        "count": n,
                        "instance_type": best.offer.instance_type,
                        "region": best.offer.region,
                        "price_per_hour": best.hourly_price,
                    }
        if entry["cheapest"] or entry["cheapest_spot"]:
            out.append(
                {
                    "name": info.name,
                    "memory_gib": info.memory_gib,
                    "counts": counts,
                    "providers": [provider],
                    "by_provider": [entry],
                }
            )
    return out


# ---------------------------------------------------------------------- sky catalog


def catalog_to_dict(info: Any) -> dict[str, Any]:
    """A styx.v1.CatalogInfo as plain data (``sky catalog list --json``)."""
    imported_at = None
    if info.HasField("imported_at"):
        seconds = info.imported_at.seconds + info.imported_at.nanos / 1e9
        imported_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return {
        "provider": info.provider,
        "offers": info.offers,
        "regions": info.regions,
        "source": "imported" if info.imported else "built-in",
        "imported_at": imported_at,
    }


def catalog_rows(catalogs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``sky catalog list``: PROVIDER, OFFERS, REGIONS, SOURCE, IMPORTED AT."""
    return [
        [c["provider"], f"{c['offers']:,}", str(c["regions"]), c["source"], c["imported_at"] or "-"] for c in catalogs
    ]


def load_skypilot(directory: str, providers: Sequence[str] = ()) -> tuple[dict[str, list[Any]], Any, float]:
    """Parse ``DIR/<provider>/vms.csv`` with the shared loader (styx.common.skypilot_csv):
    (offers per provider, stats, seconds). Usage errors (exit 2) for a missing directory or
    one without catalogs."""
    from styx.common.errors import InvalidArgument
    from styx.common.skypilot_csv import load_skypilot_dir

    path = Path(directory).expanduser()
    if not path.is_dir():
        raise CliError(f"{directory}: no such directory (expected DIR/<provider>/vms.csv)", EXIT_USAGE)
    started = time.perf_counter()
    try:
        offers, stats = load_skypilot_dir(path, providers)
    except InvalidArgument as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"{directory}: cannot read the catalog: {exc}", EXIT_USAGE) from None
    return offers, stats, time.perf_counter() - started


def import_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of the ``sky catalog import`` report: PROVIDER, OFFERS, SKIPPED ROWS, SEND+INDEX."""
    return [
        [
            r["provider"],
            f"{r['offers']:,}",
            f"{sum(r['skipped'].values()):,}",
            f"{r['import_s']:.2f}s" if r["import_s"] is not None else "not sent",
        ]
        for r in results
    ]


def cmd_catalog(args: argparse.Namespace) -> int:
    """sky catalog import | list."""
    if args.action == "list":
        return _catalog_list(args)
    if args.action == "import":
        return _catalog_import(args)
    if args.action == "refresh":
        return _catalog_refresh(args)
    raise CliError(
        "sky catalog: give an action: import (sky catalog import --format skypilot DIR), refresh PROVIDER, or list",
        EXIT_USAGE,
    )


def _catalog_refresh(args: argparse.Namespace) -> int:
    """sky catalog refresh PROVIDER...: read each provider's catalog from its cloud, import it."""
    from styx.v1 import broker_pb2, provisioner_pb2
    from styx_cli import services
    from styx_cli.client import request_id

    rows = []
    for provider in args.providers:
        started = time.perf_counter()
        with services.provisioner() as prov:
            reply = prov.call(
                "GetProviderCatalog",
                provisioner_pb2.GetProviderCatalogRequest(provider=provider, regions=args.region or []),
                timeout=IMPORT_TIMEOUT_S,
            )
        if not reply.offers:
            raise CliError(f"{provider}: its cloud listed no priced offer; the catalog is left unchanged")
        with services.broker() as broker:
            request = broker_pb2.ImportCatalogRequest(request_id=request_id(), offers=list(reply.offers))
            count = broker.call("ImportCatalog", request, timeout=IMPORT_TIMEOUT_S).count
        regions = len({o.region for o in reply.offers})
        rows.append([provider, f"{count:,}", str(regions), f"{time.perf_counter() - started:.2f}s"])
    output.print_table(("PROVIDER", "OFFERS", "REGIONS", "TIME"), rows)
    return EXIT_OK


def _catalog_list(args: argparse.Namespace) -> int:
    from styx.v1 import broker_pb2
    from styx_cli import services

    with services.broker() as client:
        reply = client.call("ListCatalogs", broker_pb2.ListCatalogsRequest())
    catalogs = [catalog_to_dict(c) for c in reply.catalogs]
    if args.json:
        print(json.dumps(catalogs, indent=2))
        return EXIT_OK
    if not catalogs:
        output.info("the catalog is empty; import one with: sky catalog import --format skypilot DIR")
        return EXIT_OK
    output.print_table(("PROVIDER", "OFFERS", "REGIONS", "SOURCE", "IMPORTED AT"), catalog_rows(catalogs))
    return EXIT_OK


def _catalog_import(args: argparse.Namespace) -> int:
    from styx.common.offers import offer_to_pb
    from styx.v1 import broker_pb2
    from styx_cli import services
    from styx_cli.client import request_id

    fmt = (args.format or "").lower()
    if fmt not in IMPORT_FORMATS:
        raise CliError(
            f"--format: {args.format!r} is not a known catalog format; use {', '.join(IMPORT_FORMATS)}", EXIT_USAGE
        )
    # Parse before connecting: a bad directory is a usage error, fast, and starts no plane.
    offers, stats, parse_s = load_skypilot(args.directory, args.provider or ())
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with services.broker() as client:
        for provider, items in offers.items():
            skipped = {k.split(": ", 1)[1]: v for k, v in stats.skipped.items() if k.startswith(f"{provider}: ")}
            result: dict[str, Any] = {"provider": provider, "offers": len(items), "skipped": skipped, "import_s": None}
            results.append(result)
            if not items:
                output.info(f"{provider}: no offer in its vms.csv; its catalog is left unchanged")
                continue
            t0 = time.perf_counter()
            request = broker_pb2.ImportCatalogRequest(request_id=request_id(), offers=[offer_to_pb(o) for o in items])
            reply = client.call("ImportCatalog", request, timeout=IMPORT_TIMEOUT_S)
            result["offers"] = reply.count
            result["import_s"] = time.perf_counter() - t0
    total_s = time.perf_counter() - started + parse_s
    if args.json:
        print(json.dumps({"providers": results, "parse_s": parse_s, "total_s": total_s}, indent=2))
        return EXIT_OK
    output.print_table(("PROVIDER", "OFFERS", "SKIPPED ROWS", "SEND+INDEX"), import_rows(results))
    imported = sum(r["offers"] for r in results if r["import_s"] is not None)
    print(
        f"imported {imported:,} offers of {len(results)} provider(s) from {args.directory} in {total_s:.2f}s "
        f"(parsing {parse_s:.2f}s)"
    )
    for why, n in sorted(stats.skipped.items()):
        output.info(f"  skipped {n:,} row(s): {why}")
    return EXIT_OK
