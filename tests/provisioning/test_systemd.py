"""systemd/: the unit verifies, is hardened to exposure <= 2.0, and its helpers work offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systemd_units import analyze_verify, exposure, settings, weakened

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "kesp-agent.service"
AGENT_BIN = Path(sys.executable).with_name("kesp-agent")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (CI installs systemd)")


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's kesp-agent (verify stats it)."""
    text = UNIT.read_text() if text is None else text
    local = text.replace("/opt/kesp/venv/bin/kesp-agent", str(AGENT_BIN))
    changed = [a for a, b in zip(text.splitlines(), local.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0].startswith("ExecStart=")
    path = tmp_path / UNIT.name
    path.write_text(local)
    return path


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    proc = analyze_verify(local_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "kesp-agent.service" not in proc.stderr, proc.stderr  # no warnings about our unit


@needs_analyze
def test_unit_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = local_copy(tmp_path, UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    proc = analyze_verify(broken)
    # systemd-analyze exits 0 on a bad value and only warns: the warning is what
    # test_unit_verifies rules out.
    assert "kesp-agent.service:" in proc.stderr and "Failed to parse service type" in proc.stderr


@needs_analyze
def test_exposure_at_most_2() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """Dropping the filesystem and privilege hardening pushes the score over the bar."""
    assert exposure(weakened(UNIT, tmp_path)) > MAX_EXPOSURE


def test_unit_has_what_the_issue_requires() -> None:
    s = settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["Restart"] == ["always"]
    assert s["WatchdogSec"] and s["User"] == ["kesp"] and s["Group"] == ["kesp"]
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"),
                       ("CapabilityBoundingSet", ""), ("DevicePolicy", "closed")]:
        assert s[key] == [value], key
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert {"/dev/kesp-sensor", "/dev/kesp-printer", "/dev/kesp-docreader"} <= allowed
    assert not allowed & {"/dev/mem", "char-*", "block-*"}
    writable = s["ReadWritePaths"][0].split()
    assert "/var/lib/kesp" in writable
    assert s["MemoryMax"]
    env = dict(e.split("=", 1) for e in s["Environment"])
    cache = env["NUMBA_CACHE_DIR"]
    assert any(cache.startswith(w + "/") for w in writable), cache
    assert s["RestartPreventExitStatus"] == ["78"]
    assert s["LimitCORE"] == ["0"]


def test_the_image_waits_for_time_sync_but_not_for_ever() -> None:
    """After=time-sync.target only waits for NTP when systemd-time-wait-sync is enabled;
    its wait is bounded so a station with no network still starts (issue 20)."""
    s = settings(UNIT.read_text())
    assert any("time-sync.target" in v for v in s["After"])
    recipe = (UNIT.parents[1] / "images" / "customize.sh").read_text()
    enable = recipe.split("systemctl --root=")[1].split("\n\n")[0]
    assert "systemd-time-wait-sync.service" in enable
    dropin = (UNIT.parents[1] / "images" / "files" / "systemd"
              / "systemd-time-wait-sync.service.d" / "kesp.conf")
    assert dropin.name in recipe and str(dropin.parent.name) in recipe
    conf = settings(dropin.read_text())
    # The wait ends by timeout(1) after 90 s, which counts as success (a start
    # time-out of the unit would leave it failed and the system "degraded");
    # the unit's own time-out is only a backstop above it.
    assert conf["ExecStart"] == ["", "/usr/bin/timeout 90s /lib/systemd/systemd-time-wait-sync"]
    assert conf["SuccessExitStatus"] == ["124"]
    assert conf["TimeoutStartSec"] == ["120s"]


def test_execstart_is_accepted_by_the_agent_cli(tmp_path: Path) -> None:
    """The unit's command line parses, and a missing config gives 78 (no restart loop)."""
    argv = settings(UNIT.read_text())["ExecStart"][0].split()
    assert argv[0] == "/opt/kesp/venv/bin/kesp-agent"
    args = [a if a != "/etc/kesp/agent.json" else str(tmp_path / "missing.json")
            for a in argv[1:]]
    proc = subprocess.run([str(AGENT_BIN), *args], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 78, proc.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None
                    or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/tmpfiles missing")
def test_sysusers_and_tmpfiles_create_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(["systemd-sysusers", f"--root={root}", str(SYSTEMD / "kesp.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    passwd = (root / "etc" / "passwd").read_text()
    m = re.search(r"^kesp:x:(\d+):(\d+):[^:]*:/var/lib/kesp:/usr/sbin/nologin$", passwd, re.M)
    assert m, passwd
    uid = int(m.group(1))
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}",
                    str(SYSTEMD / "kesp.tmpfiles.conf")], check=True, capture_output=True,
                   timeout=60)
    for rel, mode, owner in [("etc/kesp", 0o755, 0), ("etc/kesp/keys", 0o700, uid),
                             ("var/lib/kesp", 0o750, uid), ("var/cache/kesp/numba", 0o750, uid)]:
        st = (root / rel).stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (mode, owner), rel


_RULE_KEY = re.compile(
    r'^(?P<key>[A-Z]+(?:\{[A-Za-z_]+\})?)(?P<op>==|!=|\+=|=|:=)"(?P<val>[^"]*)"$'
)


def parse_rules(text: str) -> list[dict[str, tuple[str, str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rule: dict[str, tuple[str, str]] = {}
        for part in (p.strip() for p in line.split(",")):
            m = _RULE_KEY.match(part)
            assert m, f"malformed udev rule part {part!r} in {line!r}"
            rule[m["key"]] = (m["op"], m["val"])
        rules.append(rule)
    return rules


def test_udev_rules_name_every_supported_device() -> None:
    rules = parse_rules((SYSTEMD / "99-kesp.rules").read_text())
    by_name: dict[str, set[str]] = {}
    for r in rules:
        if "SYMLINK" not in r:
            continue
        assert r["SYMLINK"][0] == "+="
        assert r["GROUP"] == ("=", "kesp") and r["MODE"] == ("=", "0660"), r
        vendor = r.get("ATTRS{idVendor}") or r.get("ATTR{idVendor}")
        assert vendor is not None and vendor[0] == "==", r
        product = r.get("ATTRS{idProduct}") or r.get("ATTR{idProduct}")
        by_name.setdefault(r["SYMLINK"][1], set()).add(
            vendor[1] + (":" + product[1] if product else ""))
    assert {"1a86:7523", "10c4:ea60", "298d:1010", "08ff:5731"} <= by_name["kesp-sensor"]
    assert {"0403:6001", "04b8"} <= by_name["kesp-printer"]
    assert by_name["kesp-docreader"]
    # No bridge may give two names: the mapping must be unambiguous.
    seen: dict[str, str] = {}
    for name, ids in by_name.items():
        for i in ids:
            assert seen.setdefault(i, name) == name, f"{i} named both {seen[i]} and {name}"
