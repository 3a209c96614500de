"""The public turnout feed: signed snapshots anyone can check against the kiosks' own signatures.

At each interval ops writes, into one directory that any web server can host:

=========================  ===================================================
``snapshot-NNNNNN.json``   counts per station, district and nation, and for
                           every kiosk its latest turnout message exactly as
                           the kiosk signed it (base64 of signature || body)
``snapshot-NNNNNN.json.sig``  hex Ed25519 signature of the JSON file's bytes
                           by the ops publishing key
``turnout-NNNNNN.csv``     the same station figures as CSV (its SHA-256 is in
                           the snapshot, so it is covered by the signature)
``snapshot.json`` ...      copies of the newest of the three above
``kiosk-keys.json``        every active kiosk's public key, station, district
``ops-key.txt``            the publishing key's public half (hex)
``verify_feed.py``         the standalone verifier (:mod:`ops.feed_verify`)
``index.html``, ``feed.css``  a read-only page with the figures and how to check them
=========================  ===================================================

No personal data: only counts, ids of kiosks/stations/districts and times.
Figures are computed from the signed messages themselves, never from another
table, so a figure and the messages it rests on cannot disagree. A kiosk
that is revoked, or whose stored message no longer verifies with its
registered key, is left out and named under ``excluded``. The numbered files
are never rewritten: observers keep them to see that counts only grow.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from agent.runtime.durable import atomic_write
from ops import feed_verify
from ops.registry import Registry

log = logging.getLogger(__name__)

FORMAT = "kesp-turnout-feed"
VERSION = 1
FIELDS = feed_verify.FIELDS
_SEQ_RE = re.compile(r"^snapshot-(\d{6})\.json$")
# A file, not an inline style: the dashboard's Content-Security-Policy allows no inline CSS.
_CSS = (b"body{font-family:sans-serif;margin:16px;max-width:960px}"
        b"td,th{padding:3px 10px;border-bottom:1px solid #ddd}td.n{text-align:right}\n")


class FeedError(RuntimeError):
    """The feed cannot be published (directory not writable, no key)."""


@dataclass(frozen=True)
class Published:
    """What one publication wrote."""

    sequence: int
    snapshot: Path
    kiosks: int
    excluded: int
    identified: int


def _counts(parts: list[Mapping[str, Any]]) -> dict[str, int]:
    return {f: sum(int(p[f]) for p in parts) for f in FIELDS}


def build_snapshot(signed: Mapping[str, bytes], registry: Registry, *, sequence: int,
                   now_ms: int, zone: ZoneInfo, ops_public_hex: str
                   ) -> tuple[dict[str, Any], str]:
    """(snapshot object without ``files``, station CSV text) from the kiosks' signed messages."""
    kiosks: dict[str, dict[str, Any]] = {}
    payloads: dict[str, Mapping[str, Any]] = {}
    excluded: dict[str, str] = {}
    for device, raw in sorted(signed.items()):
        rec = registry.get(device)
        if rec is None or not rec.active:
            excluded[device] = "revoked" if rec is not None else "not in the registry"
            continue
        try:
            body = rec.key().verify(raw[64:], raw[:64])
            msg = json.loads(body)
        except (BadSignatureError, ValueError):
            excluded[device] = "stored message does not verify with the registered key"
            continue
        if (msg.get("dev"), msg.get("stn"), msg.get("dst"), msg.get("type")) != (
                device, rec.station_id, rec.district, "turnout"):
            excluded[device] = "message is not this kiosk's turnout at its registered station"
            continue
        payloads[device] = msg["p"]
        kiosks[device] = {"station": rec.station_id, "district": rec.district,
                          "n": int(msg["n"]), "kiosk_time_ms": int(msg["t"]),
                          "message": base64.b64encode(raw).decode("ascii")}
    stations: dict[str, dict[str, Any]] = {}
    for station, (district, devices) in sorted(registry.stations().items()):
        counted = [d for d in devices if d in kiosks]
        stations[station] = {"district": district, "kiosks": counted,
                             "kiosks_not_reported": [d for d in devices if d not in kiosks],
                             **_counts([payloads[d] for d in counted])}
    districts: dict[str, dict[str, Any]] = {}
    for station, st in stations.items():
        districts.setdefault(st["district"], {"stations": []})["stations"].append(station)
    for d in districts.values():
        d.update(_counts([stations[s] for s in d["stations"]]))
    stamp = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    snap: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "sequence": sequence,
        "published_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "published_local": stamp.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "time_zone": zone.key, "ops_key": ops_public_hex,
        "nation": _counts(list(districts.values())), "districts": districts,
        "stations": stations, "kiosks": kiosks, "excluded": excluded,
    }
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["district", "station", *FIELDS, "kiosks_reporting", "kiosks_not_reported"])
    for station, st in stations.items():
        w.writerow([st["district"], station, *(st[f] for f in FIELDS), len(st["kiosks"]),
                    len(st["kiosks_not_reported"])])
    return snap, buf.getvalue()


def kiosk_keys(registry: Registry) -> dict[str, Any]:
    """The public kiosk key list (``kiosk-keys.json``) observers pin."""
    return {"format": "kesp-kiosk-keys", "version": 1, "kiosks": {
        d: {"station": r.station_id, "district": r.district, "key": r.verify_key}
        for d, r in sorted(registry.devices.items()) if r.active}}


