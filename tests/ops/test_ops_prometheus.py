"""Per-kiosk metrics, the alert rules (``promtool test rules``) and the Grafana dashboard.

``promtool`` (Debian package ``prometheus``, installed by ``.ci/run``) is
required: without it these tests fail and say so, they are not skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from ops_helpers import signed

from ops.alerts import AlertKind
from ops.audit_watch import AuditWatch
from ops.board import build_board
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import load_registry, register_device
from ops.report import load_zone
from ops.service import OpsService

RULES_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
KEYS = {d: SigningKey.generate() for d in ("k-1", "k-2", "k-3")}
PLACE = {"k-1": ("osh", "osh-1"), "k-2": ("osh", "osh-1"), "k-3": ("naryn", "nar-4")}
_METRIC_RE = re.compile(r"\b(kesp_[a-z_]+)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run installs it); "
                    "the alert rules cannot be tested without it")
    return found


def run(*args: str, stdin: str | None = None,
        cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=60, cwd=cwd)


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a store holding three kiosks: one healthy, one out of paper and skewed."""
    tmp = tmp_path_factory.mktemp("metrics")
    reg = tmp / "devices.json"
    for d, k in KEYS.items():
        register_device(reg, d, PLACE[d][1], PLACE[d][0], bytes(k.verify_key).hex())
    svc = OpsService("mqtt://127.0.0.1:1", reg, str(tmp / "ops.sqlite"))
    msgs = [signed(KEYS[d], PLACE[d], d, 0, "birth", {"bdseq": 1, "last_n": 0, "oldest_n": 1})
            for d in ("k-1", "k-2")]
    msgs += [signed(KEYS[d], PLACE[d], d, 1, "turnout",
                   {"identified": i, "refused": 0, "not_identified": 0, "manual": 0,
                    "by_hour": {"09": i}}) for d, i in (("k-1", 4), ("k-2", 6))]
    msgs.append(signed(KEYS["k-2"], PLACE["k-2"], "k-2", 2, "health",
                       {"app": {"printer": "paper-out", "sensor": "ready"}, "outbox_depth": 7}))
    topic, data, now = signed(KEYS["k-1"], PLACE["k-1"], "k-1", 2, "health",
                              {"app": {"printer": "ready"}, "outbox_depth": 0})
    msgs.append((topic, data, now + 120_000))  # received two minutes after it was sent
    assert svc.process_messages(msgs) == ["accepted"] * 6
    board = build_board(svc.store, load_registry(reg), AuditWatch(), load_zone("Asia/Bishkek"),
                        BoardTuning(), OpsTuning(), now_ms=time.time_ns() // 1_000_000)
    svc.store.close()
    return render_metrics(board)


def test_exposition_passes_promtool_check_metrics(exposition: str) -> None:
    proc = run("check", "metrics", stdin=exposition)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_per_kiosk_series_with_bounded_labels(exposition: str) -> None:
    lines = exposition.splitlines()
    assert 'kesp_kiosk_up{device="k-1",station="osh-1",district="osh"} 1' in lines
    assert 'kesp_kiosk_up{device="k-3",station="nar-4",district="naryn"} 0' in lines  # never heard
    assert 'kesp_kiosk_identified{device="k-2",station="osh-1",district="osh"} 6' in lines
    assert 'kesp_kiosk_outbox_depth{device="k-2",station="osh-1",district="osh"} 7' in lines
    assert ('kesp_kiosk_alert{device="k-2",station="osh-1",district="osh",kind="paper_out"} 1'
            in lines)
    skew = next(x for x in lines if x.startswith('kesp_kiosk_clock_skew_seconds{device="k-1"'))
    assert float(skew.rsplit(" ", 1)[1]) == pytest.approx(-120, abs=1)
    assert 'kesp_turnout{district="osh",station="osh-1",outcome="identified"} 10' in lines
    assert 'kesp_devices{state="offline"} 0' in lines
    assert 'kesp_devices{state="never_reported"} 1' in lines
    assert ('kesp_kiosk_alert{device="k-3",station="nar-4",district="naryn",'
            'kind="never_reported"} 1' in lines)
    kinds = set(re.findall(r'kind="([a-z_]+)"', exposition))
    assert kinds <= {k.value for k in AlertKind}
    devices = set(re.findall(r'device="([^"]+)"', exposition))
    assert devices == set(KEYS)  # only registered kiosks become label values


def test_alert_rules_pass_promtool() -> None:
    check = run("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    test = run("test", "rules", "alerts_test.yml")
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


@pytest.mark.parametrize("old,new,rule", [
    # a rule of its own threshold instead of ops' verdict (the 5 min it had before)
    ('and on (device) kesp_kiosk_alert{kind="silent"} == 1',
     "> 300", "KespKioskSilent"),
    # a rule that reads the wrong word
    ('kesp_kiosk_alert{kind="offline"}', 'kesp_kiosk_alert{kind="silent"}', "KespKioskOffline"),
    # kiosks that never reported left out of the share
    ('state=~"offline|never_reported"', 'state="offline"', "KespManyKiosksOffline"),
])
def test_rule_tests_catch_a_wrong_rule(tmp_path: Path, old: str, new: str, rule: str) -> None:
    """The rule tests can fail: a rule that disagrees with ops' status words is caught."""
    rules = (RULES_DIR / "alerts.yml").read_text()
    assert rules.count(old) == 1
    (tmp_path / "alerts.yml").write_text(rules.replace(old, new))
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path)
    proc = run("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode != 0 and rule in proc.stdout + proc.stderr, proc.stdout


def _exprs_of_rules() -> list[str]:
    text = (RULES_DIR / "alerts.yml").read_text()
    return [m.strip() for m in re.findall(r"^\s+expr: (.+)$", text, re.MULTILINE)]


def _exprs_of_grafana() -> list[str]:
    doc = json.loads((RULES_DIR / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_rules_and_grafana_use_only_exported_series(exposition: str) -> None:
    exported = {line.split()[2] for line in exposition.splitlines()
                if line.startswith("# TYPE ")}
    for expr in _exprs_of_rules() + _exprs_of_grafana():
        for name in _METRIC_RE.findall(expr):
            assert name in exported, f"{name} in {expr!r} is not exported by ops"


def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    doc = json.loads((RULES_DIR / "grafana-dashboard.json").read_text())
    assert doc["uid"] == "kesp-ops" and doc["timezone"] == "Asia/Bishkek"
    exprs = [e.replace("$district", ".*") for e in _exprs_of_grafana()]
    rules = "groups:\n  - name: grafana\n    rules:\n" + "".join(
        f"      - record: grafana:panel{i}\n        expr: {json.dumps(e)}\n"
        for i, e in enumerate(exprs))
    (tmp_path / "grafana.yml").write_text(rules)
    proc = run("check", "rules", "grafana.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / "bad.yml").write_text(rules.replace("sum by (state)", "sum by state"))
    assert run("check", "rules", "bad.yml", cwd=tmp_path).returncode != 0
