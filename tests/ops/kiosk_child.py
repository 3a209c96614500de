"""A kiosk process for the kill -9 test: vote forever, print each durable counter value."""

from __future__ import annotations

import sys
import time

from agent.runtime.config import parse_config
from agent.runtime.keys import load_keys
from agent.telemetry import Telemetry
from agent.telemetry.parameters import TelemetryTuning


def main() -> None:
    cfg = parse_config(sys.argv[1])
    tel = Telemetry(cfg, load_keys(sys.argv[2]), dict,
                    tuning=TelemetryTuning(backoff_initial_s=0.05, backoff_max_s=0.3))
    tel.start()
    i = 0
    while True:
        i += 1
        n = tel.emit("event", {"event": "slip.printed", "kiosk_no": i})
        print(f"event {n} {i}", flush=True)
        n = tel.emit("turnout", {"identified": i, "refused": 0, "not_identified": 0,
                                 "manual": 0, "by_hour": {"10": i}})
        print(f"turnout {n} {i}", flush=True)
        time.sleep(0.005)


if __name__ == "__main__":
    main()
