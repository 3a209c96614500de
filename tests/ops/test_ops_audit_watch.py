"""The audit-chain watch: real audit entries, out of order, re-read, altered, forged checkpoints."""

from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey
from ops_helpers import signed

from agent.audit.event_ids import EventId
from agent.audit.log import CHECKPOINT_EVERY, AuditLog
from ops.audit_watch import AuditWatch
from ops.board import refresh_audit
from ops.registry import load_registry, register_device
from ops.service import OpsService

KEY = SigningKey.generate()
PLACE = ("osh", "osh-1")


def _log(tmp: Path, entries: int) -> list[dict[str, object]]:
    log = AuditLog(tmp / "audit.sqlite", KEY, "k-1")
    for i in range(entries):
        if i % 10 == 3:
            log.append(EventId.MARK_CONFLICT, slip_serial=f"K01-{i:06d}", mark_kiosk="k-2",
                       mark_seq=i, peer="k-2")
        else:
            log.append(EventId.SLIP_PRINTED, slip_serial=f"K01-{i:06d}", slip_kind="identified",
                       duplicate=False)
    out = [e.to_payload() for e in log.entries()]
    log.close()
    return out


def _ingest(tmp: Path, payloads: list[tuple[int, dict[str, object]]]) -> OpsService:
    reg = tmp / "devices.json"
    if not reg.exists():
        register_device(reg, "k-1", PLACE[1], PLACE[0], bytes(KEY.verify_key).hex())
    svc = OpsService("mqtt://127.0.0.1:1", reg, str(tmp / "ops.sqlite"))
    msgs = [signed(KEY, PLACE, "k-1", n, "event", p) for n, p in payloads]
    assert set(svc.process_messages(msgs)) == {"accepted"}
    return svc


def test_chain_checked_across_late_arrivals_and_rereads(tmp_path: Path) -> None:
    entries = _log(tmp_path, 2 * CHECKPOINT_EVERY + 5)  # with real signed checkpoints
    numbered = list(enumerate(entries, start=1))
    held_back = numbered[10:14]  # delivered late, after newer ones (a resend)
    svc = _ingest(tmp_path, [x for x in numbered if x not in held_back])
    registry = load_registry(tmp_path / "devices.json")
    watch = AuditWatch()
    refresh_audit(svc.store, registry, watch, 20_000)
    facts = watch.facts["k-1"]
    assert watch.checked_through("k-1") == 10  # waits at the gap, no false alarm
    assert facts.audit_problem is None
    svc.process_messages([signed(KEY, PLACE, "k-1", n, "event", p) for n, p in held_back])
    refresh_audit(svc.store, registry, watch, 20_000)  # the late ones trigger a re-read
    assert watch.checked_through("k-1") == len(entries)
    assert facts.audit_problem is None and watch.behind == 0
    conflicts = sum(1 for e in entries if e["event"] == "mark-conflict")
    assert facts.conflicts == conflicts  # read twice, counted once
    svc.store.close()


def test_altered_entry_and_forged_checkpoint_are_found(tmp_path: Path) -> None:
    entries = _log(tmp_path, CHECKPOINT_EVERY + 3)
    checkpoint = next(i for i, e in enumerate(entries) if e["event"] == "audit-checkpoint")
    forged = dict(entries[checkpoint])
    forged_fields = dict(forged["fields"])  # type: ignore[call-overload]
    forged_fields["signature"] = SigningKey.generate().sign(b"x").signature.hex()
    forged["fields"] = forged_fields
    from agent.audit.log import canonical_bytes, entry_hash

    forged["hash"] = entry_hash(canonical_bytes({k: v for k, v in forged.items()
                                                 if k != "hash"}))
    svc = _ingest(tmp_path, [(i + 1, forged if i == checkpoint else e)
                             for i, e in enumerate(entries[:checkpoint + 1])])
    watch = AuditWatch()
    refresh_audit(svc.store, load_registry(tmp_path / "devices.json"), watch, 20_000)
    assert watch.facts["k-1"].audit_problem == (
        f"checkpoint {checkpoint + 1}: signature is not the kiosk's")
    svc.store.close()

    other = tmp_path / "other"
    other.mkdir()
    altered = [dict(e) for e in entries[:5]]
    altered[2]["ts"] = "2020-01-01T00:00:00.000Z"
    svc = _ingest(other, list(enumerate(altered, start=1)))
    watch = AuditWatch()
    refresh_audit(svc.store, load_registry(other / "devices.json"), watch, 20_000)
    assert watch.facts["k-1"].audit_problem == "entry 3: hash does not match its body (altered)"
    assert watch.checked_through("k-1") == 2
    svc.store.close()


def test_peer_trust_refusals_raise_rogue_mark_alerts(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite", KEY, "k-1")
    log.append(EventId.MARK_QUARANTINED, peer="k-2", mark_kiosk="k-2", mark_seq=7,
               ahead_ms=315_360_000_000)
    log.append(EventId.PEER_RATE_EXCEEDED, mark_kiosk="k-2", marks_in_window=5_000, window_s=300)
    log.append(EventId.SLIP_PRINTED, slip_serial="K01-000001", slip_kind="identified",
               duplicate=False)
    entries = [e.to_payload() for e in log.entries()]
    log.close()
    svc = _ingest(tmp_path, list(enumerate(entries, start=1)))
    watch = AuditWatch()
    refresh_audit(svc.store, load_registry(tmp_path / "devices.json"), watch, 20_000)
    facts = watch.facts["k-1"]
    assert facts.rogue_marks == 2 and facts.conflicts == 0
    assert facts.audit_problem is None
    svc.store.close()