def next_sequence(directory: Path) -> int:
    """One more than the highest numbered snapshot in ``directory``."""
    seqs = [int(m.group(1)) for p in directory.glob("snapshot-*.json")
            if (m := _SEQ_RE.match(p.name))]
    return max(seqs, default=0) + 1


def _page(snap: Mapping[str, Any], seq: str) -> str:
    def row(name: str, c: Mapping[str, Any]) -> str:
        return f"<tr><td>{escape(name)}</td>" + "".join(
            f'<td class="n">{int(c[f]):,}</td>' for f in FIELDS) + "</tr>"

    head = "<tr><th></th>" + "".join(f"<th>{f.replace('_', ' ')}</th>" for f in FIELDS) + "</tr>"
    rows = row("nation", snap["nation"]) + "".join(
        row(d, c) for d, c in sorted(snap["districts"].items()))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>KESP turnout (verifiable)</title><link rel="stylesheet" href="feed.css">'
        "</head><body>"
        f"<h1>Voters identified by the kiosks</h1><p>Snapshot {escape(seq)}, published "
        f"{escape(snap['published_local'])} ({escape(snap['time_zone'])}), "
        f"{escape(snap['published_at'])} UTC; {len(snap['kiosks']):,} kiosks reporting from "
        f"{len(snap['stations']):,} stations.</p><table>{head}{rows}</table>"
        "<h2>Check these figures yourself</h2><p>Every figure is the sum of the kiosks' own "
        "signed turnout messages, which are inside the snapshot. Download "
        f'<a href="snapshot-{seq}.json">snapshot-{seq}.json</a>, '
        f'<a href="snapshot-{seq}.json.sig">its signature</a>, '
        f'<a href="turnout-{seq}.csv">turnout-{seq}.csv</a>, '
        '<a href="kiosk-keys.json">the kiosk keys</a> (compare them with the list the CEC '
        'published before election day), <a href="ops-key.txt">the ops key</a> and '
        '<a href="verify_feed.py">verify_feed.py</a>, then run:</p><pre>pip install pynacl\n'
        f"python3 verify_feed.py --ops-key $(cat ops-key.txt) --kiosk-keys kiosk-keys.json "
        f"--csv turnout-{seq}.csv snapshot-{seq}.json snapshot-{seq}.json.sig</pre>"
        "</body></html>")


def publish(directory: Path, key: SigningKey, signed: Mapping[str, bytes], registry: Registry,
            zone: ZoneInfo, now_ms: int | None = None) -> Published:
    """Write one numbered snapshot (never overwritten) and refresh the ``latest`` copies."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    try:
        directory.mkdir(parents=True, exist_ok=True)
        seq = next_sequence(directory)
        public_hex = bytes(key.verify_key).hex()
        snap, table = build_snapshot(signed, registry, sequence=seq, now_ms=now_ms, zone=zone,
                                     ops_public_hex=public_hex)
        csv_bytes = table.encode("utf-8")
        snap["files"] = {"turnout.csv": hashlib.sha256(csv_bytes).hexdigest()}
        body = (json.dumps(snap, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()
        sig = (key.sign(body).signature.hex() + "\n").encode()
        tag = f"{seq:06d}"
        files = [(f"turnout-{tag}.csv", csv_bytes), (f"snapshot-{tag}.json.sig", sig),
                 (f"snapshot-{tag}.json", body), ("turnout.csv", csv_bytes),
                 ("snapshot.json.sig", sig), ("snapshot.json", body),
                 ("kiosk-keys.json", (json.dumps(kiosk_keys(registry), indent=1,
                                                 sort_keys=True) + "\n").encode()),
                 ("ops-key.txt", (public_hex + "\n").encode()),
                 ("verify_feed.py", Path(feed_verify.__file__).read_bytes()),
                 ("feed.css", _CSS), ("index.html", _page(snap, tag).encode())]
        for name, data in files:
            atomic_write(directory / name, data, mode=0o644)
    except OSError as exc:
        raise FeedError(f"cannot publish into {directory}: {exc.strerror or exc}") from exc
    return Published(seq, directory / f"snapshot-{tag}.json", len(snap["kiosks"]),
                     len(snap["excluded"]), int(snap["nation"]["identified"]))


class Publisher:
    """Publishes a snapshot every ``every_s`` seconds in a background thread."""

    def __init__(self, directory: Path, key: SigningKey, every_s: float,
                 source: Callable[[], tuple[Mapping[str, bytes], Registry]],
                 zone: ZoneInfo) -> None:
        self.directory, self.key, self.every_s = directory, key, every_s
        self.source, self.zone = source, zone
        self.last: Published | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kesp-ops-feed", daemon=True)

    def publish_now(self) -> Published | None:
        """One publication; a failure is logged and retried at the next interval."""
        try:
            signed, registry = self.source()
            self.last = publish(self.directory, self.key, signed, registry, self.zone)
        except Exception as exc:
            log.warning("public feed not published: %s: %s", type(exc).__name__, exc)
            return None
        return self.last

    def start(self) -> None:
        """Publish now and then every interval."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish_now()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        """End the background thread."""
        self._stop.set()
        self._thread.join(10)
