"""Answers for asks that fit no live node now: wait for a booting node or busy capacity,
provision a new node from the ranked offers, or refuse what no offer could ever hold.

Runs under the broker's lock inside an allocate round; a node it starts is only an intent
here (``Provisioning.start``), sent after the round releases the lock.
"""

from __future__ import annotations

from styx.broker.clusters import Clusters
from styx.broker.launch_order import gang_cap_reason
from styx.broker.model import _EPS, READY, _FreeIndex, describe, offer_fits
from styx.broker.nodes import NodeRegistry
from styx.broker.offers import OfferBook
from styx.broker.optimizer import Ranking, alternatives
from styx.broker.placement import fitting, node_could_fit
from styx.broker.provisioning import Provisioning
from styx.common.offers import Offer
from styx.common.placement import INFEASIBLE, WAITING, Ask, Placement
from styx.common.resources import Capacity, Resources


class Waits:
    """What the broker answers, and starts, for asks that do not fit now."""

    def __init__(self, nodes: NodeRegistry, book: OfferBook, provisioning: Provisioning, clusters: Clusters) -> None:
        self._nodes = nodes
        self._book = book
        self._provisioning = provisioning
        self._clusters = clusters

    def single(self, ask: Ask, pending_free: dict[str, Capacity]) -> Placement:
        """Answer for one ask that fits no live node now: wait for a booting node, busy nodes or a new one."""
        if ask.resources.cluster:
            return self._clusters.no_fit(ask)  # clusters have their nodes; never provision here
        _, alts = alternatives(ask.resources)
        # A node still being provisioned whose offer fits absorbs the ask.
        for res in alts:
            for node_id, free in pending_free.items():
                prov = self._provisioning.pending[node_id]
                if _absorbs(prov.offer, free, res):
                    return Placement(
                        ask.allocation_id, WAITING, reason=f"waiting for node {node_id} ({prov.offer.place}) to boot"
                    )
        pool = [n for n in self._nodes.nodes.values() if n.state == READY and not n.cluster]
        busy_fit = any(node_could_fit(n, res) for n in pool for res in alts)
        if not self._provisioning.enabled:
            if busy_fit:
                return Placement(ask.allocation_id, WAITING, reason="waiting for capacity on busy nodes")
            return Placement(
                ask.allocation_id, INFEASIBLE, reason=f"no node can hold {describe(ask.resources)} and no provisioner"
            )
        if not self._book.known:
            return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
        ranking = self._book.ranked(ask.resources)
        if not ranking.offers and not busy_fit:
            return Placement(ask.allocation_id, INFEASIBLE, reason=self._book.explain_infeasible(ask.resources))
        started, cooling = self._provisioning.ranked_start(ask, ranking)
        if started is not None:
            node_id, ranked = started[0].node_id, started[1]
            alt, offer = alts[ranked.alternative], ranked.offer
            pending_free[node_id] = Capacity(offer.cpus - alt.cpus, offer.memory_gib - alt.memory_gib)
            return Placement(ask.allocation_id, WAITING, reason=f"provisioning node {node_id} ({offer.place})")
        if busy_fit:
            return Placement(ask.allocation_id, WAITING, reason="waiting for capacity on busy nodes")
        if cooling:
            return Placement(ask.allocation_id, WAITING, reason="recent provisioning failures: " + "; ".join(cooling))
        return Placement(ask.allocation_id, WAITING, reason="every feasible offer is at its instance limit")

    def gang(self, ask: Ask, pending_free: dict[str, Capacity], index: _FreeIndex) -> Placement:
        """Answer for a gang whose ranks do not all fit now: nothing is reserved.

        INFEASIBLE when no cluster, node set or offer could ever give ``num_nodes`` nodes at
        once; else the nodes that are missing (beyond the free nodes that fit and the booting
        nodes that can take a rank) are provisioned through the ranked offers, and it WAITS.
        """
        if ask.resources.cluster:
            return self._clusters.no_fit(ask)  # clusters have their nodes; never provision here
        n, res_all = ask.num_nodes, ask.resources
        _, alts = alternatives(res_all)
        fit_now = max(sum(1 for _ in fitting(res, index)) for res in alts)
        pool = [nd for nd in self._nodes.nodes.values() if nd.state == READY and not nd.cluster]
        could = [nd for nd in pool if any(node_could_fit(nd, res) for res in alts)]
        what = f"{n} nodes of {describe(res_all)} at once"
        ranking: Ranking | None = None
        if not self._provisioning.enabled:
            if len(could) < n:
                why = f"{what}: only {len(could)} node(s) could hold it, no provisioner"
                return Placement(ask.allocation_id, INFEASIBLE, reason=why)
        else:
            if not self._book.known:
                return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
            ranking = self._book.ranked(res_all, n)
            if not ranking.offers and not could:
                return Placement(ask.allocation_id, INFEASIBLE, reason=self._book.explain_infeasible(res_all))
            live = [(nd.provider, nd.region, nd.zone, nd.instance_type) for nd in could]
            why = gang_cap_reason(ranking.offers, n, live, what)  # the dryrun's rule too
            if why:
                return Placement(ask.allocation_id, INFEASIBLE, reason=why)
        # Booting nodes whose offer fits take one rank each.
        absorbed: list[str] = []
        for node_id, free in pending_free.items():
            if fit_now + len(absorbed) >= n:
                break
            prov = self._provisioning.pending[node_id]
            for res in alts:
                if _absorbs(prov.offer, free, res):
                    absorbed.append(node_id)
                    break
        missing = n - fit_now - len(absorbed)
        if missing <= 0:
            return Placement(
                ask.allocation_id, WAITING, reason=f"waiting for node {', '.join(absorbed)} to boot ({what})"
            )
        started: list[str] = []
        cooling: list[str] = []
        while ranking is not None and len(started) < missing:
            got, cooling = self._provisioning.ranked_start(ask, ranking)
            if got is None:
                break
            node_id, ranked = got[0].node_id, got[1]
            alt, offer = alts[ranked.alternative], ranked.offer
            pending_free[node_id] = Capacity(offer.cpus - alt.cpus, offer.memory_gib - alt.memory_gib)
            started.append(node_id)
        if started:
            return Placement(ask.allocation_id, WAITING, reason=f"provisioning node(s) {', '.join(started)} for {what}")
        if len(could) >= n:
            return Placement(ask.allocation_id, WAITING, reason=f"waiting for capacity on busy nodes ({what})")
        if cooling:
            return Placement(ask.allocation_id, WAITING, reason="recent provisioning failures: " + "; ".join(cooling))
        return Placement(ask.allocation_id, WAITING, reason=f"waiting for {missing} more node(s) ({what})")


def _absorbs(offer: Offer, free: Capacity, res: Resources) -> bool:
    """Whether a booting node of ``offer`` with ``free`` left takes ``res``; if so, count it taken."""
    if not (offer_fits(offer, res) and free.cpus + _EPS >= res.cpus and free.memory_gib + _EPS >= res.memory_gib):
        return False
    free.cpus -= res.cpus
    free.memory_gib -= res.memory_gib
    return True
