"""kesp-provision: prepare KESP kiosks, one command per step.

The CEC makes its key and the roll packages, ops registers kiosks and
configures the broker, the technician initialises each kiosk, installs its
roll and runs the selftest. docs/TECHNICIAN.md walks through every step.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.roll.package import package_hash
from agent.runtime.config import ConfigError
from provisioning import cec as cec_mod
from provisioning import device as dev
from provisioning.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    SERVICE_USER,
    ProvisionError,
    require_user,
)
from provisioning.csvfile import ENCODINGS
from provisioning.keyfiles import (
    CEC_PUB_FILE,
    CEC_SIGN_FILE,
    key_id,
    load_cec_signing_key,
    load_cec_verify_key,
    write_cec_keypair,
)
from provisioning.opscmd import station_kiosks
from provisioning.progress import Progress
from provisioning.stations import check_names, read_stations_csv


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ cec


def cmd_cec_keygen(args: argparse.Namespace) -> int:
    key = write_cec_keypair(Path(args.out_dir))
    _out(f"created {Path(args.out_dir) / CEC_SIGN_FILE} (secret, 0600: keep offline) and "
         f"{Path(args.out_dir) / CEC_PUB_FILE}")
    _out(f"CEC key id {key_id(key.verify_key)} (read it out when kiosks are initialised)")
    return EXIT_OK


def cmd_cec_build(args: argparse.Namespace) -> int:
    key = load_cec_signing_key(Path(args.key))
    created = args.created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = cec_mod.read_voters_csv(Path(args.voters), Path(args.templates), station=args.station,
                                   encoding=args.encoding)
    names = read_stations_csv(Path(args.stations), encoding=args.encoding) \
        if args.stations else None
    kiosks = station_kiosks(Path(args.registry))
    if names is not None:  # stations without kiosks are refused by make_jobs
        check_names(names, Path(args.stations),
                    {s: kiosks[s][0] for s in rows if s in kiosks}, args.voters)
    jobs = cec_mod.make_jobs(rows, kiosks, names)
    progress = Progress(len(jobs), "building")
    built = cec_mod.build_all(
        jobs, election_id=args.election, roll_version=args.roll_version, created=created,
        cec_key=key, source=args.voters, out_dir=Path(args.out_dir),
        workers=args.jobs or cec_mod.default_workers(),
        on_done=lambda b: progress.advance(1, f"({b.station_id})"),
    )
    for line in cec_mod.iter_lines(built):
        _out(line)
    _out(f"{len(built)} package(s), {sum(b.voters for b in built)} voters, written to "
         f"{args.out_dir} with {cec_mod.MANIFEST}")
    if names is None:
        _out("no --stations file: the packages carry no station or district names, so "
             "slips and reports show their ids")
    return EXIT_OK


def cmd_cec_verify(args: argparse.Namespace) -> int:
    key = load_cec_verify_key(Path(args.cec_key))
    failed = 0
    for name in args.package:
        try:
            h = cec_mod.verify_file(Path(name), key, args.station)
        except ProvisionError as exc:
            _out(f"FAIL {exc}")
            failed += 1
            continue
        digest = package_hash(Path(name).read_bytes())
        kiosks = ", ".join(k.device_id for k in h.recipients)
        named = (f" named {h.station_name!r} in {h.district_name!r}"
                 if h.station_name or h.district_name else " (no names)")
        _out(f"OK   {name}: election {h.election_id}, station {h.station_id} ({h.district})"
             f"{named}, v{h.roll_version}, {h.voter_count} voters, created {h.created}, "
             f"kiosks [{kiosks}], sha256 {digest}")
    return EXIT_CHECK_FAILED if failed else EXIT_OK


# ------------------------------------------------------------------ device


def cmd_device_init(args: argparse.Namespace) -> int:
    opts = dev.InitOptions(
        device_id=args.device_id, station_id=args.station, district=args.district,
        broker_url=args.broker, cec_key=Path(args.cec_key),
        ca_file=Path(args.ca) if args.ca else None, config_dir=Path(args.config_dir),
        state_dir=Path(args.state_dir), settings=Path(args.settings) if args.settings else None,
        user=args.user, ops_key=Path(args.ops_key) if args.ops_key else None,
    )
    cfg = dev.init_device(opts)
    _out(f"initialised kiosk {cfg.device_id} for station {cfg.station_id} ({cfg.district})")
    _out(f"  configuration {dev.config_path(Path(args.config_dir))}")
    _out(f"  keys in {cfg.key_dir} (0600, owner {args.user}); CEC key id "
         f"{key_id(dev.load_cec_key(cfg))}")
    _out(f"  broker {cfg.broker.url} as {cfg.broker.username}")
    _out("next: 'kesp-provision device request' and give the request to ops")
    return EXIT_OK


def qr_png_path(out: Path) -> Path:
    """Where ``device request --out FILE`` writes the QR code as an image."""
    return out.with_name(out.stem + ".qr.png")


def cmd_device_request(args: argparse.Namespace) -> int:
    import segno

    if os.geteuid() != 0:  # the keys are readable by root and the service user only
        require_user(args.user)
    req = dev.make_request(Path(args.config_dir))
    text = req.to_json()
    # The compact form (base45, QR alphanumeric mode) keeps the code at version
    # 13: 77 columns with its quiet zone, so it does not wrap on an 80-column console.
    qr = segno.make(req.to_qr_text(), error="m", micro=False)
    if args.out:
        from agent.runtime.durable import atomic_write

        out = Path(args.out)
        png = io.BytesIO()
        qr.save(png, kind="png", scale=8, border=4)
        atomic_write(out, (text + "\n").encode(), mode=0o644)
        atomic_write(qr_png_path(out), png.getvalue(), mode=0o644)
        _out(f"request written to {out}, its QR code to {qr_png_path(out)}")
    _out(text)
    if not args.no_qr:
        qr.terminal(out=sys.stdout, compact=True, border=4)
    _out(f"device {req.device_id}, station {req.station_id}, serial {req.serial}, "
         f"key {req.verify_key[:16]}…")
    return EXIT_OK


def cmd_device_install_roll(args: argparse.Namespace) -> int:
    res = dev.install_roll(Path(args.config_dir), Path(args.package), user=args.user,
                           new_election=args.new_election)
    h = res.header
    if res.status == "unchanged":
        _out(f"roll v{h.roll_version} for station {h.station_id} is already installed "
             f"(sha256 {res.roll_hash}); nothing changed")
        return EXIT_OK
    _out(f"installed roll v{h.roll_version} of {h.election_id} for station {h.station_id}: "
         f"{res.voters} voters")
    _out(f"roll hash (sha256) {res.roll_hash}: compare with the CEC manifest")
    if res.replaced:
        _out(f"replaced the previous roll {res.replaced[:16]}…")
    return EXIT_OK


def cmd_device_selftest(args: argparse.Namespace) -> int:
    from provisioning.selftest import run_selftest

    if os.geteuid() != 0:  # the keys are readable by root and the service user only
        require_user(args.user)
    cfg = dev.load_device_config(Path(args.config_dir))
    checks = run_selftest(cfg, broker_timeout_s=args.timeout)
    width = max(len(c.name) for c in checks)
    for c in checks:
        _out(f"{c.status.upper():7} {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        _out(f"NOT READY: fix {', '.join(failed)} (the FAIL lines say how)")
        return EXIT_CHECK_FAILED
    notes = []
    if any(c.status == "offline" for c in checks):
        notes.append("OFFLINE: the station works and sends its data when the broker is "
                     "reachable")
    if any(c.status == "warn" for c in checks):
        notes.append("with warnings")
    _out("READY" + (f" ({'; '.join(notes)})" if notes else ""))
    return EXIT_OK


# ------------------------------------------------------------------ ops


def cmd_ops_register(args: argparse.Namespace) -> int:
    from provisioning import opscmd

    _out(opscmd.register(Path(args.registry), Path(args.request)))
    return EXIT_OK


def cmd_ops_revoke(args: argparse.Namespace) -> int:
    from provisioning import opscmd

    _out(opscmd.revoke(Path(args.registry), args.device_id, args.reason))
    return EXIT_OK


def cmd_ops_broker_config(args: argparse.Namespace) -> int:
    from ops.broker_config import TlsFiles
    from provisioning import opscmd

    tls = TlsFiles(cafile=args.ca, certfile=args.cert, keyfile=args.cert_key)
    for line in opscmd.broker_config(Path(args.registry), Path(args.out_dir), tls=tls,
                                     ops_users=args.ops_user or ["ops"], port=args.port,
                                     bind=args.bind):
        _out(line)
    return EXIT_OK


def cmd_ops_keygen(args: argparse.Namespace) -> int:
    from provisioning import opscmd

    for line in opscmd.ops_keygen(Path(args.out_dir)):
        _out(line)
    return EXIT_OK


# ------------------------------------------------------------------ parser


_EPILOG = """\
exit codes: 0 done (or nothing to do), 1 refused (bad input or unsafe; nothing
changed), 2 bad command line, 3 a check ran and failed (cec verify, device selftest)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kesp-provision", description=__doc__, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = p.add_subparsers(dest="group", required=True, metavar="GROUP",
                              help="who does the step (GROUP --help lists its commands)")

    def group(name: str, text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        g = groups.add_parser(name, help=text, description=text, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        return g.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                                help="the step (COMMAND --help says more)")

    def add(
        sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
        fn: Callable[[argparse.Namespace], int], help_: str, more: str = "",
    ) -> argparse.ArgumentParser:
        text = textwrap.fill(help_[0].upper() + help_[1:] + ". " + more, 78)
        q = sub.add_parser(name, help=help_, description=text, epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        q.set_defaults(fn=fn)
        return q

    cec = group("cec", "CEC IT, on the offline workstation: the CEC key and the roll packages")
    q = add(cec, "keygen", cmd_cec_keygen, "create the CEC signing key (cec.sign, cec.pub)",
            "Once per election. cec.sign stays on this workstation; cec.pub goes to every "
            "kiosk.")
    q.add_argument("--out-dir", required=True, metavar="FOLDER",
                   help="where to write cec.sign (secret, 0600) and cec.pub")
    q = add(cec, "build", cmd_cec_build, "build the signed, encrypted roll package of every "
            "station", "Each package is encrypted to the kiosks registered for its station.")
    q.add_argument("--key", required=True, metavar="FILE", help="the CEC secret key, cec.sign")
    q.add_argument("--voters", required=True, metavar="CSV",
                   help="the voters list: list_number,name_ky,name_ru,document[,station_id] "
                        "(UTF-8, as Excel's 'CSV UTF-8' writes it)")
    q.add_argument("--stations", metavar="CSV",
                   help="the stations file: station_id,district,station_name,district_name, "
                        "one line per station, the names as slips and reports print them "
                        "(Kyrgyz / Russian). Without it the packages carry no names and "
                        "slips show the station and district ids")
    q.add_argument("--encoding", choices=ENCODINGS, default="utf-8",
                   help="encoding of the voters list and the stations file: utf-8 (default, "
                        "with or without BOM) or cp1251 (Excel's plain CSV on a "
                        "Russian-language PC; names with '?' for lost Kyrgyz letters are "
                        "refused)")
    q.add_argument("--templates", required=True, metavar="FOLDER",
                   help="fingerprint templates: FOLDER/<document>/<finger 1-10>.iso")
    q.add_argument("--registry", required=True, metavar="FILE",
                   help="ops' device registry: which kiosks each station has")
    q.add_argument("--election", required=True, metavar="ID",
                   help="election id printed on every slip, e.g. pres-2026")
    q.add_argument("--roll-version", type=int, required=True, metavar="N",
                   help="1 for the first build; every rebuild of the same election +1")
    q.add_argument("--station", metavar="ID",
                   help="the station of every voter, when the list has no station_id column")
    q.add_argument("--created", metavar="TIME",
                   help="creation time written into the packages, ISO 8601 UTC "
                        "(default: now)")
    q.add_argument("--out-dir", required=True, metavar="FOLDER",
                   help="new folder for the packages and manifest.csv")
    q.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="worker processes (default: all cores)")
    q = add(cec, "verify", cmd_cec_verify, "check packages' CEC signature and show their "
            "headers", "Nothing is decrypted.")
    q.add_argument("package", nargs="+", help="package file(s) (.pkg)")
    q.add_argument("--cec-key", required=True, metavar="FILE", help="the CEC's cec.pub")
    q.add_argument("--station", metavar="ID",
                   help="also require the packages to be for this station")

    d = group("device", "technician, at the kiosk: init, request, install-roll, selftest")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config-dir", default=str(dev.DEFAULT_CONFIG_DIR), metavar="FOLDER",
                       help="the kiosk's configuration folder (default: %(default)s)")
        q.add_argument("--user", default=SERVICE_USER,
                       help="the user the agent runs as (default: %(default)s)")

    q = add(d, "init", cmd_device_init, "generate the kiosk's keys and write its "
            "configuration", "Once per kiosk: its keys are never replaced in place.")
    q.add_argument("--device-id", required=True, metavar="ID",
                   help="this kiosk's id, e.g. osh-1017-a (lowercase letters, digits, '-')")
    q.add_argument("--station", required=True, metavar="ID",
                   help="the polling station it serves, e.g. s-1017")
    q.add_argument("--district", required=True, metavar="ID",
                   help="the station's district, e.g. osh-city")
    q.add_argument("--broker", required=True, metavar="URL",
                   help="the telemetry broker, mqtts://host:port")
    q.add_argument("--ca", metavar="FILE",
                   help="CA certificate of the broker, ca.crt (required for mqtts://)")
    q.add_argument("--cec-key", required=True, metavar="FILE",
                   help="the CEC's public key, cec.pub: roll packages must be signed by it")
    q.add_argument("--ops-key", metavar="FILE",
                   help="ops' public key, ops.pub: commands from ops must be signed by it")
    q.add_argument("--state-dir", default=str(dev.DEFAULT_STATE_DIR), metavar="FOLDER",
                   help="where the kiosk keeps its data (default: %(default)s)")
    q.add_argument("--settings", metavar="FILE",
                   help="JSON with further settings (sensor, printer, peers)")
    common(q)
    q = add(d, "request", cmd_device_request, "show the kiosk's signed registration request "
            "(JSON and QR code)", "Ops registers the kiosk from it.")
    q.add_argument("--out", metavar="FILE",
                   help="also write the request to FILE (JSON) and its QR code beside it "
                        "(FILE without .json + .qr.png)")
    q.add_argument("--no-qr", action="store_true", help="do not print the QR code")
    common(q)
    q = add(d, "install-roll", cmd_device_install_roll, "verify and install a roll package",
            "Checks the CEC signature, the station and that this kiosk can decrypt it.")
    q.add_argument("package", help="the station's package (.pkg), e.g. from the USB stick")
    q.add_argument("--new-election", action="store_true",
                   help="allow replacing the roll of another election")
    common(q)
    q = add(d, "selftest", cmd_device_selftest, "check keys, roll, disk, clock, broker, sensor "
            "and printer", "Ends with READY or NOT READY; an unreachable broker is OFFLINE, "
            "not a failure (the station works offline).")
    q.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the broker (default: %(default)s)")
    common(q)

    o = group("ops", "central ops: device registry, broker configuration, ops key")
    q = add(o, "register", cmd_ops_register, "register a kiosk from its request",
            "Registering the same request again changes nothing.")
    q.add_argument("request", help="the request file (JSON, or the text of its QR code)")
    q.add_argument("--registry", required=True, metavar="FILE",
                   help="the device registry (created by the first registration)")
    q = add(o, "revoke", cmd_ops_revoke, "revoke a kiosk (lost, stolen, replaced)",
            "Its telemetry is refused from then on.")
    q.add_argument("device_id", help="the kiosk's id")
    q.add_argument("--registry", required=True, metavar="FILE", help="the device registry")
    q.add_argument("--reason", default="revoked by ops", help="kept in the registry")
    q = add(o, "broker-config", cmd_ops_broker_config,
            "write mosquitto's TLS listener, password file and ACL from the registry",
            "Run it again after every registration or revocation, then reload mosquitto.")
    q.add_argument("--registry", required=True, metavar="FILE", help="the device registry")
    q.add_argument("--out-dir", required=True, metavar="FOLDER",
                   help="where to write listener.conf, passwd, acl and <ops user>.pass")
    q.add_argument("--cert", required=True, metavar="FILE", help="broker certificate (PEM)")
    q.add_argument("--cert-key", required=True, metavar="FILE",
                   help="broker private key (PEM)")
    q.add_argument("--ca", required=True, metavar="FILE", help="CA certificate (PEM)")
    q.add_argument("--port", type=int, default=8883,
                   help="port of the TLS listener (default: %(default)s)")
    q.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS",
                   help="address it listens on (default: %(default)s, every interface)")
    q.add_argument("--ops-user", action="append", metavar="NAME",
                   help="broker user of an ops server (repeatable; default: ops)")
    q = add(o, "keygen", cmd_ops_keygen, "create the ops command-signing key (ops.sign, "
            "ops.pub)", "Once. ops.sign stays with ops; ops.pub goes to every kiosk.")
    q.add_argument("--out-dir", required=True, metavar="FOLDER",
                   help="where to write ops.sign (secret, 0600) and ops.pub")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kesp-provision``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except (ProvisionError, ConfigError) as exc:
        sys.stderr.write(f"kesp-provision: refused: {exc}\n")
        return EXIT_REFUSED
    except OSError as exc:
        # e.g. the service user running a root step: say which file, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"kesp-provision: refused: {exc.strerror}{where}\n")
        return EXIT_REFUSED
    except KeyboardInterrupt:
        sys.stderr.write("kesp-provision: interrupted; nothing was half-written\n")
        return EXIT_REFUSED
    return code


if __name__ == "__main__":
    raise SystemExit(main())
