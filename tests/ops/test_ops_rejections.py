"""Verification verdicts and their reasons, through the same path the MQTT loop uses."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest
from nacl.signing import SigningKey

from agent.telemetry.envelope import Envelope, seal
from ops.alerts import AlertKind, device_alerts
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import register_device, revoke_device
from ops.service import OpsService
from ops.store import PostgresStore, StateStore, open_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEV_KEY = SigningKey(bytes(range(1, 33)))


def _now() -> int:
    return time.time_ns() // 1_000_000


def _msg(n: int, *, kind: str = "turnout", key: SigningKey = DEV_KEY, device: str = "k-1",
         sent: int | None = None, payload: dict[str, object] | None = None,
         hist: bool = False) -> tuple[str, bytes, int]:
    now = _now()
    p = payload if payload is not None else {"identified": n, "refused": 0,
                                             "not_identified": 0, "manual": 0,
                                             "by_hour": {"09": n}}
    env = Envelope(device=device, station="st-1", district="d-1", boot=1, seq=n % 256, n=n,
                   wall_ms=now, mono_ms=1, sent_ms=sent or now, type=kind,  # type: ignore[arg-type]
                   historical=hist, payload=p)
    return env.topic, seal(env, key), now


def _service(tmp_path: Path, store: str | StateStore) -> OpsService:
    reg = tmp_path / "devices.json"
    register_device(reg, "k-1", "st-1", "d-1", bytes(DEV_KEY.verify_key).hex())
    # Not started: process_messages runs the verification/storage path directly.
    return OpsService("mqtt://127.0.0.1:1", reg, store,
                      tuning=OpsTuning(skew_alert_s=30))


def test_every_rejection_reason(tmp_path: Path) -> None:
    svc = _service(tmp_path, str(tmp_path / "ops.sqlite"))
    good = _msg(1)
    topic, data, now = good
    altered = bytearray(data)
    altered[-5] ^= 0x20  # flip a bit inside the signed body
    stranger = SigningKey.generate()
    register_device(svc.registry_path, "k-9", "st-1", "d-1", bytes(stranger.verify_key).hex())
    revoke_device(svc.registry_path, "k-9", "stolen")
    cases = [
        (good, "accepted"),
        (good, "duplicate"),  # QoS 1 redelivery / replay of the same bytes
        (_msg(1, sent=_now() + 5), "duplicate"),  # re-signed republish of counter 1
        ((topic, bytes(altered), now), "bad_signature"),
        (_msg(2, key=stranger), "bad_signature"),  # forged: someone else's key
        (_msg(3, device="k-404"), "unknown_device"),
        (_msg(4, device="k-9", key=stranger), "revoked_device"),
        (("kesp/v1/d-1/st-1/k-1/weather", data, now), "bad_topic"),
        (("kesp/v1/d-1/st-2/k-1/turnout", data, now), "topic_mismatch"),
        (("kesp/v1/d-1/st-1/k-1/event", data, now), "topic_mismatch"),
        ((topic, b"\x00" * 17_000, now), "oversized"),
        ((topic, b"garbage", now), "malformed"),
        ((topic, DEV_KEY.sign(b"{not json").signature + b"{not json", now), "malformed"),
        (_msg(7, payload={"identified": -1, "refused": 0, "not_identified": 0, "manual": 0}),
         "bad_payload"),
        (_msg(8, kind="event", payload={"detail": "no event id"}), "bad_payload"),
        (_msg(9, kind="event", payload={"event": "slip.printed"}, hist=True), "accepted"),
    ]
    got = svc.process_messages([m for m, _ in cases])
    assert got == [want for _, want in cases]
    stats = svc.stats()
    assert stats.accepted == 2
    assert stats.rejected == {
        "bad_payload": 2, "bad_signature": 2, "bad_topic": 1, "duplicate": 2, "malformed": 2,
        "oversized": 1, "revoked_device": 1, "topic_mismatch": 2,
        "unknown_device": 1,
    }
    # ops keeps running: later good messages are still accepted
    assert svc.process_messages([_msg(10)]) == ["accepted"]
    assert svc.turnout().by_device["k-1"].identified == 10
    assert [n for n, _, _ in svc.store.events("k-1")] == [9]
    svc.store.close()


def test_latest_cumulative_wins_whatever_the_arrival_order(tmp_path: Path) -> None:
    svc = _service(tmp_path, str(tmp_path / "ops.sqlite"))
    assert svc.process_messages([_msg(5), _msg(3), _msg(4)]) == ["accepted"] * 3
    assert svc.turnout().by_device["k-1"].identified == 5
    assert svc.turnout().by_district["d-1"].by_hour == {"09": 5}
    svc.store.close()


@pytest.fixture
def pg_prefix() -> str:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    return f"t{uuid.uuid4().hex[:10]}_"


def test_postgres_store_shared_by_two_instances(tmp_path: Path, pg_prefix: str) -> None:
    a = open_store(PG_URL, prefix=pg_prefix, instance="ops-a", create=True)
    b = open_store(PG_URL, prefix=pg_prefix, instance="ops-b", create=True)
    try:
        svc_a, svc_b = _service(tmp_path, a), _service(tmp_path, b)
        m1, m2, m3 = _msg(1), _msg(2), _msg(3)
        assert svc_a.process_messages([m1, m2]) == ["accepted", "accepted"]
        # the replay reaches the other instance: still refused
        assert svc_b.process_messages([m2, m3, m1]) == ["duplicate", "accepted", "duplicate"]
        for svc in (svc_a, svc_b):
            stats = svc.stats()  # summed over both instances
            assert (stats.accepted, stats.rejected) == (3, {"duplicate": 2})
            assert svc.turnout().by_station["st-1"].identified == 3
        assert b.advance_contiguous("k-1") == (3, 3)
    finally:
        assert isinstance(a, PostgresStore)
        a.drop()
        a.close()
        b.close()


def test_birth_death_session_state(tmp_path: Path) -> None:
    svc = _service(tmp_path, str(tmp_path / "ops.sqlite"))

    def session(kind: str, boot: int) -> tuple[str, bytes, int]:
        now = _now()
        env = Envelope(device="k-1", station="st-1", district="d-1", boot=boot, seq=0, n=0,
                       wall_ms=now, mono_ms=1, sent_ms=now, type=kind,  # type: ignore[arg-type]
                       historical=False, payload={"bdseq": boot, "last_n": 0, "oldest_n": 1})
        return env.topic, seal(env, DEV_KEY), now

    assert svc.process_messages([session("birth", 1)]) == ["accepted"]
    assert svc.devices()[0].online
    # a late will of the previous session does not take the new session offline
    assert svc.process_messages([session("birth", 2), session("death", 1)]) == ["accepted"] * 2
    assert svc.devices()[0].online
    assert svc.process_messages([session("death", 2), session("death", 2)]) == [
        "accepted", "duplicate"]
    assert not svc.devices()[0].online
    svc.store.close()


def test_a_kiosk_with_a_skewed_clock_is_counted_and_alerted_never_dropped(
    tmp_path: Path,
) -> None:
    """Three signed turnout messages 6 min in the future (#20): counted, listed, clock alert."""
    svc = _service(tmp_path, str(tmp_path / "ops.sqlite"))
    ahead = _now() + 6 * 60_000
    got = svc.process_messages([_msg(n, sent=ahead + n) for n in (1, 2, 3)])
    assert got == ["accepted"] * 3
    assert svc.turnout().by_device["k-1"].identified == 3
    (device,) = svc.devices()
    found = [a for a in device_alerts(device, _now(), BoardTuning(), svc.tuning)
             if a.kind is AlertKind.CLOCK_SKEW]
    assert [a.device for a in found] == ["k-1"]
    assert found[0].detail.startswith("kiosk clock +36")  # received 6 min before it was "sent"
    svc.store.close()


def test_the_will_of_a_long_session_still_ends_it(tmp_path: Path) -> None:
    """The death is signed at connect time: after 36 h of session it still counts."""
    svc = _service(tmp_path, str(tmp_path / "ops.sqlite"))
    connected = _now() - 37 * 3600_000

    def session(kind: str) -> tuple[str, bytes, int]:
        env = Envelope(device="k-1", station="st-1", district="d-1", boot=4, seq=0, n=0,
                       wall_ms=connected, mono_ms=1, sent_ms=connected,
                       type=kind,  # type: ignore[arg-type]
                       historical=False, payload={"bdseq": 4, "last_n": 0, "oldest_n": 1})
        return env.topic, seal(env, DEV_KEY), _now()

    assert svc.process_messages([session("birth")]) == ["accepted"]
    assert svc.devices()[0].online
    assert svc.process_messages([session("death")]) == ["accepted"]
    assert not svc.devices()[0].online
    svc.store.close()
