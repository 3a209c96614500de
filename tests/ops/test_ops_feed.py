"""The public turnout feed and its standalone verifier: honest feeds pass, every forgery is refused.

Kiosk messages are real Ed25519-signed envelopes that went through the ops
verifier into the store; the verifier under test is the copy of
``verify_feed.py`` that ``publish`` put into the feed directory, run as a
separate program the way an observer runs it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from ops_helpers import signed

from agent.telemetry.envelope import Envelope, seal
from ops.cli import main as ops_main
from ops.feed import publish
from ops.registry import create_ops_key, load_registry, register_device, revoke_device
from ops.report import load_zone
from ops.service import OpsService
from ops.store import open_store

KEYS = {d: SigningKey.generate() for d in ("a-1", "a-2", "b-1", "c-1", "r-1")}
PLACE = {"a-1": ("osh", "osh-1"), "a-2": ("osh", "osh-1"), "b-1": ("osh", "osh-2"),
         "c-1": ("naryn", "nar-4"), "r-1": ("naryn", "nar-4")}
IDENTIFIED = {"a-1": 40, "a-2": 35, "b-1": 12, "r-1": 9}  # c-1 has not reported yet
ZONE = load_zone("Asia/Bishkek")


class Feed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "feed"
        self.reg = root / "devices.json"
        self.key = create_ops_key(root / "publish.sign")
        for d, k in KEYS.items():
            register_device(self.reg, d, PLACE[d][1], PLACE[d][0], bytes(k.verify_key).hex())
        self.store_path = str(root / "ops.sqlite")
        svc = OpsService("mqtt://127.0.0.1:1", self.reg, self.store_path)
        msgs = []
        for d, i in IDENTIFIED.items():
            for n, part in ((1, i // 2), (2, i)):  # two messages: only the latest counts
                msgs.append(signed(KEYS[d], PLACE[d], d, n, "turnout",
                                   {"identified": part, "refused": 1, "not_identified": 2,
                                    "manual": 0, "by_hour": {"09": part}}))
        assert set(svc.process_messages(msgs)) == {"accepted"}
        self.first_of_a1 = msgs[0][1]  # a-1's older turnout message (n = 1)
        svc.store.close()
        revoke_device(self.reg, "r-1", "stolen")  # its figures must not count any more
        store = open_store(self.store_path)
        self.published = publish(self.dir, self.key, store.signed_turnout(),
                                 load_registry(self.reg), ZONE)
        store.close()
        self.pinned = self.root / "pinned-kiosk-keys.json"  # what an observer saved earlier
        self.pinned.write_bytes((self.dir / "kiosk-keys.json").read_bytes())

    def snapshot(self) -> dict[str, object]:
        return dict(json.loads((self.dir / "snapshot.json").read_bytes()))

    def rewrite(self, snap: dict[str, object], key: SigningKey | None = None) -> None:
        """Replace the snapshot as a dishonest publisher would, signing it again."""
        body = (json.dumps(snap, sort_keys=True, indent=1) + "\n").encode()
        (self.dir / "snapshot.json").write_bytes(body)
        sig = (key or self.key).sign(body).signature.hex()
        (self.dir / "snapshot.json.sig").write_text(sig + "\n")

    def verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        ops_hex = (self.dir / "ops-key.txt").read_text().strip()
        return subprocess.run(
            [sys.executable, "verify_feed.py", "--ops-key", ops_hex, "--kiosk-keys",
             str(self.pinned), *extra, "snapshot.json", "snapshot.json.sig"],
            cwd=self.dir, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    return Feed(tmp_path)


def test_honest_feed_verifies(feed: Feed) -> None:
    proc = feed.verify("--csv", "turnout.csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK snapshot 1 ") and "nation identified 87" in proc.stdout
    snap = feed.snapshot()
    stations = snap["stations"]
    assert isinstance(stations, dict)
    assert stations["osh-1"]["identified"] == 75 and stations["osh-1"]["kiosks"] == ["a-1", "a-2"]
    assert stations["nar-4"]["kiosks_not_reported"] == ["c-1"]
    assert snap["excluded"] == {"r-1": "revoked"}
    assert snap["districts"] == {
        "naryn": {"stations": ["nar-4"], "identified": 0, "refused": 0, "not_identified": 0,
                  "manual": 0},
        "osh": {"stations": ["osh-1", "osh-2"], "identified": 87, "refused": 3,
                "not_identified": 6, "manual": 0}}
    # The numbered copy is the same signed file, and the archive is never overwritten.
    assert (feed.dir / "snapshot-000001.json").read_bytes() == \
        (feed.dir / "snapshot.json").read_bytes()
    # Nothing personal and no secret: only public keys, counts, ids and times.
    text = (feed.dir / "snapshot.json").read_text()
    for word in ("password", "mqtt", "127.0.0.1", "name", "document"):
        assert word not in text
    page = (feed.dir / "index.html").read_text()
    assert "snapshot-000001.json" in page and "87" in page


def _refused(feed: Feed, *expected: str, extra: tuple[str, ...] = ()) -> str:
    proc = feed.verify(*extra)
    assert proc.returncode == 1, proc.stdout
    for text in expected:
        assert text in proc.stdout, proc.stdout
    return proc.stdout


def test_tampered_count_is_refused(feed: Feed) -> None:
    snap = feed.snapshot()
    snap["stations"]["osh-1"]["identified"] += 100  # type: ignore[index]
    raw = (feed.dir / "snapshot.json").read_bytes()
    (feed.dir / "snapshot.json").write_bytes(raw.replace(b'"identified": 75', b'"identified": 95'))
    _refused(feed, "REFUSED snapshot: signature does not verify with the ops key")
    feed.rewrite(snap)  # ops itself publishing a wrong figure, correctly signed
    _refused(feed, "REFUSED station osh-1: identified is 175 but the signed messages it rests "
                   "on sum to 75")


def test_dropped_kiosk_message_is_refused(feed: Feed) -> None:
    snap = feed.snapshot()
    del snap["kiosks"]["a-2"]  # type: ignore[attr-defined]
    feed.rewrite(snap)
    _refused(feed, "REFUSED station osh-1: counts kiosk a-2, whose message is missing",
             "identified is 75 but the signed messages it rests on sum to 40")
    # Dropped consistently (station lowered, kiosk not listed): the key list still names it.
    snap["stations"]["osh-1"]["kiosks"] = ["a-1"]  # type: ignore[index]
    for level in (snap["stations"]["osh-1"], snap["districts"]["osh"], snap["nation"]):  # type: ignore[index]
        level["identified"] -= 35
        level["refused"] -= 1
        level["not_identified"] -= 2
    feed.rewrite(snap)
    _refused(feed, "REFUSED kiosk a-2: registered at osh-1 but missing from the snapshot")


def test_replaced_kiosk_key_is_refused(feed: Feed) -> None:
    """A message forged with another key, even with kiosk-keys.json swapped beside it."""
    mallory = SigningKey.generate()
    now = time.time_ns() // 1_000_000
    env = Envelope(device="b-1", station="osh-2", district="osh", boot=1, seq=3, n=3,
                   wall_ms=now, mono_ms=1, sent_ms=now, type="turnout", historical=False,
                   payload={"identified": 500, "refused": 1, "not_identified": 2, "manual": 0})
    snap = feed.snapshot()
    snap["kiosks"]["b-1"]["message"] = base64.b64encode(seal(env, mallory)).decode()  # type: ignore[index]
    for level in (snap["stations"]["osh-2"], snap["districts"]["osh"], snap["nation"]):  # type: ignore[index]
        level["identified"] += 488
    feed.rewrite(snap)
    keys = json.loads((feed.dir / "kiosk-keys.json").read_text())
    keys["kiosks"]["b-1"]["key"] = bytes(mallory.verify_key).hex()
    (feed.dir / "kiosk-keys.json").write_text(json.dumps(keys))  # the observer kept its own copy
    _refused(feed, "REFUSED kiosk b-1: turnout message is not signed by its registered key")


def test_snapshot_signed_by_the_wrong_key_is_refused(feed: Feed) -> None:
    feed.rewrite(feed.snapshot(), key=SigningKey.generate())
    _refused(feed, "REFUSED snapshot: signature does not verify with the ops key "
                   "(wrong key or altered file)")


def test_altered_csv_is_refused(feed: Feed) -> None:
    csv_path = feed.dir / "turnout.csv"
    csv_path.write_text(csv_path.read_text().replace("osh,osh-1,75", "osh,osh-1,76"))
    _refused(feed, "REFUSED turnout.csv: differs from the file the snapshot signs",
             extra=("--csv", "turnout.csv"))


def test_publish_command_and_sequence(feed: Feed, capsys: pytest.CaptureFixture[str]) -> None:
    assert ops_main(["--store", feed.store_path, "publish", "--out", str(feed.dir),
                     "--publish-key", str(feed.root / "publish.sign"),
                     "--registry", str(feed.reg)]) == 0
    assert "published snapshot 2 (3 kiosks, 1 excluded, nation identified 87)" in \
        capsys.readouterr().out
    assert (feed.dir / "snapshot-000001.json").exists()
    assert feed.verify().returncode == 0
    (feed.root / "publish.sign").chmod(0o644)
    assert ops_main(["--store", feed.store_path, "publish", "--out", str(feed.dir),
                     "--publish-key", str(feed.root / "publish.sign"),
                     "--registry", str(feed.reg)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_older_message_in_a_later_snapshot_is_refused(feed: Feed) -> None:
    """Observers keep the numbered snapshots; a kiosk's figure may never go back."""
    store = open_store(feed.store_path)
    signed_now = store.signed_turnout()
    store.close()
    registry = load_registry(feed.reg)
    publish(feed.dir, feed.key, signed_now, registry, ZONE)  # snapshot 2, honest
    proc = feed.verify("--previous", "snapshot-000001.json")
    assert proc.returncode == 0, proc.stdout
    publish(feed.dir, feed.key, {**signed_now, "a-1": feed.first_of_a1}, registry, ZONE)
    assert feed.verify().returncode == 0  # on its own the stale figure is consistent...
    _refused(feed, "REFUSED kiosk a-1: message 1 replaces the later or higher message 2 of "
                   "snapshot 2", extra=("--previous", "snapshot-000002.json"))


def test_dashboard_serves_the_feed_read_only(feed: Feed) -> None:
    import http.client
    import threading

    from hardware_sim.mosquitto import free_port
    from ops.web.server import close, make_server

    store = open_store(feed.store_path)
    srv = make_server(store, bind="127.0.0.1", port=free_port(), zone=ZONE, public_dir=feed.dir)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()

    def get(path: str, method: str = "GET") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
        conn.request(method, path)
        r = conn.getresponse()
        out = (r.status, r.read())
        conn.close()
        return out

    try:
        assert get("/public/") == (200, (feed.dir / "index.html").read_bytes())
        assert get("/public/snapshot-000001.json") == (
            200, (feed.dir / "snapshot-000001.json").read_bytes())
        assert get("/public/verify_feed.py")[0] == 200
        for bad in ("/public/../devices.json", "/public/%2e%2e/devices.json",
                    "/public/sub/snapshot.json", "/public/.snapshot.json", "/public/a.sqlite"):
            assert get(bad)[0] == 404, bad
        assert get("/public/snapshot.json", "POST")[0] == 501
    finally:
        close(srv)
        store.close()
