"""Typed wrappers around Numba's decorators.

Every kernel in the project is compiled through these so that

* ``cache=True`` is never forgotten (cold start is a tracked figure), and
* ``mypy --strict`` keeps the decorated function's signature instead of
  treating it as untyped (Numba ships no type information).

The cache directory is Numba's own ``NUMBA_CACHE_DIR``; the Makefile and the
systemd unit point it at a directory that survives between runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def njit(fn: F) -> F:
    """Compile ``fn`` in nopython mode, cached on disk, fastmath off."""
    return cast(F, numba.njit(cache=True, nogil=True)(fn))


def njit_parallel(fn: F) -> F:
    """Like :func:`njit` but with ``parallel=True`` so ``numba.prange`` splits work."""
    return cast(F, numba.njit(cache=True, nogil=True, parallel=True)(fn))


def set_threads(n: int) -> None:
    """Limit the threads ``prange`` kernels may use (1 = single core)."""
    ceiling = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(n, ceiling)))
