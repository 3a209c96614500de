"""The operator's commands through the real CLI and control socket."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from agent.runtime.keys import load_keys
from hardware_sim.rig import Rig, is_duplicate


def _cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.runtime.cli", "--config", str(rig.config), *args],
        check=False, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )


def test_operator_day_through_the_cli(ref_data: Path, tmp_path: Path) -> None:
    with Rig(ref_data, tmp_path / "station", quiet=True) as rig:
        rig.start_agent()
        mode = stat.S_IMODE(rig.kiosk.sock.stat().st_mode)
        assert mode == 0o660, oct(mode)

        status = json.loads(_cli(rig, "status").stdout)
        assert status["phase"] == "provisioned"
        refused = _cli(rig, "pause")
        assert refused.returncode == 1 and "cannot pause while the station is provisioned" \
            in refused.stderr

        assert json.loads(_cli(rig, "open").stdout)["phase"] == "open"
        zero = rig.printer.wait_for_documents(1, timeout=30)[0]
        assert "НУЛЕВОЙ ОТЧЕТ" in zero.text
        reopen = _cli(rig, "open")
        assert reopen.returncode == 1 and "cannot open" in reopen.stderr

        assert json.loads(_cli(rig, "pause").stdout)["phase"] == "paused"
        assert json.loads(_cli(rig, "resume").stdout)["phase"] == "open"

        unknown_doc = _cli(rig, "document", "XX0000000")
        assert unknown_doc.returncode == 1 and "no voter with that document" in unknown_doc.stderr
        stranger = _cli(rig, "revoke", "kiosk-9999-z")
        assert stranger.returncode == 1 and "not one of this station's kiosks" in stranger.stderr
        itself = _cli(rig, "revoke", rig.kiosk.device)
        assert itself.returncode == 1 and "cannot revoke itself" in itself.stderr

        admitted = json.loads(_cli(rig, "manual", "7").stdout)
        assert admitted["counts"]["manual"] == 1
        slip = rig.printer.wait_for_documents(2, timeout=30)[1]
        serial = slip.text.split("Чек №:")[1].split()[0]
        again = json.loads(_cli(rig, "manual", "7").stdout)  # already marked: refused
        assert again["counts"]["manual"] == 1 and again["counts"]["refused"] == 1

        _cli(rig, "reprint", serial)
        docs = rig.printer.wait_for_documents(4, timeout=30)
        assert is_duplicate(docs[3].text) and serial in docs[3].text

        closed = json.loads(_cli(rig, "close").stdout)
        assert closed["phase"] == "closed" and closed["closing_report_printed"]
        closing = rig.printer.wait_for_documents(5, timeout=30)[4].text
        assert "ИТОГОВЫЙ ОТЧЕТ" in closing and serial in closing

        exported = json.loads(_cli(rig, "export").stdout)
        assert exported["phase"] == "exported"
        archive = Path(exported["export"])
        body = archive.read_bytes()
        signature = bytes.fromhex(archive.with_suffix(".sig").read_text())
        verify_key = load_keys(rig.kiosk.dir / "keys").signing.verify_key
        verify_key.verify(body, signature)
        assert json.loads(body)["counts"]["manual"] == 1
        assert rig.stop_agent() == 0

        audit = _cli(rig, "audit", "verify")
        assert audit.returncode == 0, audit.stdout + audit.stderr

        rig.kiosk.sock.parent.mkdir(parents=True, exist_ok=True)
        gone = _cli(rig, "status")
        assert gone.returncode == 1 and "is kesp-agent running" in gone.stderr
