"""The mark set: signatures, union merge, version vectors, conflicts, durability."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agent.station.marks import HybridClock, Mark, MarkError, MarkStore, hlc_pack


def _stores(tmp_path: Path, n: int) -> list[MarkStore]:
    keys = {f"kiosk-{i}": SigningKey.generate() for i in range(n)}
    trusted = {k: v.verify_key for k, v in keys.items()}
    return [MarkStore(tmp_path / f"{k}.sqlite", k, v, trusted) for k, v in keys.items()]


def test_local_mark_is_signed_numbered_and_survives_reopen(tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = MarkStore(tmp_path / "m.sqlite", "kiosk-a", key, {})
    m1 = store.mark_local(7, "identify", "S-1")
    m2 = store.mark_local(8, "verify", "S-2")
    assert (m1.origin_seq, m2.origin_seq) == (1, 2)
    assert m2.hlc > m1.hlc
    assert m1.verify(key.verify_key)
    store.close()
    again = MarkStore(tmp_path / "m.sqlite", "kiosk-a", key, {})
    assert again.marks_for(7) == (m1,)
    assert again.mark_local(9, "manual", "S-3").origin_seq == 3
    assert again.clock.last >= m2.hlc


def test_mark_if_unmarked_refuses_second_identification(tmp_path: Path) -> None:
    (store,) = _stores(tmp_path, 1)
    first = store.mark_if_unmarked(5, "identify", "S-1")
    assert isinstance(first, Mark)
    second = store.mark_if_unmarked(5, "identify", "S-2")
    assert second == (first,)
    assert store.count() == 1


def test_merge_is_union_idempotent_and_order_free(tmp_path: Path) -> None:
    a, b, c = _stores(tmp_path, 3)
    for v in range(1, 6):
        a.mark_local(v, "identify", f"A-{v}")
    for v in range(10, 13):
        b.mark_local(v, "identify", f"B-{v}")
    everything = a.all_marks() + b.all_marks()
    random.Random(1).shuffle(everything)
    r1 = c.merge(everything)
    r2 = c.merge(everything)
    assert len(r1.added) == 8 and r2.duplicates == 8 and not r2.added
    assert c.version_vector() == {"kiosk-0": 5, "kiosk-1": 3}
    assert c.marks_after({"kiosk-0": 3}) == [
        m for m in c.all_marks() if m.kiosk == "kiosk-1" or m.origin_seq > 3
    ]


def test_forged_altered_and_unknown_marks_are_rejected(tmp_path: Path) -> None:
    a, b = _stores(tmp_path, 2)
    good = a.mark_local(1, "identify", "A-1")
    altered = Mark(2, good.kiosk, good.origin_seq, good.method, good.slip_serial, good.hlc,
                   good.signature)
    rogue_key = SigningKey.generate()
    forged_body = Mark(3, "kiosk-0", 2, "identify", "X", good.hlc + 1)
    forged = Mark(3, "kiosk-0", 2, "identify", "X", good.hlc + 1,
                  rogue_key.sign(forged_body.signed_bytes()).signature)
    stranger_body = Mark(4, "kiosk-z", 1, "identify", "Z", 1)
    stranger = Mark(4, "kiosk-z", 1, "identify", "Z", 1,
                    rogue_key.sign(stranger_body.signed_bytes()).signature)
    result = b.merge([altered, forged, stranger, good])
    assert [r for _, r in result.rejected] == ["bad-signature", "bad-signature", "unknown-kiosk"]
    assert result.added == [good]


def test_partition_double_identification_is_a_conflict(tmp_path: Path) -> None:
    a, b = _stores(tmp_path, 2)
    a.mark_local(42, "identify", "A-1")
    b.mark_local(42, "identify", "B-1")
    result = a.merge(b.all_marks())
    assert result.conflicts == [42]
    (conflict,) = a.conflicts()
    assert {m.kiosk for m in conflict.marks} == {"kiosk-0", "kiosk-1"}


def test_hybrid_clock_is_monotonic_when_wall_clock_steps_back() -> None:
    walls = iter([1000, 1000, 900, 2000])
    clock = HybridClock(wall_ms=lambda: next(walls))
    stamps = [clock.now() for _ in range(4)]
    assert stamps == sorted(set(stamps))
    clock.observe(hlc_pack(5000, 3))
    assert clock.last == hlc_pack(5000, 3)


@given(st.binary(max_size=200))
def test_from_bytes_never_raises_anything_but_markerror(data: bytes) -> None:
    with contextlib.suppress(MarkError):
        Mark.from_bytes(data)


def test_wire_round_trip(tmp_path: Path) -> None:
    (store,) = _stores(tmp_path, 1)
    m = store.mark_local(77, "identify-2f", "S-9")
    assert Mark.from_bytes(m.to_bytes()) == m
    with pytest.raises(MarkError):
        Mark.from_bytes(m.to_bytes()[:-1])
