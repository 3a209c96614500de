"""Peer status: observed state from facts, debounced reporting, lag, addresses."""

from __future__ import annotations

import pytest

from agent.peers.discovery import PeerAddress, configured_peers, parse_address
from agent.peers.status import Debounced, PeerState, lag, observed_state
from agent.runtime.config import ConfigError

C, S, U = PeerState.CONNECTED, PeerState.STALE, PeerState.UNREACHABLE


@pytest.mark.parametrize(
    ("open_", "age", "want"),
    [(True, 0.5, C), (True, 5.0, S), (False, 5.0, S), (False, 20.0, U), (True, None, U),
     (False, 0.1, S), (True, 20.0, U)],
)
def test_observed_state(open_: bool, age: float | None, want: PeerState) -> None:
    got = observed_state(
        session_open=open_, last_heard_age_s=age, stale_after_s=3.0, unreachable_after_s=15.0
    )
    assert got is want


def test_debounce_ignores_flapping_and_follows_a_stable_change() -> None:
    d = Debounced(U, now=0.0, stable_s=3.0)
    # A link that bounces every second never changes what the operator sees.
    changes = [d.observe(C if t % 2 else S, float(t)) for t in range(10)]
    assert changes == [None] * 10 and d.reported is U
    # The last bounce (t=9) was CONNECTED; it becomes reported 3 s later.
    assert d.observe(C, 10.0) is None
    assert d.observe(C, 11.9) is None
    assert d.observe(C, 12.0) is C and d.since == 12.0
    assert d.observe(C, 20.0) is None
    assert d.observe(S, 21.0) is None
    assert d.observe(C, 22.0) is None  # back before the interval: no event at all
    assert d.reported is C


def test_lag_counts_missing_marks_per_kiosk() -> None:
    mine = {"a": 10, "b": 3}
    theirs = {"a": 7, "b": 5, "c": 2}
    assert lag(mine, theirs) == 3
    assert lag(theirs, mine) == 4
    assert lag(mine, mine) == 0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.2:7341", PeerAddress("10.0.0.2", 7341)),
        (" kiosk-2.local:9000 ", PeerAddress("kiosk-2.local", 9000)),
        ("[fe80::1]:7341", PeerAddress("fe80::1", 7341)),
        ("10.0.0.3", PeerAddress("10.0.0.3", 7341)),
    ],
)
def test_parse_address(text: str, want: PeerAddress) -> None:
    assert parse_address(text, default_port=7341) == want


@pytest.mark.parametrize("text", ["", ":7341", "h:70000", "h:x", "fe80::1", "[zz]:1", "[::1]x"])
def test_parse_address_refuses_with_the_field_named(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_address(text, field="peers[2]", default_port=7341)
    assert exc.value.field == "peers[2]"


def test_configured_peers_skips_self_and_repeats() -> None:
    me = PeerAddress("10.0.0.1", 7341)
    got = configured_peers(("10.0.0.1:7341", "10.0.0.2", "10.0.0.2:7341", "10.0.0.3:7341"), me)
    assert got == (PeerAddress("10.0.0.2", 7341), PeerAddress("10.0.0.3", 7341))
    assert str(PeerAddress("fe80::1", 1)) == "[fe80::1]:1"
