#!/usr/bin/env python3
"""Check a KESP public turnout snapshot: every figure is what the kiosks signed.

Standalone (Python 3.9+ and PyNaCl only); docs/OPS.md "Verifying the public
feed" describes the same checks for a verifier in another language. Usage:

    python3 verify_feed.py --ops-key OPS_KEY_HEX --kiosk-keys kiosk-keys.json \
        snapshot.json snapshot.json.sig [--csv turnout.csv] [--previous OLDER.json]

Exit 0 and "OK ..." when everything checks; exit 1 and one line per problem.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

FIELDS = ("identified", "refused", "not_identified", "manual")


def verify(snap_bytes: bytes, sig_hex: str, ops_key_hex: str, kiosk_keys: dict[str, Any],
           csv_bytes: bytes | None = None) -> list[str]:
    """List of problems (empty when the snapshot checks out)."""
    try:
        VerifyKey(bytes.fromhex(ops_key_hex)).verify(snap_bytes, bytes.fromhex(sig_hex.strip()))
    except (BadSignatureError, ValueError):
        return ["snapshot: signature does not verify with the ops key (wrong key or altered file)"]
    snap = json.loads(snap_bytes)
    if (snap.get("format"), snap.get("version")) != ("kesp-turnout-feed", 1):
        return ["snapshot: not a kesp-turnout-feed version 1"]
    problems: list[str] = []
    sums: dict[str, list[int]] = {}
    for dev, k in sorted(snap["kiosks"].items()):
        pinned = kiosk_keys.get(dev)
        if pinned is None:
            problems.append(f"kiosk {dev}: not in the kiosk key list")
            continue
        if (k["station"], k["district"]) != (pinned["station"], pinned["district"]):
            problems.append(f"kiosk {dev}: listed at {k['station']}, registered at "
                            f"{pinned['station']}")
            continue
        raw = base64.b64decode(k["message"])
        try:
            body = VerifyKey(bytes.fromhex(pinned["key"])).verify(raw[64:], raw[:64])
        except (BadSignatureError, ValueError):
            problems.append(f"kiosk {dev}: turnout message is not signed by its registered key")
            continue
        msg = json.loads(body)
        if (msg["dev"], msg["stn"], msg["dst"], msg["type"]) != (
                dev, pinned["station"], pinned["district"], "turnout"):
            problems.append(f"kiosk {dev}: message is not a turnout message of this kiosk")
            continue
        sums[dev] = [msg["p"][f] for f in FIELDS]

    def check(what: str, claimed: dict[str, int], parts: list[list[int]]) -> None:
        total = [sum(p[i] for p in parts) for i in range(len(FIELDS))]
        for i, f in enumerate(FIELDS):
            if claimed[f] != total[i]:
                problems.append(f"{what}: {f} is {claimed[f]} but the signed messages it "
                                f"rests on sum to {total[i]}")

    station_sums: dict[str, list[int]] = {}
    for name, st in sorted(snap["stations"].items()):
        for dev in st["kiosks"]:
            if dev not in snap["kiosks"]:
                problems.append(f"station {name}: counts kiosk {dev}, whose message is missing")
        check(f"station {name}", st, [sums[d] for d in st["kiosks"] if d in sums])
        station_sums[name] = [st[f] for f in FIELDS]
    for dev, k in snap["kiosks"].items():
        if dev not in snap["stations"].get(k["station"], {}).get("kiosks", []):
            problems.append(f"kiosk {dev}: its message is not counted by station {k['station']}")
    for dev, pinned in sorted(kiosk_keys.items()):
        st = snap["stations"].get(pinned["station"], {})
        if dev not in st.get("kiosks", []) + st.get("kiosks_not_reported", []):
            problems.append(f"kiosk {dev}: registered at {pinned['station']} but missing from "
                            "the snapshot (neither counted nor listed as not reported)")
    district_sums: list[list[int]] = []
    for name, d in sorted(snap["districts"].items()):
        check(f"district {name}", d, [station_sums[s] for s in d["stations"]
                                      if snap["stations"].get(s, {}).get("district") == name])
        district_sums.append([d[f] for f in FIELDS])
    if sorted(snap["stations"]) != sorted(s for d in snap["districts"].values()
                                          for s in d["stations"]):
        problems.append("districts: do not list every station exactly once")
    check("nation", snap["nation"], district_sums)
    if csv_bytes is not None and hashlib.sha256(csv_bytes).hexdigest() != \
            snap["files"]["turnout.csv"]:
        problems.append("turnout.csv: differs from the file the snapshot signs (sha256)")
    return problems


def _counts_of(snap: dict[str, Any]) -> dict[str, tuple[int, list[int]]]:
    out = {}
    for dev, k in snap["kiosks"].items():
        p = json.loads(base64.b64decode(k["message"])[64:])["p"]
        out[dev] = (k["n"], [p[f] for f in FIELDS])
    return out


def compare(older: bytes, newer: bytes) -> list[str]:
    """Problems between two snapshots (both already verified): counts may only grow."""
    old, new = json.loads(older), json.loads(newer)
    if new["sequence"] <= old["sequence"]:
        return [f"snapshot: sequence {new['sequence']} is not after {old['sequence']}"]
    problems: list[str] = []
    now = _counts_of(new)
    for dev, (n, counts) in sorted(_counts_of(old).items()):
        if dev not in now:
            if dev not in new["excluded"]:
                problems.append(f"kiosk {dev}: counted in snapshot {old['sequence']}, "
                                "missing now")
        elif now[dev][0] < n or any(now[dev][1][i] < counts[i] for i in range(len(FIELDS))):
            problems.append(f"kiosk {dev}: message {now[dev][0]} replaces the later or "
                            f"higher message {n} of snapshot {old['sequence']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a KESP public turnout snapshot.")
    p.add_argument("--ops-key", required=True, help="ops public key, 64 hex digits")
    p.add_argument("--kiosk-keys", required=True, help="kiosk-keys.json you trust")
    p.add_argument("--csv", help="turnout.csv published with the snapshot")
    p.add_argument("--previous", help="an older snapshot (with its .sig beside it)")
    p.add_argument("snapshot")
    p.add_argument("signature")
    a = p.parse_args(argv)
    with open(a.snapshot, "rb") as f:
        snap = f.read()
    with open(a.signature) as f:
        sig = f.read()
    with open(a.kiosk_keys) as f:
        keys = json.load(f)["kiosks"]
    csv_bytes = None
    if a.csv:
        with open(a.csv, "rb") as f:
            csv_bytes = f.read()
    try:
        problems = verify(snap, sig, a.ops_key, keys, csv_bytes)
        if a.previous and not problems:
            with open(a.previous, "rb") as f:
                older = f.read()
            with open(a.previous + ".sig") as f:
                problems = [f"previous {line}" for line in verify(older, f.read(), a.ops_key,
                                                                   keys)]
            problems = problems or compare(older, snap)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        problems = [f"snapshot: malformed ({type(exc).__name__}: {exc})"]
    for line in problems:
        print(f"REFUSED {line}")
    if problems:
        return 1
    s = json.loads(snap)
    print(f"OK snapshot {s['sequence']} of {s['published_at']}: {len(s['kiosks'])} kiosk "
          f"messages, {len(s['stations'])} stations, nation identified "
          f"{s['nation']['identified']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
