"""A peer's mark held apart for its clock still refuses its voter, and is admitted once
time has caught up, without a resend (docs/PEERS.md "Trust model")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nacl.signing import SigningKey

from agent.station.marks import Mark, MarkPolicy, MarkStore, hlc_pack, hlc_wall_ms

NOW_MS = 1_780_000_000_000
MINUTE = 60_000


def _signed(key: SigningKey, kiosk: str, seq: int, voter: int, wall_ms: int) -> Mark:
    unsigned = Mark(voter, kiosk, seq, "identify", f"S-{kiosk}-{seq}", hlc_pack(wall_ms, 0))
    return Mark(voter, kiosk, seq, "identify", unsigned.slip_serial, unsigned.hlc,
                key.sign(unsigned.signed_bytes()).signature)


class _Kiosk:
    """Kiosk "b" with a wall clock the test moves; "a" is a listed peer 20 minutes fast."""

    def __init__(self, path: Path, a: SigningKey, *, trust_a: bool = True) -> None:
        self.now = NOW_MS
        trusted = {"a": a.verify_key} if trust_a else {}
        self.store = MarkStore(path, "b", SigningKey.generate(), trusted,
                               policy=MarkPolicy(max_ahead_ms=5 * MINUTE),
                               wall_ms=lambda: self.now)


def test_held_mark_refuses_its_voter_then_is_admitted_without_a_resend(tmp_path: Path) -> None:
    a = SigningKey.generate()
    b = _Kiosk(tmp_path / "b.sqlite", a)
    fast = _signed(a, "a", 1, 7, NOW_MS + 20 * MINUTE)  # the ORIGINAL slip kiosk a printed
    merged = b.store.merge([fast])
    assert merged.quarantined == [(fast, 20 * MINUTE)] and merged.added == []

    # Voter 7 at kiosk b: refused, on the strength of the held mark. No new mark.
    assert b.store.mark_if_unmarked(7, "identify", "S-b-1") == (fast,)
    assert b.store.prior_marks(7) == (fast,) and b.store.marks_for(7) == ()
    assert b.store.held_apart(fast) == 20 * MINUTE
    assert b.store.count() == 0 and b.store.voters_marked() == 1
    assert b.store.held_refusing() == [fast]
    assert hlc_wall_ms(b.store.clock.last) < NOW_MS + MINUTE  # never observed while held

    # Still ahead: re-judging changes nothing (and writes nothing).
    b.now += 10 * MINUTE
    nothing = b.store.readmit()
    assert nothing.added == [] and nothing.rejected == [] and b.store.quarantined() != []

    # Within the allowed skew now: admitted here, no peer sent it again.
    b.now += 5 * MINUTE
    admitted = b.store.readmit()
    assert admitted.added == [fast] and admitted.released == [fast]
    assert admitted.conflicts == []
    assert b.store.quarantined() == [] and b.store.held_apart(fast) is None
    assert b.store.marks_for(7) == (fast,)
    assert b.store.clock.last >= fast.hlc  # observed once admitted
    assert b.store.voters_marked() == 1  # counted once, before and after
    assert b.store.mark_if_unmarked(7, "identify", "S-b-2") == (fast,)
    assert b.store.readmit().added == []  # nothing left to admit
    assert b.store.merge([fast]).duplicates == 1  # a later resend is a repeat


def test_a_merge_rejudges_the_quarantine_and_reports_a_double_identification(
    tmp_path: Path,
) -> None:
    a, c = SigningKey.generate(), SigningKey.generate()
    now = [NOW_MS]
    store = MarkStore(tmp_path / "b.sqlite", "b", SigningKey.generate(),
                      {"a": a.verify_key, "c": c.verify_key},
                      policy=MarkPolicy(max_ahead_ms=5 * MINUTE), wall_ms=lambda: now[0])
    fast = _signed(a, "a", 1, 9, NOW_MS + 8 * MINUTE)
    store.merge([fast])
    # Kiosk c, cut off from a, identified voter 9 too (a partition): both slips exist.
    other = _signed(c, "c", 1, 9, NOW_MS)
    first = store.merge([other])
    assert first.added == [other] and first.conflicts == []
    now[0] += 4 * MINUTE
    second = store.merge([_signed(c, "c", 2, 10, now[0])])  # any merge re-judges
    assert fast in second.released and second.conflicts == [9]
    assert {m.kiosk for m in store.conflicts()[0].marks} == {"a", "c"}


def test_revoked_or_untrusted_held_marks_do_not_refuse(tmp_path: Path) -> None:
    a = SigningKey.generate()
    b = _Kiosk(tmp_path / "b.sqlite", a)
    held = [_signed(a, "a", seq, 20 + seq, NOW_MS + 20 * MINUTE + seq) for seq in (1, 2)]
    b.store.merge(held)
    assert b.store.prior_marks(21) == (held[0],)
    # The commission revokes kiosk a having seen mark 1 of it: mark 2 no longer counts.
    assert b.store.revoke("a", by="b", upto_seq=1) is not None
    assert b.store.prior_marks(21) == (held[0],)
    assert b.store.prior_marks(22) == ()
    assert b.store.held_refusing() == [held[0]] and b.store.voters_marked() == 1
    new = b.store.mark_if_unmarked(22, "identify", "S-b-1")
    assert isinstance(new, Mark) and new.kiosk == "b"
    # Once no longer ahead, the revoked one leaves the quarantine as a refusal.
    b.now += 16 * MINUTE
    judged = b.store.readmit()
    assert judged.added == [held[0]]
    assert judged.rejected == [(held[1], "revoked-kiosk")] and b.store.quarantined() == []
    b.store.close()
    # A store that no longer lists kiosk a (another roll) does not count its held marks.
    c = _Kiosk(tmp_path / "c.sqlite", a)
    c.store.merge([_signed(a, "a", 1, 30, NOW_MS + 20 * MINUTE)])
    c.store.close()
    again = _Kiosk(tmp_path / "c.sqlite", a, trust_a=False)
    assert again.store.prior_marks(30) == () and again.store.voters_marked() == 0
    assert isinstance(again.store.mark_if_unmarked(30, "identify", "S-b-1"), Mark)


def test_a_quarantine_kept_by_an_earlier_release_is_migrated(tmp_path: Path) -> None:
    """The earlier table had no voter or stamp columns: they are filled in at open."""
    a = SigningKey.generate()
    fast = _signed(a, "a", 1, 5, NOW_MS + 20 * MINUTE)
    con = sqlite3.connect(tmp_path / "b.sqlite")
    con.execute("CREATE TABLE quarantine (kiosk TEXT NOT NULL, origin_seq INTEGER NOT NULL,"
                " mark BLOB NOT NULL, ahead_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
                " PRIMARY KEY (kiosk, origin_seq))")
    con.execute("INSERT INTO quarantine VALUES ('a', 1, ?, ?, ?)",
                (fast.to_bytes(), 20 * MINUTE, NOW_MS))
    con.commit()
    con.close()
    b = _Kiosk(tmp_path / "b.sqlite", a)
    assert b.store.prior_marks(5) == (fast,)
    b.now += 15 * MINUTE
    assert b.store.readmit().released == [fast]
