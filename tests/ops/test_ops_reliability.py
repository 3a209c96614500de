"""End to end against a real mosquitto: outages, wiped broker, flapping link, kill -9."""

from __future__ import annotations

import time

from ops_helpers import World, turnout, until

from agent.telemetry import Telemetry, Uplink
from ops.service import OpsService


def _vote(tel: Telemetry, i: int, ledger: dict[str, list[int]]) -> None:
    ledger["event"].append(tel.emit("event", {"event": "slip.printed", "kiosk_no": i}))
    ledger["turnout"].append(tel.emit("turnout", turnout(i)))


def _assert_exact(ops: OpsService, device: str, ledger: dict[str, list[int]], total: int) -> None:
    assert until(lambda: ops.turnout().by_device.get(device) is not None
                 and ops.turnout().by_device[device].identified == total
                 and len(ops.store.events(device)) == len(ledger["event"]), 30), (
        ops.turnout().by_device.get(device), len(ops.store.events(device)), ops.stats())
    events = ops.store.events(device)
    assert [n for n, _, _ in events] == ledger["event"]  # every event once, in order
    assert [p["kiosk_no"] for _, _, p in events] == list(range(1, total + 1))
    log = ops.store.turnout_log(device)
    assert [n for n, _ in log] == ledger["turnout"]
    assert [i for _, i in log] == list(range(1, total + 1))


def test_broker_outage_mid_day_exact_counts(world: World) -> None:
    ops = world.ops()
    k1, k2 = world.kiosk("k-1"), world.kiosk("k-2")
    k3 = world.kiosk("k-3", station="st-2", district="d-2")
    ledgers: dict[str, dict[str, list[int]]] = {
        k: {"event": [], "turnout": []} for k in ("k-1", "k-2", "k-3")}
    for i in range(1, 31):
        for tel, name in ((k1, "k-1"), (k2, "k-2"), (k3, "k-3")):
            _vote(tel, i, ledgers[name])
        if i == 10:
            world.broker.stop()  # the uplink goes away; voting goes on
            assert until(lambda: k1.uplink is Uplink.DISCONNECTED, 5)
        if i == 20:
            assert k1.outbox_depth() >= 20
            world.broker.start()
    for tel in (k1, k2, k3):
        assert tel.flush(20)
    for name in ("k-1", "k-2", "k-3"):
        _assert_exact(ops, name, ledgers[name], 30)
    summary = ops.turnout()
    assert summary.by_station["st-1"].identified == 60
    assert summary.by_district["d-2"].identified == 30
    assert summary.by_district["d-1"].by_hour == {"08": 60}
    stats = ops.stats()
    assert set(stats.rejected) <= {"duplicate"}  # redeliveries only, all counted once
    assert all(d.online for d in ops.devices())


def test_broker_wiped_while_ops_away_is_recovered_by_resend(world: World) -> None:
    ops = world.ops()
    tel = world.kiosk("k-1")
    ledger: dict[str, list[int]] = {"event": [], "turnout": []}
    for i in range(1, 6):
        _vote(tel, i, ledger)
    assert tel.flush(10)
    assert until(lambda: len(ops.store.events("k-1")) == 5, 10)
    ops.stop()
    world.services.clear()
    # The broker acknowledges these and queues them for the absent ops session ...
    for i in range(6, 16):
        _vote(tel, i, ledger)
    assert tel.flush(10) and tel.outbox_depth() == 0
    # ... then loses them: its persistence is wiped.
    world.broker.restart(wipe=True)
    ops = world.ops()
    # The kiosk's new birth announces last_n; ops sees the gap and asks for a resend.
    _assert_exact(ops, "k-1", ledger, 15)
    assert ops.commands_sent >= 1
    assert tel.status().commands_accepted >= 1


def test_flapping_uplink(world: World) -> None:
    ops = world.ops()
    tel = world.kiosk("k-1")
    ledger: dict[str, list[int]] = {"event": [], "turnout": []}
    i = 0
    for cycle in range(4):
        for _ in range(8):
            i += 1
            _vote(tel, i, ledger)
            time.sleep(0.01)
        if cycle % 2:
            world.broker.kill()  # abrupt: no persistence flush
        else:
            world.broker.stop()
        time.sleep(0.3)
        world.broker.start()
    assert tel.flush(20)
    _assert_exact(ops, "k-1", ledger, i)


