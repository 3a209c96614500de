"""A dependency-free progress bar for long CEC runs (redrawn on a terminal, lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts done items out of ``total`` and redraws at most every ``interval_s``."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, interval_s: float = 0.5
    ) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.extra = ""
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._tty = self.stream.isatty()

    def advance(self, n: int = 1, extra: str = "") -> None:
        """Record ``n`` more items done; ``extra`` is shown after the counts."""
        self.done += n
        self.extra = extra
        now = time.perf_counter()
        if self.done >= self.total or now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(30 * frac)
        line = (
            f"{self.label} [{bar:<30}] {self.done}/{self.total} {self.extra} "
            f"{elapsed:6.1f}s elapsed, ~{eta:5.0f}s left"
        )
        if self._tty:
            self.stream.write("\r" + line)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
