"""systemd/kesp-ops.service: verifies, exposure <= 2.0, and kesp-ops accepts its command line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from systemd_units import analyze_verify, exposure, settings, weakened

from ops.cli import _parser

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "kesp-ops.service"
OPS_BIN = Path(sys.executable).with_name("kesp-ops")
MAX_EXPOSURE = 2.0
ENV = {"${KESP_OPS_STORE}": "postgresql://ops@db/kesp", "${KESP_OPS_BROKER}": "mqtts://b:8883",
       "${KESP_OPS_CLIENT_ID}": "ops-1", "${CREDENTIALS_DIRECTORY}": "/run/credentials/x"}

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (CI installs systemd)")


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's kesp-ops (verify stats it)."""
    text = UNIT.read_text() if text is None else text
    path = tmp_path / UNIT.name
    path.write_text(text.replace("/opt/kesp/venv/bin/kesp-ops", str(OPS_BIN)))
    return path


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    proc = analyze_verify(local_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "kesp-ops.service" not in proc.stderr, proc.stderr


@needs_analyze
def test_exposure_at_most_2() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    assert exposure(weakened(UNIT, tmp_path, ("DynamicUser",))) > MAX_EXPOSURE


def test_unit_hardening_and_secrets() -> None:
    s = settings(UNIT.read_text())
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
                       ("DynamicUser", "yes"), ("MemoryDenyWriteExecute", "yes"),
                       ("Restart", "always"), ("LimitCORE", "0")]:
        assert s[key] == [value], key
    creds = {v.split(":", 1)[0] for v in s["LoadCredential"]}
    assert creds == {"ops.sign", "publish.sign", "broker.password", "ca.pem"}
    argv = s["ExecStart"][0]
    assert "--bind 127.0.0.1" in argv  # the dashboard is reached through the reverse proxy
    for secret in creds:
        assert f"${{CREDENTIALS_DIRECTORY}}/{secret}" in argv  # never a path in /etc


def test_execstart_is_accepted_by_the_ops_cli() -> None:
    argv = settings(UNIT.read_text())["ExecStart"][0].split()
    assert argv[0] == "/opt/kesp/venv/bin/kesp-ops"
    args = []
    for word in argv[1:]:
        for var, value in ENV.items():
            word = word.replace(var, value)  # noqa: PLW2901 - expanding in place
        args.append(word)
    assert not [a for a in args if "${" in a]
    ns = _parser().parse_args(args)
    assert (ns.command, ns.bind, ns.port) == ("serve", "127.0.0.1", 9108)
    assert str(ns.publish_key) == "/run/credentials/x/publish.sign"
