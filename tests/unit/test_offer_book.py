"""The broker's OfferBook: a request whose infra has no offers quotes what that provider's
check says (the part of its region when the note lists regions), so `sky launch --infra
ssh/POOL` says why; and a caller arriving while the first ListOffers is in flight waits for
its answer instead of seeing no offers (`sky show-gpus` on a fresh plane printed nothing)."""

from __future__ import annotations

import threading

from styx.broker.catalog import Catalog
from styx.broker.offers import OfferBook, _note
from styx.common.clock import SYSTEM_CLOCK
from styx.common.offers import Offer

SSH = "pair: 2/2 hosts up, A100 x4 | dead: 0/1 hosts up; ssh/dead root@10.0.0.9: cannot connect (timed out)"


def test_the_named_regions_part_is_quoted() -> None:
    assert (
        _note("ssh/dead", {"ssh": SSH})
        == "; ssh: dead: 0/1 hosts up; ssh/dead root@10.0.0.9: cannot connect (timed out)"
    )
    assert _note("ssh/pair", {"ssh": SSH}) == "; ssh: pair: 2/2 hosts up, A100 x4"


def test_an_unknown_region_lists_the_known_ones() -> None:
    assert _note("ssh/nope", {"ssh": SSH}) == "; ssh: no region 'nope' (it has: pair, dead)"


def test_a_plain_note_is_quoted_whole_and_clipped() -> None:
    assert _note("k8s/x", {"kubernetes": "fake: reachable"}) == "; kubernetes: fake: reachable"
    assert _note("ssh", {"ssh": "x" * 500}).endswith("...") and len(_note("ssh", {"ssh": "x" * 500})) < 320
    assert _note("local", {"ssh": SSH}) == "" and _note("", {"ssh": SSH}) == ""


class SlowProvisioner:
    """The provisioner's two reads; the first ListOffers blocks until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def list_offers(self) -> list[Offer]:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        return [Offer("ssh", "pair", "", "10.0.0.1", 2, 8, accelerator_name="A100", accelerator_count=2)]

    def list_providers(self) -> dict[str, str]:
        return {"ssh": ""}


def test_a_caller_during_the_first_refresh_waits_for_its_answer() -> None:
    prov = SlowProvisioner()
    book = OfferBook(prov, Catalog(), SYSTEM_CLOCK)
    first = threading.Thread(target=book.refresh)
    first.start()
    assert prov.entered.wait(10)
    seen: list[list[Offer]] = []
    second = threading.Thread(target=lambda: (book.refresh(), seen.append(book.host_offers())))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting, not answering "no offers"
    prov.release.set()
    first.join(10)
    second.join(10)
    assert [o.instance_type for o in seen[0]] == ["10.0.0.1"] and book.enabled() == {"ssh": ""}
    assert prov.calls == 1  # the waiter used the answer it waited for
