"""kesp-provision given the wrong thing, as happens in the field: each refused in one line
naming the thing and the fix, exit 1, nothing written; and what it must accept, accepted."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import Run, one_line_refusal, tree
from kiosk_helpers import ME, MakeKiosk, Result, fvc_templates, kp, ok
from PIL import Image

from agent.roll.package import open_package
from agent.runtime.config import load_config
from agent.runtime.keys import load_keys
from provisioning.cli import _parser
from provisioning.keyfiles import read_public_key
from provisioning.request import b45decode, b45encode, parse_request

HEADER = "list_number,name_ky,name_ru,document"


def refused(r: Run | Result, *words: str) -> str:
    """One stderr line with ``words``, exit 1 (see cli_helpers.one_line_refusal)."""
    return one_line_refusal(Run(r.code, r.out, r.err), *words)


@pytest.fixture
def keys(tmp_path: Path, cec: Path) -> Path:
    """A USB stick with the CEC's and ops' public keys as the keygen steps write them."""
    ok("ops", "keygen", "--out-dir", tmp_path / "opskeys")
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "cec.pub").write_bytes((cec / "cec.pub").read_bytes())
    (usb / "ops.pub").write_bytes((tmp_path / "opskeys" / "ops.pub").read_bytes())
    return usb


def init(tmp_path: Path, *extra: str | Path) -> Result:
    return kp("device", "init", "--device-id", "osh-1017-a", "--station", "s-1017",
              "--district", "osh-city", "--broker", "mqtt://127.0.0.1:1", "--config-dir",
              tmp_path / "etc", "--state-dir", tmp_path / "var", "--user", ME, *extra)


# ------------------------------------------------------------------ key roles


def test_swapped_keys_are_refused(tmp_path: Path, keys: Path) -> None:
    refused(init(tmp_path, "--cec-key", keys / "ops.pub", "--ops-key", keys / "ops.pub"),
            "ops.pub", "is the ops public key", "not the CEC key", "--cec-key", "cec.pub")
    refused(init(tmp_path, "--cec-key", keys / "cec.pub", "--ops-key", keys / "cec.pub"),
            "cec.pub", "is the CEC public key", "--ops-key", "ops.pub")
    refused(init(tmp_path, "--cec-key", keys / "ops.pub"), "is the ops public key")
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()
    r = init(tmp_path, "--cec-key", keys / "cec.pub", "--ops-key", keys / "ops.pub")
    assert r.code == 0, r
    cfg = load_config(tmp_path / "etc" / "agent.json")
    assert cfg.broker.ops_verify_key == bytes(read_public_key(keys / "ops.pub", "ops")).hex()


def test_older_unlabelled_key_files_still_work_but_not_swapped(tmp_path: Path,
                                                              keys: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for role in ("cec", "ops"):  # the bare 64 hex digits keys were written as before
        (old / f"{role}.pub").write_text(bytes(read_public_key(keys / f"{role}.pub", role)).hex())
    (old / "key-a.pub").write_text((old / "cec.pub").read_text())
    refused(init(tmp_path, "--cec-key", old / "ops.pub"), "ops.pub",
            "named like the ops public key", "--cec-key")
    refused(init(tmp_path, "--cec-key", old / "cec.pub", "--ops-key", old / "key-a.pub"),
            "same key", "--cec-key", "--ops-key")
    (old / "junk.pub").write_bytes(bytes(range(200)))
    refused(init(tmp_path, "--cec-key", old / "junk.pub"), "junk.pub", "binary", "cec.pub")
    (old / "secret").write_bytes(bytes(32))
    refused(init(tmp_path, "--cec-key", old / "secret"), "*secret* key", "cec.sign")
    assert not (tmp_path / "etc").exists()
    r = init(tmp_path, "--cec-key", old / "cec.pub", "--ops-key", old / "ops.pub")
    assert r.code == 0, r


def test_secret_keys_given_for_the_wrong_role(tmp_path: Path, cec: Path, keys: Path) -> None:
    r = kp("cec", "build", "--key", tmp_path / "opskeys" / "ops.sign", "--voters", "v.csv",
           "--templates", "t", "--registry", "r.json", "--election", "e", "--roll-version",
           "1", "--out-dir", tmp_path / "out", "--station", "s-1")
    refused(r, "ops.sign", "is the ops secret key", "cec.sign")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ voters list


@dataclass
class Builder:
    """Runs cec build on a voters file of given bytes, for the station of kiosk-a."""

    tmp: Path
    cec: Path
    registry: Path
    templates: Path
    rows: list[tuple[int, str, str, str]]

    def __call__(self, data: bytes, *extra: str) -> tuple[Result, Path]:
        voters = self.tmp / "voters.csv"
        voters.write_bytes(data)
        out = self.tmp / "out" / "v1"
        r = kp("cec", "build", "--key", self.cec / "cec.sign", "--voters", voters,
               "--templates", self.templates, "--registry", self.registry, "--election",
               "pres-2026", "--roll-version", "1", "--station", "s-1017", "--out-dir", out,
               "--jobs", "1", *extra)
        return r, out


@pytest.fixture
def build(tmp_path: Path, make_kiosk: MakeKiosk, cec: Path, registry: Path) -> Builder:
    make_kiosk("kiosk-a")
    rows = fvc_templates(tmp_path / "templates", 2)
    return Builder(tmp_path, cec, registry, tmp_path / "templates", rows)


def csv_bytes(rows: list[tuple[object, ...]], encoding: str) -> bytes:
    text = HEADER + "\r\n" + "".join(",".join(map(str, r)) + "\r\n" for r in rows)
    return text.encode(encoding, errors="replace")  # Excel writes '?' for what is missing


def test_voters_in_windows_1251_are_refused_with_the_line(build: Builder, tmp_path: Path) -> None:
    russian = [(n, "Асанов Бакыт", "Асанов Бакыт", doc) for n, _, _, doc in build.rows]
    r, out = build(csv_bytes(russian, "cp1251"))
    refused(r, "voters.csv:2", "column 3", "Windows-1251", "CSV UTF-8")
    assert not (tmp_path / "out").exists()
    # Kyrgyz names saved as Windows-1251 lost their letters: refused even when asked for
    r, out = build(csv_bytes(build.rows, "cp1251"), "--encoding", "cp1251")
    refused(r, "voters.csv:2", "name_ky", "'?'", "ң ө ү", "CSV UTF-8")
    assert not (tmp_path / "out").exists()
    # Russian-only names in Windows-1251 are read correctly when asked
    r, out = build(csv_bytes(russian, "cp1251"), "--encoding", "cp1251")
    assert r.code == 0, r
    cfg = load_config(tmp_path / "kiosk-a" / "etc" / "agent.json")
    roll = open_package((out / "s-1017.pkg").read_bytes(),
                        read_public_key(tmp_path / "cec" / "cec.pub", "cec"),
                        load_keys(cfg.key_dir).box)
    assert {v.name_ru for v in roll.voters} == {"Асанов Бакыт"}


def test_voters_utf8_with_byte_order_mark_is_read(build: Builder) -> None:
    r, out = build(b"\xef\xbb\xbf" + csv_bytes(build.rows, "utf-8"))
    assert r.code == 0, r
    assert (out / "s-1017.pkg").exists()


def test_binary_files_are_refused(build: Builder, tmp_path: Path, registry: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    r, _ = build(png)
    refused(r, "voters.csv:1", "CSV UTF-8")
    r, _ = build(HEADER.encode() + b"\n1,a\x00b,c,ID1000\n")
    refused(r, "voters.csv:2", "binary data")
    r, _ = build(HEADER.encode() + b'\n1,"unterminated,b,ID1000\n')
    refused(r, "voters.csv:2", "wrong number of fields")
    r, _ = build(HEADER.encode() + b"\n1," + b"x" * 200_000 + b",b,ID1000\n")
    refused(r, "voters.csv:2", "not valid CSV", "field limit")
    assert not (tmp_path / "out").exists()
    registry.write_bytes(png)
    (tmp_path / "request.json").write_bytes(png)
    build(csv_bytes(build.rows, "utf-8"))  # leaves voters.csv as the next run writes it
    before = tree(tmp_path)
    r, _ = build(csv_bytes(build.rows, "utf-8"))
    refused(r, str(registry), "not a device registry")
    refused(kp("ops", "register", tmp_path / "request.json", "--registry", registry),
            "request.json", "not a registration request")
    assert tree(tmp_path) == before


# ------------------------------------------------------------------ the request's QR code


def test_request_qr_fits_80_columns_and_is_written_as_png(make_kiosk: MakeKiosk,
                                                         tmp_path: Path) -> None:
    k = make_kiosk("osh-1017-a", register=False)
    out = tmp_path / "usb" / "osh-1017-a.json"
    r = ok("device", "request", "--config-dir", k.etc, "--out", out)
    request_line = out.read_text().strip()
    qr_lines = [line for line in r.out.splitlines() if set(line) & set("█▀▄")]
    assert len(qr_lines) > 30  # the code was drawn, two modules per line
    assert max(len(line) for line in qr_lines) <= 80, max(map(len, qr_lines))
    with Image.open(out.with_name("osh-1017-a.qr.png")) as img:
        assert img.format == "PNG" and img.size == ((69 + 8) * 8,) * 2  # version 13
    # what the code holds is the whole signed request: ops can register from it
    req = parse_request(request_line)
    qr_text = req.to_qr_text()
    assert len(qr_text) < 500 and parse_request(qr_text) == req
    scanned = tmp_path / "scanned.txt"
    scanned.write_text(qr_text + "\n")
    r = ok("ops", "register", scanned, "--registry", tmp_path / "ops" / "registry.json")
    assert "registered osh-1017-a" in r.out
    tampered = qr_text[:-9] + ("0" if qr_text[-9] != "0" else "1") + qr_text[-8:]
    scanned.write_text(tampered)
    r = kp("ops", "register", scanned, "--registry", tmp_path / "ops" / "reg2.json")
    assert r.code == 1 and ("does not match" in r.err or "damaged" in r.err), r


def test_base45_round_trip_and_rfc_vectors() -> None:
    assert b45encode(b"AB") == "BB8" and b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45decode("QED8WEX0") == b"ietf!"
    for data in (b"", b"\x00", b"\xff\xff", bytes(range(256))):
        assert b45decode(b45encode(data)) == data
    for bad in ("GGW", "a", "AB"):  # value > 65535, lowercase, dangling character
        with pytest.raises(ValueError):
            b45decode(bad)


# ------------------------------------------------------------------ config and help


def test_a_damaged_configuration_is_named(make_kiosk: MakeKiosk) -> None:
    k = make_kiosk("kiosk-a", register=False)
    cfg = k.etc / "agent.json"
    doc = json.loads(cfg.read_text())
    doc["brokr"] = doc.pop("broker")
    cfg.write_text(json.dumps(doc))
    before = tree(k.etc)
    r = kp("device", "selftest", "--config-dir", k.etc)
    refused(r, str(cfg), "brokr")
    cfg.write_bytes(bytes(range(256)))
    r = kp("device", "request", "--config-dir", k.etc, "--no-qr")
    refused(r, str(cfg), "not UTF-8")
    cfg.write_text(json.dumps(doc))
    assert tree(k.etc) == before


def test_help_texts_describe_every_step_and_option() -> None:
    parser = _parser()

    def parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [p]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                assert all(c.help for c in a._choices_actions), p.prog
                for child in a.choices.values():
                    found += parsers(child)
        return found

    every = parsers(parser)
    assert len(every) == 1 + 3 + 11
    for p in every:
        assert p.description and "``" not in p.format_help(), p.prog
        for action in p._actions:
            assert action.help, (p.prog, action.dest)
    r = kp("--help")
    assert r.code == 0 and "exit codes" in r.out and "docs/TECHNICIAN.md" in r.out

