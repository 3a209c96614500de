"""Health sampling of the kiosk itself (temperature, load, memory, disk, clock).

Sensor, printer, roll and software facts come from the station application's
``health`` callable; :func:`sample_system` adds what the operating system
knows. Every reading that is unavailable on this machine is ``None`` rather
than a made-up value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
from pathlib import Path
from typing import Literal

ClockSync = Literal["synchronised", "unsynchronised", "unknown"]

_TIME_ERROR = 5  # adjtimex() return value: clock not synchronised
_STA_UNSYNC = 0x0040


def cpu_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """Highest thermal-zone temperature in °C (the SoC on a Raspberry Pi), or None."""
    best: float | None = None
    for zone in sorted(root.glob("thermal_zone*/temp")):
        try:
            value = int(zone.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        best = value if best is None else max(best, value)
    return best


def memory_available_fraction(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable / MemTotal, or None when /proc/meminfo is unreadable."""
    try:
        fields: dict[str, int] = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                fields[key] = int(parts[0])
        return round(fields["MemAvailable"] / fields["MemTotal"], 4)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return None


def uptime_s(path: Path = Path("/proc/uptime")) -> float | None:
    """Seconds since the kernel booted."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class _Timex(ctypes.Structure):
    # struct timex (Linux): we only read ``modes`` (in) and ``status`` (out);
    # the rest is padding large enough for every architecture's layout.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("_pad0", ctypes.c_int),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 256),
    ]


@functools.cache
def _libc_name() -> str | None:
    # find_library may run ldconfig: resolve once, not on every health sample.
    return ctypes.util.find_library("c")


def clock_sync_state() -> ClockSync:
    """Kernel NTP state via ``adjtimex`` (read-only): synchronised or not.

    chrony, ntpd and systemd-timesyncd all clear STA_UNSYNC once the clock is
    disciplined, so this works whichever daemon the image uses.
    """
    name = _libc_name()
    if name is None:
        return "unknown"
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return "unknown"
    if state < 0:
        return "unknown"
    if state == _TIME_ERROR or tx.status & _STA_UNSYNC:
        return "unsynchronised"
    return "synchronised"


def sample_system(state_dir: str | os.PathLike[str]) -> dict[str, object]:
    """One sample of the operating system's view of the kiosk."""
    try:
        load1, load5, _ = os.getloadavg()
        load: list[float] | None = [round(load1, 2), round(load5, 2)]
    except OSError:
        load = None
    try:
        usage = shutil.disk_usage(state_dir)
        disk_free: float | None = round(usage.free / usage.total, 4) if usage.total else None
    except OSError:
        disk_free = None
    temp = cpu_temperature_c()
    up = uptime_s()
    return {
        "cpu_temp_c": None if temp is None else round(temp, 1),
        "load": load,
        "mem_available": memory_available_fraction(),
        "disk_free": disk_free,
        "uptime_s": None if up is None else int(up),
        "clock": clock_sync_state(),
    }
