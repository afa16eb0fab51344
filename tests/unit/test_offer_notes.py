"""A request whose infra has no offers quotes what that provider's check says (the part of
its region when the note lists regions), so `sky launch --infra ssh/POOL` says why."""

from __future__ import annotations

from styx.broker.offers import _note

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
