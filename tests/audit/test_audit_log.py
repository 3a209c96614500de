"""The audit log on real SQLite files: chaining, checkpoints, durability, tampering, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agent.audit.cli import audit_cli
from agent.audit.events import EventFieldError, EventId
from agent.audit.log import (
    AUDIT_FILE,
    GENESIS_HASH,
    AuditCorruptError,
    AuditError,
    AuditLog,
    AuditProblem,
    canonical_bytes,
    entry_hash,
)
from agent.audit.verify import verify_chain, verify_payloads

REPO = Path(__file__).resolve().parents[2]
DEVICE = "kiosk-01"
SERIAL = "K01-000123"


def tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Edit the log as someone holding the file would: drop the guards, run SQL."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for sql, params in statements:
            con.execute(sql, params)
    finally:
        con.close()


def rows(path: Path) -> list[tuple[int, str, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, body, hash FROM audit ORDER BY seq").fetchall()
    finally:
        con.close()


def started_row(path: Path, after: int) -> tuple[int, str, str]:
    """The first identification-started row with seq > ``after``."""
    return next(r for r in rows(path) if r[0] > after and "identification-started" in r[1])


def checkpoint_seqs(path: Path) -> list[int]:
    return [r[0] for r in rows(path) if '"event":"audit-checkpoint"' in r[1]]


def fill(log: AuditLog, n: int) -> None:
    """Append ``n`` varied voter events."""
    for i in range(n):
        log.append(EventId.IDENTIFICATION_STARTED, attempt_id=i + 1, lookup="none")
        if i % 3 == 0:
            log.append(
                EventId.VOTER_IDENTIFIED,
                attempt_id=i + 1,
                method="identify",
                slip_serial=f"K01-{i:06d}",
                score_band="high",
            )


def make_log(path: Path, key: SigningKey, n: int = 20, every: int = 8) -> list[str]:
    """A closed log of ``n`` rounds; returns the entry hashes in order."""
    with AuditLog(path, key, DEVICE, checkpoint_every=every) as log:
        fill(log, n)
    return [h for _, _, h in rows(path)]


# ------------------------------------------------------------------- writing


def test_append_chains_and_reopens(log_path: Path, key: SigningKey) -> None:
    log = AuditLog(log_path, key, DEVICE, checkpoint_every=1000)
    assert log.head_hash == GENESIS_HASH and log.head_seq == 0
    assert not log.previous_close_clean
    e1 = log.append(EventId.AGENT_STARTED, software_version="0.1.0", boot_count=1,
                    clean_previous_stop=True)  # fmt: skip
    e2 = log.append(EventId.STATION_OPENED, roll_hash="ab" * 32)
    assert (e1.seq, e2.seq) == (1, 2)
    assert e1.prev == GENESIS_HASH and e2.prev == e1.hash
    assert log.head_hash == e2.hash
    # The hash is the documented function of the canonical body.
    assert e2.hash == entry_hash(canonical_bytes(e2.body()))
    log.close()

    again = AuditLog(log_path, key, DEVICE)
    assert again.previous_close_clean  # close() wrote the final checkpoint
    assert again.head_seq == 3
    assert again.count(EventId.STATION_OPENED) == 1
    assert again.count(EventId.AUDIT_CHECKPOINT) == 1
    entries = list(again.entries())
    assert [e.event for e in entries] == [
        EventId.AGENT_STARTED, EventId.STATION_OPENED, EventId.AUDIT_CHECKPOINT,
    ]  # fmt: skip
    assert entries[1] == e2
    assert entries[2].fields["final"] is True and entries[2].fields["upto_hash"] == e2.hash
    again.close()


def test_payload_is_json_and_verifies_as_a_stream(log_path: Path, key: SigningKey) -> None:
    with AuditLog(log_path, key, DEVICE, checkpoint_every=5) as log:
        fill(log, 7)
        payloads = [json.loads(json.dumps(e.to_payload())) for e in log.entries()]
    assert payloads[0]["event"] == "identification-started"
    assert payloads[0]["type"] == "voter-outcome"
    report = verify_payloads(payloads, key.verify_key)
    assert report.ok and report.entries == len(payloads)
    payloads[3]["fields"]["attempt_id"] = 99
    bad = verify_payloads(payloads, key.verify_key)
    assert bad.problem is AuditProblem.ALTERED and bad.first_bad_seq == 4


def test_subscribers_see_the_whole_chain(log_path: Path, key: SigningKey) -> None:
    """Telemetry gets checkpoints too, so the central side can verify the stream."""
    sent: list[dict[str, object]] = []
    log = AuditLog(log_path, key, DEVICE, checkpoint_every=3)
    log.subscribe(lambda e: sent.append(json.loads(json.dumps(e.to_payload()))))

    def broken(_e: object) -> None:
        raise RuntimeError("telemetry queue full")

    log.subscribe(broken)  # a failing consumer does not fail the append
    fill(log, 6)
    log.close()
    assert [p["seq"] for p in sent] == list(range(1, log.head_seq + 1))
    assert sum(p["event"] == "audit-checkpoint" for p in sent) == 8 // 3 + 1
    report = verify_payloads(sent, key.verify_key)
    assert report.ok and report.closed_cleanly


def test_checkpoint_every_n_and_on_close(log_path: Path, key: SigningKey) -> None:
    log = AuditLog(log_path, key, DEVICE, checkpoint_every=4)
    for i in range(10):
        log.append(EventId.STATION_PAUSED, reason=f"r{i}")
    # After entries 4 and 8 (the checkpoints are entries 5 and 10).
    assert log.count(EventId.AUDIT_CHECKPOINT) == 2
    cps = [e for e in log.entries() if e.event is EventId.AUDIT_CHECKPOINT]
    assert [(e.seq, e.fields["upto_seq"], e.fields["final"]) for e in cps] == [
        (5, 4, False), (10, 9, False),
    ]  # fmt: skip
    mid = verify_chain(log_path, key.verify_key)
    assert mid.ok and not mid.closed_cleanly and mid.unsigned_tail == 2
    log.close()
    log.close()  # idempotent
    report = verify_chain(log_path, key.verify_key)
    assert report.ok and report.closed_cleanly and report.unsigned_tail == 0
    assert report.checkpoints == 3 and report.entries == 13
    assert report.signed_through == 12


def test_field_validation_writes_nothing(log_path: Path, key: SigningKey) -> None:
    with AuditLog(log_path, key, DEVICE) as log:
        with pytest.raises(EventFieldError, match="slip_serial: required"):
            log.append(EventId.VOTER_NOT_IDENTIFIED, attempt_id=1, attempts=3)
        with pytest.raises(EventFieldError, match="voter_name: field not declared"):
            log.append(EventId.SLIP_PENDING, slip_serial=SERIAL, slip_kind="identified",
                       voter_name="ASANOV")  # fmt: skip
        with pytest.raises(EventFieldError, match="method: 'fingerprint' is not one of"):
            log.append(EventId.VOTER_IDENTIFIED, attempt_id=1, method="fingerprint",
                       slip_serial=SERIAL, score_band="high")  # fmt: skip
        with pytest.raises(EventFieldError, match="attempts: must be an int"):
            log.append(EventId.VOTER_NOT_IDENTIFIED, attempt_id=1, slip_serial=SERIAL,
                       attempts=True)  # fmt: skip
        with pytest.raises(EventFieldError, match="is not a valid serial"):
            log.append(EventId.SLIP_REPRINTED, slip_serial="Асанов Бакыт", reason="paper-out")
        with pytest.raises(EventFieldError, match="written by the log itself"):
            log.append(EventId.AUDIT_CHECKPOINT, upto_seq=0, upto_hash=GENESIS_HASH,
                       signature="00" * 64, final=False)  # fmt: skip
        with pytest.raises(EventFieldError, match="by EventId"):
            log.append("station-opened", roll_hash="ab" * 32)  # type: ignore[arg-type]
        log.append(EventId.MANUAL_DECISION, decision="admit", slip_serial=SERIAL)
        log.append(EventId.MANUAL_DECISION, decision="refuse", slip_serial=SERIAL,
                   akt_number="7/2026")  # fmt: skip
        assert log.head_seq == 2


def test_wrong_device_refused(log_path: Path, key: SigningKey) -> None:
    AuditLog(log_path, key, DEVICE).close()
    with pytest.raises(AuditError, match="belongs to device 'kiosk-01'"):
        AuditLog(log_path, key, "kiosk-02")


def test_not_a_database_is_a_typed_error(tmp_path: Path, key: SigningKey) -> None:
    junk = tmp_path / "audit.sqlite"
    junk.write_bytes(b"this is not sqlite" * 300)
    with pytest.raises(AuditError, match="cannot open audit log"):
        AuditLog(junk, key, DEVICE)


def test_failed_write_leaves_the_log_consistent(log_path: Path, key: SigningKey) -> None:
    """A commit that fails (here: the write lock is held elsewhere) writes nothing."""
    log = AuditLog(log_path, key, DEVICE, lock_timeout_s=0.05)
    log.append(EventId.STATION_RESUMED)
    head = log.head_hash
    blocker = sqlite3.connect(log_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(AuditError, match="not written"):
        log.append(EventId.STATION_PAUSED, reason="power")
    blocker.execute("ROLLBACK")
    blocker.close()
    assert log.head_hash == head and log.count(EventId.STATION_PAUSED) == 0
    entry = log.append(EventId.STATION_PAUSED, reason="power")
    assert entry.seq == 2 and entry.prev == head
    log.close()
    assert verify_chain(log_path, key.verify_key).ok


def test_triggers_refuse_rewrites_through_sqlite(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key, n=3)
    con = sqlite3.connect(log_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM audit WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE audit SET body = '{}' WHERE seq = 1")
    con.close()


def test_concurrent_appends_keep_one_chain(log_path: Path, key: SigningKey) -> None:
    log = AuditLog(log_path, key, DEVICE, checkpoint_every=7)

    def worker(k: int) -> None:
        for i in range(25):
            log.append(EventId.CAPTURE_REJECTED, attempt_id=k * 100 + i + 1, quality=10,
                       reason="too-few-minutiae")  # fmt: skip

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count(EventId.CAPTURE_REJECTED) == 100
    log.close()
    report = verify_chain(log_path, key.verify_key)
    assert report.ok and report.entries == 100 + 100 // 7 + 1


def test_corrupt_head_refuses_to_chain(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key, n=3)
    last = rows(log_path)[-1]
    tamper(log_path, ("UPDATE audit SET hash = ? WHERE seq = ?", ("0" * 64, last[0])))
    with pytest.raises(AuditCorruptError, match=f"head entry {last[0]}"):
        AuditLog(log_path, key, DEVICE)


# ------------------------------------------------------------- power loss

_WRITER = """
import sys
from nacl.signing import SigningKey
from agent.audit.log import AuditLog
from agent.audit.events import EventId
log = AuditLog(sys.argv[1], SigningKey(bytes.fromhex(sys.argv[2])), "kiosk-01",
               checkpoint_every=5)
