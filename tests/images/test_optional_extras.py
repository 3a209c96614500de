"""Optional extras missing: one line naming the extra, no traceback.

The kiosk image installs the agent with ``[mdns]``; a plain ``pip install``
of the agent has neither ``[mdns]`` (zeroconf, ifaddr) nor ``[ops]``
(psycopg). Each is made unimportable in a child interpreter exactly as if it
were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIG = {"device_id": "k1", "station_id": "s-1", "district": "d-1",
          "broker": {"url": "mqtt://127.0.0.1:1883"}, "peer_mdns": True}


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True,
                          text=True, check=False, timeout=120)


def test_peer_mdns_without_the_extra_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps(CONFIG))
    proc = _without(["zeroconf"], "from agent.runtime.cli import main\n"
                    f"sys.exit(main(['--config', {str(cfg)!r}, 'run']))")
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "peer_mdns" in lines[0] and "kesp-kiosk-agent[mdns]" in lines[0]
    # with the extra installed the same file is accepted
    check = ("from agent.runtime.config import load_config;"
             f" print(load_config({str(cfg)!r}).peer_mdns)")
    ok = subprocess.run([sys.executable, "-c", check],
                        capture_output=True, text=True, check=False, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "True", ok.stderr


def test_postgres_store_without_the_ops_extra_names_it() -> None:
    proc = _without(["psycopg"], "from ops.store import StoreError, open_store\n"
                    "try:\n    open_store('postgresql://127.0.0.1/none')\n"
                    "except StoreError as exc:\n    print(exc)\n    sys.exit(3)\n")
    assert proc.returncode == 3, proc.stderr
    assert "kesp-kiosk-agent[ops]" in proc.stdout
