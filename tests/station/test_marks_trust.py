"""Peer marks under bounded trust: a valid key does not make a mark sane (issue 20, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from agent.station.marks import (
    MAX_STORED_HLC,
    Mark,
    MarkPolicy,
    MarkStore,
    hlc_pack,
    hlc_wall_ms,
)

NOW_MS = 1_780_000_000_000  # a fixed "now" for the honest kiosk's wall clock
TEN_YEARS_MS = 10 * 365 * 86_400_000


def _signed(key: SigningKey, kiosk: str, seq: int, voter: int, hlc: int) -> Mark:
    unsigned = Mark(voter, kiosk, seq, "identify", f"S-{kiosk}-{seq}", hlc)
    return Mark(voter, kiosk, seq, "identify", unsigned.slip_serial, hlc,
                key.sign(unsigned.signed_bytes()).signature)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[MarkStore, SigningKey]:
    """An honest kiosk "a" and the key of its listed peer "rogue"."""
    a, rogue = SigningKey.generate(), SigningKey.generate()
    trusted = {"a": a.verify_key, "rogue": rogue.verify_key}
    store = MarkStore(tmp_path / "a.sqlite", "a", a, trusted, wall_ms=lambda: NOW_MS)
    return store, rogue


@pytest.mark.parametrize("stamp", [2**63 - 1, 2**64 - 1, hlc_pack(NOW_MS + TEN_YEARS_MS, 0)])
def test_future_stamp_is_quarantined_and_never_poisons_the_clock(
    pair: tuple[MarkStore, SigningKey], tmp_path: Path, stamp: int
) -> None:
    store, rogue = pair
    good = [_signed(rogue, "rogue", 1, 11, hlc_pack(NOW_MS - 1000, 0)),
            _signed(rogue, "rogue", 3, 13, hlc_pack(NOW_MS - 500, 0))]
    bad = _signed(rogue, "rogue", 2, 12, stamp)
    result = store.merge([good[0], bad, good[1]])  # never raises
    assert result.added == good  # the good marks of the frame stay
    assert [(m, r) for m, r in result.rejected] == [(bad, "clock-ahead")]
    assert [m for m, _ahead in result.quarantined] == [bad]
    assert store.quarantined()[0][0] == bad
    assert store.marks_for(12) == ()  # held apart: not in the mark set
    local = store.mark_local(20, "identify", "S-a-1")  # no OverflowError
    assert hlc_wall_ms(local.hlc) == NOW_MS
    store.close()
    again = MarkStore(tmp_path / "a.sqlite", "a", SigningKey.generate(), {},
                      wall_ms=lambda: NOW_MS + 1)
    assert hlc_wall_ms(again.mark_local(21, "identify", "S-a-2").hlc) == NOW_MS + 1


def test_quarantined_mark_is_admitted_once_no_longer_ahead(tmp_path: Path) -> None:
    clock = [NOW_MS]
    a, peer = SigningKey.generate(), SigningKey.generate()
    store = MarkStore(tmp_path / "a.sqlite", "a", a, {"p": peer.verify_key},
                      policy=MarkPolicy(max_ahead_ms=60_000), wall_ms=lambda: clock[0])
    fast = _signed(peer, "p", 1, 5, hlc_pack(NOW_MS + 6 * 60_000, 0))  # 6 min fast
    assert store.merge([fast]).rejected == [(fast, "clock-ahead")]
    assert hlc_wall_ms(store.clock.last) < NOW_MS + 60_000
    clock[0] = NOW_MS + 6 * 60_000
    assert store.merge([fast]).added == [fast]
    assert store.quarantined() == []


def test_persisted_poisoned_floor_does_not_crash_loop(tmp_path: Path) -> None:
    """A store poisoned by an earlier release (floor 2^63-1) still marks after restart."""
    key = SigningKey.generate()
    store = MarkStore(tmp_path / "m.sqlite", "a", key, {}, wall_ms=lambda: NOW_MS)
    store.mark_local(1, "identify", "S-1")
    with store._con:  # what the unbounded merge used to persist
        store._con.execute("UPDATE meta SET value=? WHERE key='hlc'", (MAX_STORED_HLC,))
    store.close()
    again = MarkStore(tmp_path / "m.sqlite", "a", key, {}, wall_ms=lambda: NOW_MS + 5)
    assert hlc_wall_ms(again.mark_local(2, "identify", "S-2").hlc) == NOW_MS + 5


def test_list_numbers_not_in_the_roll_are_refused(tmp_path: Path) -> None:
    a, rogue = SigningKey.generate(), SigningKey.generate()
    roll = set(range(1, 41))
    store = MarkStore(tmp_path / "a.sqlite", "a", a, {"rogue": rogue.verify_key},
                      in_roll=roll.__contains__, wall_ms=lambda: NOW_MS)
    marks = [_signed(rogue, "rogue", i, 100_000 + i, hlc_pack(NOW_MS - 10_000_000 + i * 6000, 0))
             for i in range(1, 51)]
    marks.append(_signed(rogue, "rogue", 51, 7, hlc_pack(NOW_MS - 1000, 0)))
    result = store.merge(marks)
    assert {r for _m, r in result.rejected} == {"not-in-roll"}
    assert len(result.rejected) == 50
    assert result.added == [marks[-1]]
    assert store.voters_marked() == 1


def test_a_rate_no_kiosk_can_reach_is_reported_once(pair: tuple[MarkStore, SigningKey]) -> None:
    store, rogue = pair
    burst = [_signed(rogue, "rogue", i, i, hlc_pack(NOW_MS - 5000 + i, 0)) for i in range(1, 501)]
    first = store.merge(burst[:250])
    assert [(r.kiosk, r.marks) for r in first.rate_exceeded] == [("rogue", 250)]
    assert store.merge(burst[250:]).rate_exceeded == []  # same window: one alert
    honest = [_signed(rogue, "rogue", 500 + i, 1000 + i, hlc_pack(NOW_MS + i * 8000, 0))
              for i in range(1, 30)]
    store.clock.observe(0)
    assert store.merge(honest[:1]).rate_exceeded == []


def test_revoked_kiosk_new_marks_refused_earlier_flagged(
    pair: tuple[MarkStore, SigningKey],
) -> None:
    store, rogue = pair
    early = [_signed(rogue, "rogue", i, i, hlc_pack(NOW_MS - 100_000 + i * 10_000, 0))
             for i in (1, 2)]
    store.merge(early)
    rev = store.revoke("rogue", by="a")
    assert rev is not None and rev.upto_seq == 2
    assert store.revoke("rogue", by="a") is None  # already in force
    late = _signed(rogue, "rogue", 3, 3, hlc_pack(NOW_MS - 1000, 0))
    assert store.merge([late]).rejected == [(late, "revoked-kiosk")]
    assert store.revoked_marks() == early
    with pytest.raises(ValueError, match="itself"):
        store.revoke("a", by="a")
    with pytest.raises(ValueError, match="not one of"):
        store.revoke("stranger", by="a")


class _Clocks:
    """A wall clock that can be stepped, and a monotonic clock that cannot."""

    def __init__(self) -> None:
        self.wall, self.mono = NOW_MS, 0

    def tick(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def test_clock_stepping_back_mid_day_keeps_stamps_sane(tmp_path: Path) -> None:
    c = _Clocks()
    store = MarkStore(tmp_path / "a.sqlite", "a", SigningKey.generate(), {},
                      policy=MarkPolicy(max_ahead_ms=300_000), wall_ms=lambda: c.wall,
                      mono_ms=lambda: c.mono)
    first = store.mark_local(1, "identify", "S-1")
    c.tick(10_000)
    c.wall -= 60_000  # NTP steps back one minute: within the bound, stamps stay increasing
    second = store.mark_local(2, "identify", "S-2")
    assert second.hlc > first.hlc and hlc_wall_ms(second.hlc) == hlc_wall_ms(first.hlc)
    assert store.clock.take_steps() == [-60_000]
    c.tick(10_000)
    c.wall -= 3 * 3600_000  # the morning's clock was 3 h fast: stamps follow the fixed clock
    third = store.mark_local(3, "identify", "S-3")
    assert hlc_wall_ms(third.hlc) == c.wall
    assert store.clock.take_steps() == [-3 * 3600_000]
    c.tick(10_000)
    fourth = store.mark_local(4, "identify", "S-4")
    assert fourth.hlc > third.hlc  # increasing again from the corrected clock
    assert [m.origin_seq for m in store.local_marks()] == [1, 2, 3, 4]
    store.close()
    again = MarkStore(tmp_path / "a.sqlite", "a", SigningKey.generate(), {},
                      wall_ms=lambda: c.wall + 5000)  # a restart keeps following the clock
    assert hlc_wall_ms(again.mark_local(5, "identify", "S-5").hlc) == c.wall + 5000


def test_clock_stepping_forward_mid_day_moves_stamps_and_is_reported(tmp_path: Path) -> None:
    c = _Clocks()
    store = MarkStore(tmp_path / "a.sqlite", "a", SigningKey.generate(), {},
                      wall_ms=lambda: c.wall, mono_ms=lambda: c.mono)
    first = store.mark_local(1, "identify", "S-1")
    c.tick(10_000)
    c.wall += 2 * 3600_000  # a slow clock (booted offline) set right by NTP
    second = store.mark_local(2, "identify", "S-2")
    assert hlc_wall_ms(second.hlc) - hlc_wall_ms(first.hlc) == 2 * 3600_000 + 10_000
    assert store.clock.take_steps() == [2 * 3600_000]
    c.tick(10_000)
    store.mark_local(3, "identify", "S-3")
    assert store.clock.take_steps() == []  # a step is reported once