def test_kiosk_killed_mid_publish(world: World) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    ops = world.ops()
    cfg = world.config("k-1")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("kiosk_child.py")), cfg.to_json(),
         str(world.tmp / "keys" / "k-1")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    printed: list[tuple[str, int, int]] = []
    try:
        while len(printed) < 120:  # well into publishing
            line = child.stdout.readline()
            assert line, "kiosk child died"
            kind, n, i = line.split()
            printed.append((kind, int(n), int(i)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    printed.extend((k, int(n), int(i)) for k, n, i in
                   (ln.split() for ln in child.stdout.read().splitlines() if ln.count(" ") == 2))
    # The kiosk comes back (same state directory) and drains what kill -9 left behind.
    tel = world.kiosk("k-1")
    assert tel.flush(20)
    last_vote = max(i for _, _, i in printed)
    # At most one record may be durable without having been printed (killed in between).
    assert until(lambda: len(ops.store.events("k-1")) >= last_vote, 20)
    events = ops.store.events("k-1")
    want = [n for k, n, _ in printed if k == "event"]
    assert [n for n, _, _ in events][:len(want)] == want
    assert len(events) - len(want) in (0, 1)
    assert [p["kiosk_no"] for _, _, p in events] == list(range(1, len(events) + 1))
    assert until(lambda: ops.turnout().by_device["k-1"].identified >= last_vote, 10)
    assert ops.turnout().by_device["k-1"].identified in (len(events) - 1, len(events))
    assert set(ops.stats().rejected) <= {"duplicate"}


def test_two_ops_instances_share_load_through_postgres(world: World) -> None:
    import uuid

    import psycopg
    import pytest

    from ops.store import PostgresStore

    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    stores = [PostgresStore(url, prefix=prefix, instance=f"ops-{i}", create=True)
              for i in (1, 2)]
    try:
        ops_a = world.ops(store=stores[0], client_id="kesp-ops-a")
        ops_b = world.ops(store=stores[1], client_id="kesp-ops-b")
        tel = world.kiosk("k-1")
        ledger: dict[str, list[int]] = {"event": [], "turnout": []}
        for i in range(1, 41):
            _vote(tel, i, ledger)
        assert tel.flush(20)
        _assert_exact(ops_a, "k-1", ledger, 40)
        # both instances took part, and both see the same (shared) totals
        per_instance = {}
        for s in stores:
            with s._tx() as cur:
                cur.execute(f"SELECT instance, value FROM {prefix}counters WHERE name='accepted'")
                per_instance.update(dict(cur.fetchall()))
        assert set(per_instance) == {"ops-1", "ops-2"} and all(per_instance.values())
        assert ops_b.turnout().by_device["k-1"].identified == 40
        assert ops_a.stats() == ops_b.stats()
    finally:
        for svc in list(world.services):
            svc.stop()
        world.services.clear()
        cleanup = PostgresStore(url, prefix=prefix, create=True)
        cleanup.drop()
        cleanup.close()


def test_flapping_network_in_front_of_a_running_broker(world: World) -> None:
    from ops_helpers import FlakyLink

    ops = world.ops()
    link = FlakyLink(world.broker.port)
    try:
        tel = world.kiosk("k-1", url=link.url)
        ledger: dict[str, list[int]] = {"event": [], "turnout": []}
        i = 0
        for cycle in range(6):  # the link drops every ~0.4 s, sometimes stays down a while
            for _ in range(6):
                i += 1
                _vote(tel, i, ledger)
                time.sleep(0.03)
            link.cut()
            if cycle % 2:
                link.down = True
                time.sleep(0.3)
                link.down = False
        assert tel.flush(20)
        _assert_exact(ops, "k-1", ledger, i)
        assert tel.status().boot >= 4  # it really reconnected several times
    finally:
        link.close()
