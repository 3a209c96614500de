"""Write one benchmark's section of ``benchmarks/RESULTS.md``.

Sections are delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->`` so
several benchmarks (run separately or together) never overwrite each other.
Every section is stamped with the machine and the date of the run.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = (
    "# Benchmark results\n\n"
    "Written by `make bench` (`python -m benchmarks`); each section by its own module.\n"
)


def machine() -> str:
    """One line describing the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) section ``name`` of RESULTS.md with ``body``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"_Run {stamp} on {machine()}._\n\n{body.rstrip()}\n<!-- END {name} -->\n"
    )
    RESULTS.touch(exist_ok=True)
    with RESULTS.open("r+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read() or _HEADER
        pattern = re.compile(
            rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n", re.S
        )
        text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text + "\n" + block
        fh.seek(0)
        fh.truncate()
        fh.write(text)