i = 0
while True:
    i += 1
    e = log.append(EventId.SLIP_PENDING, slip_serial=f"K01-{i:06d}", slip_kind="identified")
    print(i, e.seq, flush=True)
"""


def test_sigkill_then_torn_wal_tail_recovers(log_path: Path, key: SigningKey) -> None:
    """Kill a writer mid-stream, tear the WAL's last frame, reopen: every acked entry is there."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(log_path), bytes(key).hex()],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    acked = 0
    for line in proc.stdout:
        acked = int(line.split()[0])
        if acked >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wal = log_path.with_name(log_path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    # A power cut in the middle of the next commit: a partial frame at the end.
    with wal.open("ab") as fh:
        fh.write(os.urandom(1500))
    log = AuditLog(log_path, key, DEVICE, checkpoint_every=5)
    assert not log.previous_close_clean
    pending = log.count(EventId.SLIP_PENDING)
    assert pending >= acked  # nothing acknowledged was lost
    log.append(EventId.AGENT_STARTED, software_version="0.1.0", boot_count=2,
               clean_previous_stop=False)  # fmt: skip
    log.close()
    report = verify_chain(log_path, key.verify_key)
    assert report.ok and report.closed_cleanly, report.summary()


# ------------------------------------------------------------------ tampering


def test_altered_entry_is_pinpointed(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    seq, body, _ = started_row(log_path, 10)
    forged = body.replace('"lookup":"none"', '"lookup":"mrz"')
    assert forged != body
    tamper(log_path, ("UPDATE audit SET body = ? WHERE seq = ?", (forged, seq)))
    report = verify_chain(log_path, key.verify_key)
    assert not report.ok and report.problem is AuditProblem.ALTERED
    assert report.first_bad_seq == seq and report.head_seq == seq - 1


def test_altered_and_rehashed_entry_breaks_the_link(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    seq, body, _ = started_row(log_path, 10)
    forged = body.replace('"lookup":"none"', '"lookup":"mrz"')
    tamper(
        log_path,
        ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?",
         (forged, entry_hash(forged.encode()), seq)),
    )  # fmt: skip
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.ALTERED and report.first_bad_seq == seq


def test_rewritten_history_is_caught_by_the_checkpoint(log_path: Path, key: SigningKey) -> None:
    """Rewrite an entry and re-hash the whole rest of the chain: the signature catches it."""
    make_log(log_path, key, n=20, every=8)
    all_rows = rows(log_path)
    first_cp, second_cp = checkpoint_seqs(log_path)[:2]
    target = started_row(log_path, first_cp)[0]
    statements: list[tuple[str, tuple[object, ...]]] = []
    prev = all_rows[target - 2][2]
    for seq, text, _ in all_rows[target - 1 :]:
        body = json.loads(text)
        if seq == target:
            body["fields"]["lookup"] = "typed"
        body["prev"] = prev
        if body["event"] == "audit-checkpoint":
            body["fields"]["upto_hash"] = prev  # cannot re-sign without the key
        canon = canonical_bytes(body)
        prev = entry_hash(canon)
        statements.append(
            ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?", (canon.decode(), prev, seq))
        )
    tamper(log_path, *statements)
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.FORGED_CHECKPOINT
    assert report.first_bad_seq == second_cp and report.signed_through == first_cp - 1


def test_removed_entry(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    tamper(log_path, ("DELETE FROM audit WHERE seq = ?", (7,)))
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.REMOVED and report.first_bad_seq == 7


def test_removed_and_renumbered(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    n = len(rows(log_path))
    tamper(
        log_path,
        ("DELETE FROM audit WHERE seq = ?", (7,)),
        ("UPDATE audit SET seq = seq - 1 WHERE seq > ?", (7,)),
    )
    assert len(rows(log_path)) == n - 1
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.REMOVED and report.first_bad_seq == 7


def test_reordered_entries(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    r = rows(log_path)
    a, b = r[4], r[5]
    tamper(
        log_path,
        ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?", (b[1], b[2], a[0])),
        ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?", (a[1], a[2], b[0])),
    )
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.REORDERED and report.first_bad_seq == a[0]


def test_truncation_against_the_printed_head(log_path: Path, key: SigningKey) -> None:
    hashes = make_log(log_path, key)
    printed_head = hashes[-1]
    assert verify_chain(log_path, key.verify_key, expected_head=printed_head).ok
    # Cut back to the first checkpoint: the rest verifies, but the anchor is gone.
    tamper(log_path, ("DELETE FROM audit WHERE seq > ?", (9,)))
    assert verify_chain(log_path, key.verify_key).ok
    report = verify_chain(log_path, key.verify_key, expected_head=printed_head)
    assert report.problem is AuditProblem.TRUNCATED and report.first_bad_seq == 10


def test_forged_checkpoint_and_wrong_key(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key)
    other = SigningKey.generate()
    wrong = verify_chain(log_path, other.verify_key)
    assert wrong.problem is AuditProblem.FORGED_CHECKPOINT and wrong.first_bad_seq == 9
    seq, text, _ = rows(log_path)[8]
    body = json.loads(text)
    body["fields"]["final"] = True  # flip a signed flag without re-signing
    canon = canonical_bytes(body)
    tamper(
        log_path,
        ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?",
         (canon.decode(), entry_hash(canon), seq)),
    )  # fmt: skip
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.FORGED_CHECKPOINT and report.first_bad_seq == seq


def test_not_a_log_and_missing_file(tmp_path: Path, key: SigningKey) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(os.urandom(4096))
    assert verify_chain(junk, key.verify_key).problem is AuditProblem.UNREADABLE
    with pytest.raises(AuditError, match="no audit log"):
        verify_chain(tmp_path / "absent", key.verify_key)


def test_malformed_body(log_path: Path, key: SigningKey) -> None:
    make_log(log_path, key, n=3)
    seq, text, _ = rows(log_path)[1]
    spaced = json.dumps(json.loads(text))  # same data, not canonical
    tamper(log_path, ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?",
                      (spaced, entry_hash(spaced.encode()), seq)))  # fmt: skip
    report = verify_chain(log_path, key.verify_key)
    assert report.problem is AuditProblem.MALFORMED and report.first_bad_seq == seq


# ------------------------------------------------------------------------- CLI


def test_cli_verify_and_show(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.runtime.keys import generate_keys

    keys = generate_keys(tmp_path / "keys")
    state = tmp_path / "state"
    make_log(state / AUDIT_FILE, keys.signing, n=5)
    base = ["--state-dir", str(state)]
    assert audit_cli(["verify", *base, "--key-dir", str(tmp_path / "keys")]) == 0
    verdict, technical = capsys.readouterr().out.splitlines()
    assert verdict == "Журнал бүтүн, туура жабылган / Журнал цел, закрыт штатно"
    assert technical.startswith("OK: ")
    assert audit_cli(["verify", *base, "--verify-key", keys.verify_key_hex, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["closed_cleanly"] is True
    assert audit_cli(["verify", *base, "--verify-key", bytes(key.verify_key).hex()]) == 1
    assert "FAILED at entry 8: forged-checkpoint" in capsys.readouterr().out
    assert audit_cli(["show", *base, "--event", "voter-identified", "--last", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "voter-identified" in out[0] and "slip_serial=K01-000003" in out[0]
    assert audit_cli(["verify", "--state-dir", str(tmp_path / "nowhere"),
                      "--verify-key", keys.verify_key_hex]) == 2  # fmt: skip
    assert audit_cli(["frobnicate"]) == 2


# -------------------------------------------------------------- property


@pytest.fixture(scope="module")
def sealed_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey, str]:
    """One closed log (built once: every append is fsynced) and its head hash."""
    key = SigningKey.generate()
    path = tmp_path_factory.mktemp("sealed") / AUDIT_FILE
    hashes = make_log(path, key, n=12, every=5)
    return path, key, hashes[-1]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rehash=st.booleans())
def test_any_single_edit_is_detected(
    sealed_log: tuple[Path, SigningKey, str], data: st.DataObject, rehash: bool
) -> None:
    """Change one character of one stored entry (re-hashing it or not): verification
    against the printed head fails, at that entry unless it is the head itself."""
    src, key, head = sealed_log
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / AUDIT_FILE
        shutil.copy(src, path)
        all_rows = rows(path)
        seq, body, _ = data.draw(st.sampled_from(all_rows))
        pos = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        new = data.draw(st.sampled_from('0123456789abcdef{}":,x').filter(lambda c: c != body[pos]))
        edited = body[:pos] + new + body[pos + 1 :]
        stmt = (
            ("UPDATE audit SET body = ?, hash = ? WHERE seq = ?",
             (edited, entry_hash(edited.encode("utf-8")), seq))
            if rehash
            else ("UPDATE audit SET body = ? WHERE seq = ?", (edited, seq))
        )  # fmt: skip
        tamper(path, stmt)
        report = verify_chain(path, key.verify_key, expected_head=head)
    assert not report.ok
    assert report.first_bad_seq is not None
    if seq < len(all_rows):
        assert report.first_bad_seq <= seq


def test_cli_anchor_strict_and_file(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "copy.sqlite"
    hashes = make_log(path, key, n=4)
    vk = ["--verify-key", bytes(key.verify_key).hex(), "--file", str(path)]
    assert audit_cli(["verify", *vk, "--expect-head", hashes[-1], "--strict"]) == 0
    assert audit_cli(["verify", *vk, "--expect-head", "f" * 64]) == 1
    assert "truncated" in capsys.readouterr().out
    log = AuditLog(path, key, DEVICE)
    log.append(EventId.STATION_RESUMED)
    # Still open (as after a crash): verifies, but --strict wants a clean close.
    assert audit_cli(["verify", *vk]) == 0
    assert "NOT closed cleanly, 1 entry(ies)" in capsys.readouterr().out
    assert audit_cli(["verify", *vk, "--strict"]) == 1
    log.close()
    assert audit_cli(["verify", *vk, "--verify-key", "zz"]) == 2
