"""Provisioning through an outbox: intents, attempts, failover and terminations.

Asking for a node is two steps. Under the broker's lock, ``start`` commits an *intent*
(a ``broker_provisions`` row in state ``intent``: the node id, which is also the
idempotency key, the offer and the ask). Only then, with no lock held, ``drain`` sends it
to the provisioner, which passes the key on to the cloud (EC2 ClientToken, GCE requestId,
a deterministic Azure name), and records the operation id (state ``pending``). A broker
killed anywhere in between finds the intent at start and sends it again with the same key:
the provisioner answers with the operation it already has, so a node is created once.

Failover: a failed attempt cools down a scope for ``cooldown_s`` according to the
provider's error class (capacity: that offer in that zone; quota: the provider's region;
auth: the provider), and the next round provisions the next ranked offer outside every
cooling scope, so the walk goes zone -> region -> provider. Every attempt stays a row
(``list_attempts``).

Terminations go through the same outbox (``broker_outbox``): recorded with the state
change that asks for them, sent by ``drain``, deleted once the provisioner accepted them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from styx.broker import tables as t
from styx.broker.launch_order import FleetView, OfferKey
from styx.broker.model import (
    ABSENT,
    GONE,
    READY,
    ProvisionerPort,
    _kind_of,
    _offer_key,
    _Provision,
    _scope_key,
    _spot_key,
)
from styx.broker.nodes import NodeRegistry
from styx.broker.offers import OfferBook
from styx.broker.optimizer import Ranked, Ranking, alternatives
from styx.broker.placement import node_could_fit
from styx.common.clock import Clock
from styx.common.errors import StyxError, Unavailable
from styx.common.faults import crash_point
from styx.common.ids import new_id
from styx.common.offers import Offer
from styx.common.placement import Ask
from styx.common.resources import IMAGE_LABEL, Resources

log = logging.getLogger(__name__)

INTENT, PENDING, REGISTERED, FAILED = "intent", "pending", "registered", "failed"
# A cooling scope and (until when, why).
Cooldown = tuple[tuple[str, ...], tuple[float, str]]


class Provisioning:
    """Provisions in flight (intents and pending operations), cooldowns, and the outbox drain.

    ``start``/``ranked_start``/``fail``/``instance_lost`` run under the broker's lock;
    ``drain`` and ``poll`` take it only around their bookkeeping, never across a call.
    """

    def __init__(
        self,
        engine: Engine,
        provisioner: ProvisionerPort | None,
        nodes: NodeRegistry,
        book: OfferBook,
        lock: AbstractContextManager[Any],
        clock: Clock,
        cooldown_s: float = 60.0,
        timeout_s: float = 300.0,
    ) -> None:
        self._engine = engine
        self._provisioner = provisioner
        self._nodes = nodes
        self._book = book
        self._lock = lock
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._timeout_s = timeout_s
        self.pending: dict[str, _Provision] = {}
        self._cooling: dict[tuple[str, ...], tuple[float, str]] = {}
        self._sending: set[str] = set()
        self.load()

    def load(self) -> None:
        """(Re)read provisions in flight and the cooldowns of recent failures from the store."""
        stamp = self._clock.now()
        c = t.provisions.c
        pending: dict[str, _Provision] = {}
        cooling: dict[tuple[str, ...], tuple[float, str]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(select(t.provisions).where(c.state.in_([INTENT, PENDING]))):
                if row.node_id in self._nodes.nodes:
                    continue  # registered; the crash came before its row said so
                offer = Offer(**json.loads(row.offer_json))
                pending[row.node_id] = _Provision(
                    row.node_id, row.operation_id, offer, row.spot, row.created_at, row.allocation_id, row.image_id
                )
            recent = select(c.offer_json, c.error, c.error_kind, c.updated_at, c.spot, c.state).where(
                c.state.in_([FAILED, "lost"]), c.updated_at > stamp - self._cooldown_s
            )
            for row in conn.execute(recent.order_by(c.updated_at)):
                offer = Offer(**json.loads(row.offer_json))
                if row.state == FAILED:
                    cooling[_scope_key(offer, row.error_kind)] = (row.updated_at + self._cooldown_s, row.error)
                elif row.spot:
                    cooling[_spot_key(offer)] = (row.updated_at + self._cooldown_s, row.error)
        self.pending.clear()
        self.pending.update(pending)
        self._cooling.clear()
        self._cooling.update(cooling)

    @property
    def enabled(self) -> bool:
        """Whether there is a provisioner to ask."""
        return self._provisioner is not None

    # ---- intents (under the broker's lock) ----------------------------------------------------
    def start(
        self,
        ask: Ask,
        offer: Offer,
        spot: bool,
        hourly_price: float,
        conn: Connection | None = None,
        image_id: str = "",
    ) -> _Provision:
        """Commit an intent for a node of ``offer`` (``drain`` sends it); returns it.

        With ``conn`` the intent is written in the caller's transaction (a cluster records
        its new node in the same one), and the caller applies it with ``started`` once that
        committed; without, it commits here and is in flight at once.
        """
        node_id = new_id("node")
        stamp = self._clock.now()
        crash_point("broker.before_intent_commit")
        with nullcontext(conn) if conn is not None else self._engine.begin() as tx:
            tx.execute(
                insert(t.provisions).values(
                    node_id=node_id,
                    operation_id="",
                    offer_json=json.dumps(asdict(offer)),
                    spot=spot,
                    state=INTENT,
                    error="",
                    created_at=stamp,
                    updated_at=stamp,
                    allocation_id=ask.allocation_id,
                    task_id=ask.task_id,
                    hourly_price=hourly_price,
                    image_id=image_id,
                )
            )
        prov = _Provision(node_id, "", offer, spot, stamp, ask.allocation_id, image_id)
        if conn is None:
            self.started(prov)
        return prov

    def started(self, prov: _Provision) -> None:
        """Put a committed intent in flight."""
        self.pending[prov.node_id] = prov
        log.info("provisioning intent", extra={"node_id": prov.node_id, "offer": prov.offer.place})

    def ranked_start(
        self, ask: Ask, ranking: Ranking, conn: Connection | None = None
    ) -> tuple[tuple[_Provision, Ranked] | None, list[str]]:
        """Start the first ranked offer that is not cooling down or at its instance limit.

        Returns ((intent, ranked offer) or None, why offers were skipped); ``conn`` as for ``start``.
        """
        skipped: list[str] = []
        fleet = self.fleet()
        for ranked in ranking.offers:
            # The same rules as the dryrun's launch order (launch_order.skip_reason).
            cooling = fleet.cooling(ranked)
            if cooling:
                skipped.append(f"{ranked.offer.place}: {cooling}")
                continue
            if fleet.at_limit(ranked.offer):
                continue
            image = alternatives(ask.resources)[1][ranked.alternative].image_id
            return (self.start(ask, ranked.offer, ranked.spot, ranked.hourly_price, conn, image), ranked), skipped
        return None, skipped

    def fleet(self) -> FleetView:
        """Cooldowns and live-or-booting instances per offer, as provisioning consults them now."""
        counts: Counter[OfferKey] = Counter(
            (n.provider, n.region, n.zone, n.instance_type) for n in self._nodes.nodes.values() if n.state not in ABSENT
        )
        counts.update(_offer_key(p.offer) for p in self.pending.values())
        return FleetView(dict(self._cooling), counts, self._clock.now())

    def fleet_view(self, alts: Sequence[Resources]) -> tuple[FleetView, list[OfferKey]]:
        """``fleet()`` and the live pool nodes that could hold one of ``alts`` (a gang's bound)."""
        live = [
            (n.provider, n.region, n.zone, n.instance_type)
            for n in self._nodes.nodes.values()
            if n.state == READY and not n.cluster and any(node_could_fit(n, alt) for alt in alts)
        ]
        return self.fleet(), live

    def provision_for(
        self, allocation_id: str, res: Resources, conn: Connection
    ) -> tuple[_Provision | None, Offer | None, float, str]:
        """Stage one node for ``res`` (a cluster's) in ``conn``: (intent, offer, $/h, "") or
        (None, None, 0, why not); apply the intent with ``started`` after the commit."""
        if self._provisioner is None:
            return None, None, 0.0, "no provisioner"
        if not self._book.known:
            return None, None, 0.0, "provisioner unavailable"
        pool = replace(res, cluster="")  # rank like any request; the cluster is this node's destiny
        started, skipped = self.ranked_start(Ask(allocation_id, "", pool), self._book.ranked(pool), conn)
        if started is None:
            why = "; ".join(skipped) or "every feasible offer is at its instance limit (e.g. STYX_LOCAL_MAX_NODES)"
            return None, None, 0.0, why
        return started[0], started[1].offer, started[1].hourly_price, ""

    def fail(self, node_id: str, error: str, kind: str = "") -> None:
        """Record a failed attempt and cool its scope down (under the lock).

        A gang is provisioned all or nothing: the other nodes started for the same
        allocation (its siblings) fail with it and are terminated, those still booting and
        those that registered but hold nothing yet, so the next round provisions the whole
        gang in one place instead of completing it elsewhere (a gang split over two
        Kubernetes clusters or regions could not reach itself).
        """
        prov = self.pending.get(node_id)
        if prov is None:
            return
        stamp = self._clock.now()
        booting = [p.node_id for p in self.pending.values() if p.allocation_id == prov.allocation_id]
        booting = [n for n in booting if n != node_id] if prov.allocation_id else []
        why = f"gang sibling {node_id} failed: {error}"
        with self._engine.begin() as conn:
            conn.execute(
                update(t.provisions)
                .where(t.provisions.c.node_id == node_id)
                .values(state=FAILED, error=error, error_kind=kind, updated_at=stamp)
            )
            idle = self._idle_registered_siblings(conn, prov.allocation_id) if prov.allocation_id else []
            if booting:
                conn.execute(
                    update(t.provisions)
                    .where(t.provisions.c.node_id.in_(booting), t.provisions.c.state.in_([INTENT, PENDING]))
                    .values(state=FAILED, error=why, error_kind="", updated_at=stamp)
                )
            gone = [n for n in idle if self._nodes.mark_gone(conn, n)]
            for sibling in [*booting, *gone]:
                self.stage_terminate(conn, sibling)
        crash_point("broker.failover")
        del self.pending[node_id]
        for sibling in booting:
            self.pending.pop(sibling, None)
        for sibling in gone:
            self._nodes.set_state(sibling, GONE)
        self._cooling[_scope_key(prov.offer, kind)] = (stamp + self._cooldown_s, error)
        log.warning("provisioning failed", extra={"node_id": node_id, "error": error, "kind": kind})
        if booting or gone:
            log.warning("gang siblings released", extra={"node_id": node_id, "siblings": [*booting, *gone]})

    def _idle_registered_siblings(self, conn: Connection, allocation_id: str) -> list[str]:
        """Nodes provisioned for ``allocation_id`` that registered and hold nothing yet."""
        c = t.provisions.c
        rows = conn.execute(select(c.node_id).where(c.allocation_id == allocation_id, c.state == REGISTERED))
        out = []
        for (node_id,) in rows:
            node = self._nodes.nodes.get(node_id)
            busy = node is None or node.used_cpus or node.used_memory_gib or node.used_gpus
            if node is not None and node.state == READY and not busy:
                out.append(node_id)
        return out

    def stage_registered(self, conn: Connection, node_id: str) -> bool:
        """Write that ``node_id``'s provision registered, in ``conn``; True when it was in flight."""
        if node_id not in self.pending:
            return False
        stamp = self._clock.now()
        conn.execute(
            update(t.provisions).where(t.provisions.c.node_id == node_id).values(state=REGISTERED, updated_at=stamp)
        )
        return True

    def stage_lost(self, conn: Connection, node_id: str, reason: str) -> Cooldown | None:
        """Write that ``node_id``'s instance vanished; a spot node's offer cools down (apply with ``cool``)."""
        row = conn.execute(
            select(t.provisions.c.offer_json, t.provisions.c.spot).where(t.provisions.c.node_id == node_id)
        ).first()
        if row is None:
            return None  # a hand-started node: no offer to cool
        stamp = self._clock.now()
        error = f"{'spot instance reclaimed' if row.spot else 'instance lost'}: {reason}"
        conn.execute(
            update(t.provisions)
            .where(t.provisions.c.node_id == node_id)
            .values(state="lost", error=error, error_kind="capacity" if row.spot else "", updated_at=stamp)
        )
        if not row.spot:
            return None
        offer = Offer(**json.loads(row.offer_json))
        log.warning("spot capacity lost; cooling the offer", extra={"node_id": node_id, "place": offer.place})
        return _spot_key(offer), (stamp + self._cooldown_s, error)

    def cool(self, key: tuple[str, ...], until: tuple[float, str]) -> None:
        """Apply a committed cooldown."""
        self._cooling[key] = until

    def stage_terminate(self, conn: Connection, node_id: str) -> None:
        """Queue a termination of ``node_id``'s instance in ``conn`` (sent by ``drain``)."""
        conn.execute(
            insert(t.outbox).values(
                request_id=new_id("down"), kind="terminate", node_id=node_id, created_at=self._clock.now(), error=""
            )
        )

    # ---- the drain (no lock across calls) --------------------------------------------------------
    def drain(self, only: Collection[str] | None = None) -> int:
        """Send intents (those in ``only``, or all) and queued terminations; return how many were refused.

        A refusal (the provisioner answered with an error other than UNAVAILABLE) fails the
        attempt and cools its scope, so the caller's next round fails over. An unreachable
        provisioner leaves the intent for the next drain.
        """
        if self._provisioner is None:
            return 0
        refused = 0
        for prov in self._claim(only):
            crash_point("broker.after_intent_commit")
            try:
                node, offer, spot = prov.node_id, prov.offer, prov.spot
                if prov.image_id:
                    operation_id = self._provisioner.provision(node, node, offer, spot, {IMAGE_LABEL: prov.image_id})
                else:  # test doubles that never see an image take no labels
                    operation_id = self._provisioner.provision(node, node, offer, spot)
            except Unavailable as exc:
                log.warning("provision request failed: %s", exc)
            except StyxError as exc:
                with self._lock:
                    self.fail(prov.node_id, exc.message, _kind_of(exc))
                refused += 1
            except Exception as exc:
                log.warning("provision request failed: %s", exc)
            else:
                crash_point("broker.after_provision_sent")
                self._sent(prov, operation_id)
            finally:
                with self._lock:
                    self._sending.discard(prov.node_id)
        if only is None:
            self._drain_terminations()
        return refused

    def _claim(self, only: Collection[str] | None) -> Iterator[_Provision]:
        with self._lock:
            todo = [
                p
                for p in self.pending.values()
                if not p.operation_id and p.node_id not in self._sending and (only is None or p.node_id in only)
            ]
            self._sending.update(p.node_id for p in todo)
        yield from todo

    def _sent(self, prov: _Provision, operation_id: str) -> None:
        with self._lock:
            current = self.pending.get(prov.node_id)
            if current is None:
                return  # failed or registered meanwhile
            with self._engine.begin() as conn:
                conn.execute(
                    update(t.provisions)
                    .where(t.provisions.c.node_id == prov.node_id, t.provisions.c.state == INTENT)
                    .values(operation_id=operation_id, state=PENDING, updated_at=self._clock.now())
                )
            current.operation_id = operation_id
        log.info("provisioning", extra={"node_id": prov.node_id, "operation_id": operation_id})

    def _drain_terminations(self) -> None:
        assert self._provisioner is not None
        with self._engine.connect() as conn:
            queued = conn.execute(select(t.outbox).where(t.outbox.c.kind == "terminate")).all()
        for row in queued:
            try:
                self._provisioner.terminate(row.node_id)
            except StyxError as exc:
                if not isinstance(exc, Unavailable):
                    # NotFound: never created (a failed attempt); others are final too.
                    self._forget_outbox(row.request_id)
                    continue
                log.warning("terminate of %s failed: %s", row.node_id, exc)
                continue
            except Exception as exc:
                log.warning("terminate of %s failed: %s", row.node_id, exc)
                continue
            crash_point("broker.terminate")
            self._forget_outbox(row.request_id)

    def _forget_outbox(self, request_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(t.outbox).where(t.outbox.c.request_id == request_id))

    def poll(self) -> None:
        """Settle provisions in flight: failed operations and timeouts fail over (network outside the lock)."""
        stamp = self._clock.now()
        with self._lock:
            inflight = list(self.pending.values())
        for prov in inflight:
            state, error, kind = "pending", "", ""
            if self._provisioner is not None and prov.operation_id:
                try:
                    polled: Iterable[Any] = self._provisioner.operation_state(prov.operation_id)
                except Exception as exc:
                    log.warning("cannot poll operation %s: %s", prov.operation_id, exc)
                    continue
                state, error, *rest = polled
                kind = rest[0] if rest else ""
            if state != FAILED and stamp - prov.created_at > self._timeout_s:
                state, error, kind = FAILED, f"node did not register within {self._timeout_s:g} s", ""
            if state == FAILED:
                with self._lock:
                    self.fail(prov.node_id, error, kind)  # a no-op when it settled meanwhile
