"""Fixtures for provisioning tests: CEC keys, a registry, provisioned kiosks."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiosk_helpers import ME, Kiosk, MakeKiosk, ok


@pytest.fixture
def cec(tmp_path: Path) -> Path:
    """A CEC key directory with cec.sign and cec.pub."""
    ok("cec", "keygen", "--out-dir", tmp_path / "cec")
    return tmp_path / "cec"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "ops" / "registry.json"


@pytest.fixture
def make_kiosk(tmp_path: Path, cec: Path, registry: Path) -> MakeKiosk:
    """init + request (+ ops register) a kiosk under tmp_path/<device_id>."""

    def make(device_id: str, station: str = "s-1017", district: str = "osh-city", *,
             broker: str = "mqtt://127.0.0.1:1", register: bool = True,
             extra: tuple[str, ...] = ()) -> Kiosk:
        root = tmp_path / device_id
        ok("device", "init", "--device-id", device_id, "--station", station,
           "--district", district, "--broker", broker, "--cec-key", cec / "cec.pub",
           "--config-dir", root / "etc", "--state-dir", root / "var", "--user", ME, *extra)
        req = root / "request.json"
        ok("device", "request", "--config-dir", root / "etc", "--out", req, "--no-qr")
        if register:
            ok("ops", "register", req, "--registry", registry)
        return Kiosk(device_id, station, root / "etc", root / "var", req)

    return make
