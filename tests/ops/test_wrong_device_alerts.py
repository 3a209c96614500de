"""A kiosk reporting a wrong device (another sensor or printer) raises the missing-device alerts."""

from __future__ import annotations

from ops.alerts import SEVERE, AlertKind, device_alerts
from ops.parameters import BoardTuning, OpsTuning
from ops.store import DeviceState


def test_wrong_device_states_alert_as_missing_devices() -> None:
    now = 1_800_000_000_000
    d = DeviceState("k-1", "s-1", "d-1", online=True, last_seen_ms=now, birth_boot=1,
                    death_boot=0, max_n=3, contig_n=3, birth_last_n=0, oldest_n=0, lost_n=0,
                    skew_ms=0, health={"app": {"printer": "wrong-device",
                                               "sensor": {"status": "wrong-device"}}},
                    health_ms=now)
    kinds = {a.kind: a.detail for a in device_alerts(d, now, BoardTuning(), OpsTuning())}
    assert kinds == {AlertKind.PRINTER_MISSING: "printer wrong-device",
                     AlertKind.SENSOR_MISSING: "sensor wrong-device"}
    assert set(kinds) <= SEVERE
