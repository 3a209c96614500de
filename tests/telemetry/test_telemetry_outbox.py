"""Outbox: durable counter, order, ack/retention, health coalescing, reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.telemetry.outbox import Outbox, OutboxError


def test_counter_is_contiguous_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    ob = Outbox(path)
    assert [ob.append("event", b"{}", 1, 1, -1) for _ in range(3)] == [1, 2, 3]
    assert ob.next_boot() == 1
    ob.ack([1, 2, 3])
    ob.close()
    ob = Outbox(path)
    assert ob.append("turnout", b'{"a":1}', 2, 2, 5) == 4  # never reuses acked numbers
    assert ob.next_boot() == 2
    assert ob.depth() == 1
    ob.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pending_in_order_and_ack_keeps_retention(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", retain_acked_rows=2)
    for i in range(5):
        ob.append("event", f'{{"i":{i}}}'.encode(), i, i, -1)
    rows = ob.pending(0, 3)
    assert [r.n for r in rows] == [1, 2, 3]
    assert [r.n for r in ob.pending(3, 10)] == [4, 5]
    ob.ack([1, 2, 3])
    assert ob.depth() == 2
    assert [r.n for r in ob.pending(0, 10)] == [4, 5]
    # only the 2 newest acked rows are retained for resends
    assert [(r.n, r.acked) for r in ob.resend_rows(1, 5, 10)] == [
        (2, True), (3, True), (4, False), (5, False)]
    assert ob.oldest_retained() == 2
    assert ob.last_n() == 5


def test_health_coalesces_only_when_long_and_never_drops_turnout(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob.append("health", b'{"h":1}', 1, 1, -1, coalesce_depth=3) == 1
    ob.append("turnout", b'{"t":1}', 2, 2, -1, coalesce_depth=3)
    assert ob.append("health", b'{"h":2}', 3, 3, -1, coalesce_depth=3) == 3
    # depth 3 reached: the newest queued health row is overwritten
    assert ob.append("health", b'{"h":3}', 4, 4, -1, coalesce_depth=3) == 3
    ob.append("event", b'{"e":1}', 5, 5, -1, coalesce_depth=3)
    assert ob.append("turnout", b'{"t":2}', 6, 6, -1, coalesce_depth=3) == 5
    rows = ob.pending(0, 10)
    assert [(r.n, r.kind, r.payload) for r in rows] == [
        (1, "health", b'{"h":1}'), (2, "turnout", b'{"t":1}'), (3, "health", b'{"h":3}'),
        (4, "event", b'{"e":1}'), (5, "turnout", b'{"t":2}')]
    # a row already handed to the broker (n <= coalesce_above_n) is not rewritten
    assert ob.append("health", b'{"h":4}', 7, 7, -1, coalesce_depth=3, coalesce_above_n=3) == 6


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError):
        Outbox(path)
