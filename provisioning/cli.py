"""``kesp-provision``: one command per technician step (see docs/TECHNICIAN.md).

Exit codes: 0 done (or nothing to do), 1 refused (bad input or unsafe;
nothing changed), 2 bad command line, 3 a check ran and failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.roll.package import package_hash
from agent.runtime.config import ConfigError
from provisioning import cec as cec_mod
from provisioning import device as dev
from provisioning.common import (
    CEC_PUB_FILE,
    CEC_SIGN_FILE,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    SERVICE_USER,
    ProvisionError,
    key_id,
    load_cec_signing_key,
    load_cec_verify_key,
    require_user,
    write_cec_keypair,
)
from provisioning.opscmd import station_kiosks
from provisioning.progress import Progress


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
    rows = cec_mod.read_voters_csv(Path(args.voters), Path(args.templates), station=args.station)
    kiosks = station_kiosks(Path(args.registry))
    jobs = cec_mod.make_jobs(rows, kiosks)
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
        _out(f"OK   {name}: election {h.election_id}, station {h.station_id} ({h.district}), "
             f"v{h.roll_version}, {h.voter_count} voters, created {h.created}, "
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


def cmd_device_request(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:  # the keys are readable by root and the service user only
        require_user(args.user)
    req = dev.make_request(Path(args.config_dir))
    text = req.to_json()
    if args.out:
        from agent.runtime.config import atomic_write

        atomic_write(Path(args.out), (text + "\n").encode(), mode=0o644)
        _out(f"request written to {args.out}")
    _out(text)
    if not args.no_qr:
        import segno

        segno.make(text, error="m", micro=False).terminal(out=sys.stdout, compact=True)
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
        _out(f"{c.status.upper():4} {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        _out(f"NOT READY: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    _out("READY" + (" (with warnings)" if any(c.status == "warn" for c in checks) else ""))
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kesp-provision", description=__doc__)
    groups = p.add_subparsers(dest="group", required=True)

    def add(
        sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
        fn: Callable[[argparse.Namespace], int], help_: str,
    ) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_, description=help_)
        q.set_defaults(fn=fn)
        return q

    cec = groups.add_parser("cec", help="CEC: keys and roll packages").add_subparsers(
        dest="cmd", required=True)
    q = add(cec, "keygen", cmd_cec_keygen, "create the CEC signing key (cec.sign, cec.pub)")
    q.add_argument("--out-dir", required=True)
    q = add(cec, "build", cmd_cec_build, "build signed, encrypted station roll packages")
    q.add_argument("--key", required=True, help="cec.sign")
    q.add_argument("--voters", required=True, help="voters CSV")
    q.add_argument("--templates", required=True, help="template directory")
    q.add_argument("--registry", required=True, help="ops device registry (the station's kiosks)")
    q.add_argument("--election", required=True)
    q.add_argument("--roll-version", type=int, required=True)
    q.add_argument("--station", help="station id when the CSV has no station_id column")
    q.add_argument("--created", help="ISO 8601 UTC timestamp (default: now)")
    q.add_argument("--out-dir", required=True)
    q.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    q = add(cec, "verify", cmd_cec_verify, "verify packages' CEC signature and show headers")
    q.add_argument("package", nargs="+")
    q.add_argument("--cec-key", required=True, help="cec.pub")
    q.add_argument("--station")

    d = groups.add_parser("device", help="kiosk: init, request, install-roll, selftest"
                          ).add_subparsers(dest="cmd", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config-dir", default=str(dev.DEFAULT_CONFIG_DIR))
        q.add_argument("--user", default=SERVICE_USER, help="the agent's service user")

    q = add(d, "init", cmd_device_init, "generate the kiosk keys and write its configuration")
    q.add_argument("--device-id", required=True)
    q.add_argument("--station", required=True)
    q.add_argument("--district", required=True)
    q.add_argument("--broker", required=True, help="mqtts://host:port")
    q.add_argument("--ca", help="PEM CA of the broker (required for mqtts)")
    q.add_argument("--cec-key", required=True, help="the CEC's cec.pub")
    q.add_argument("--ops-key", help="ops.pub: the key ops signs kiosk commands with")
    q.add_argument("--state-dir", default=str(dev.DEFAULT_STATE_DIR))
    q.add_argument("--settings", help="JSON with further configuration (sensor, printer, peers)")
    common(q)
    q = add(d, "request", cmd_device_request, "print the signed registration request (JSON, QR)")
    q.add_argument("--out", help="also write the request to this file")
    q.add_argument("--no-qr", action="store_true")
    common(q)
    q = add(d, "install-roll", cmd_device_install_roll, "verify and install a roll package")
    q.add_argument("package")
    q.add_argument("--new-election", action="store_true",
                   help="allow replacing a roll of another election")
    common(q)
    q = add(d, "selftest", cmd_device_selftest, "check keys, roll, disk, clock, broker, devices")
    q.add_argument("--timeout", type=float, default=5.0, help="broker timeout in seconds")
    common(q)

    o = groups.add_parser("ops", help="ops: device registry and broker configuration"
                          ).add_subparsers(dest="cmd", required=True)
    q = add(o, "register", cmd_ops_register, "register a kiosk from its request")
    q.add_argument("request", help="request JSON file")
    q.add_argument("--registry", required=True)
    q = add(o, "revoke", cmd_ops_revoke, "revoke a kiosk")
    q.add_argument("device_id")
    q.add_argument("--registry", required=True)
    q.add_argument("--reason", default="revoked by ops")
    q = add(o, "broker-config", cmd_ops_broker_config,
            "write mosquitto's TLS listener, password file and ACL from the registry")
    q.add_argument("--registry", required=True)
    q.add_argument("--out-dir", required=True)
    q.add_argument("--cert", required=True, help="broker certificate (PEM)")
    q.add_argument("--cert-key", required=True, help="broker private key (PEM)")
    q.add_argument("--ca", required=True, help="CA certificate (PEM)")
    q.add_argument("--port", type=int, default=8883)
    q.add_argument("--bind", default="0.0.0.0")
    q.add_argument("--ops-user", action="append", help="ops broker user (repeatable; default ops)")
    q = add(o, "keygen", cmd_ops_keygen, "create the ops command-signing key (ops.sign, ops.pub)")
    q.add_argument("--out-dir", required=True)
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
