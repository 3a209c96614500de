"""Minutia Cylinder-Code matcher (bit cylinders, LSS-R consolidation) and 1:N galleries.

Pipeline (named stages, see docs/MATCHING.md):

1. ``prepare`` (:mod:`agent.match.cylinders`): one cylinder per minutia, a
   bit grid of where the neighbouring minutiae are and which way they point.
2. local similarities (:mod:`agent.match.lssr`): for every cylinder pair whose
   directions differ by at most ``delta_theta``,
   ``1 - sqrt(|a^b|) / (sqrt|a| + sqrt|b|)`` over the cells valid in both.
3. LSS-R (:mod:`agent.match.lssr`): the best one-to-one pairs are relaxed by
   their geometric compatibility with each other; the score is the mean
   relaxed similarity of the ``n_p`` most efficient pairs, in [0, 1].

This module is the public face: :class:`Matcher` (1:1), :class:`Gallery`
(contiguous arrays for 1:N, saved and loaded), :func:`warm_up`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numba
import numpy as np
from numpy.typing import NDArray

from agent.match import cylinders, lssr
from agent.match import parameters as prm
from agent.match.cylinders import G_T, ROW
from agent.match.template import Template
from agent.runtime.jit import set_threads


@dataclass(frozen=True, eq=False)
class Prepared:
    """Cylinders of one template: only minutiae whose cylinder is valid.

    ``words`` rows are ``[validity mask, 6 direction layers]``
    (:data:`~agent.match.cylinders.ROW` words); ``geometry`` rows are
    (x, y up, angle, cos, sin) of the cylinder's minutia. Rows are sorted by
    direction.
    """

    words: NDArray[np.uint64]
    geometry: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def nbytes(self) -> int:
        """Memory held by this prepared template."""
        return self.words.nbytes + self.geometry.nbytes


_NO_PAIRS = np.empty((0, 2), np.int32)


class Matcher:
    """Compares templates (1:1) and builds galleries (1:N).

    ``threads`` bounds the cores a gallery search may use (``None`` = all
    that Numba was started with).
    """

    def __init__(self, params: prm.MccParameters = prm.DEFAULT, *, threads: int | None = None):
        self.params = params
        self.threads = threads
        self.tables = lssr.tables(params)
        self._dir = cylinders.direction_table(params)

    @property
    def _p(self) -> NDArray[np.float64]:
        """The kernel parameter vector (also recorded in saved galleries)."""
        return self.tables.p

    def _cylinders(
        self, templates: Sequence[Template]
    ) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]:
        return cylinders.build(self.params, self._dir, templates)

    def prepare(self, template: Template) -> Prepared:
        """Build the cylinders of one template (reuse the result for many comparisons)."""
        words, geometry, _ = self._cylinders([template])
        return Prepared(words, geometry)

    def _compare(self, a: Prepared, b: Prepared, out: NDArray[np.int32]) -> float:
        t = self.tables
        return float(lssr.compare(a.words, a.geometry, b.words, b.geometry, t.p, t.lut, t.n_p,
                                  out))

    def compare_prepared(self, a: Prepared, b: Prepared) -> float:
        """Similarity of two prepared templates, in [0, 1]."""
        return self._compare(a, b, _NO_PAIRS)

    def pairs(self, a: Prepared, b: Prepared) -> tuple[float, list[tuple[int, int]]]:
        """Score and the consolidated (row in ``a``, row in ``b``) cylinder pairs behind it."""
        out = np.full((self.params.max_np, 2), -1, np.int32)
        score = self._compare(a, b, out)
        return score, [(int(i), int(j)) for i, j in out if i >= 0]

    def compare(self, a: Template, b: Template) -> float:
        """Similarity of two templates in [0, 1]; higher = more similar; symmetric."""
        return self.compare_prepared(self.prepare(a), self.prepare(b))

    def gallery(self, templates: Sequence[Template]) -> Gallery:
        """Pack ``templates`` for 1:N search (indices follow the input order)."""
        return Gallery(self, templates)


GALLERY_FORMAT_VERSION = 4
"""Version of the file written by ``Gallery.save`` (bump when the layout changes)."""
_GALLERY_MAGIC = b"KESPGAL\x00"


class GalleryFileError(ValueError):
    """A saved gallery cannot be used (corrupt, other version or other parameters)."""


class Gallery:
    """Cylinders of many templates in contiguous arrays, searched 1:N.

    ``words`` is flat, in the comparison kernel's column layout
    (:func:`~agent.match.lssr.columns`: per template, word by word, then
    ``lssr.PAD`` spare words); ``geometry`` has one row per cylinder and
    ``offsets[g]:offsets[g + 1]`` are template ``g``'s cylinders.
    """

    def __init__(self, matcher: Matcher, templates: Sequence[Template]) -> None:
        self.matcher = matcher
        rows, self.geometry, self.offsets = matcher._cylinders(templates)
        self.words = lssr.columns(rows, self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def save(self, path: Path | BinaryIO) -> None:
        """Write the packed cylinders to ``path`` so start-up can skip building.

        ``path`` may also be a binary file object (the agent encrypts the
        bytes before they touch the disk). The layout is raw little-endian
        arrays behind a small header (magic, format version, sizes, the matcher
        parameters it was built with), so :meth:`load` can read it without a
        container format; it refuses a file that does not match.
        """
        if isinstance(path, Path):
            with path.open("wb") as fh:
                self.save(fh)
            return
        p = np.ascontiguousarray(self.matcher._p, "<f8")
        path.write(_GALLERY_MAGIC + struct.pack("<IQQI", GALLERY_FORMAT_VERSION, len(self.geometry),
                                                len(self.offsets), len(p)))
        for array, dtype in ((p, "<f8"), (self.words[:-lssr.PAD], "<u8"), (self.geometry, "<f4"),
                             (self.offsets, "<i8")):
            path.write(np.ascontiguousarray(array, dtype).tobytes())

    @classmethod
    def load(cls, matcher: Matcher, source: Path | BinaryIO | bytes | memoryview) -> Gallery:
        """Read a gallery written by :meth:`save`, validating it at the boundary.

        ``source`` is a path, a binary file or the bytes themselves (a
        ``memoryview`` avoids copying a large decrypted buffer: each array is
        copied out of it exactly once). Raises ``GalleryFileError`` for a wrong
        version, other parameters, or inconsistent arrays.
        """
        if isinstance(source, Path):
            try:
                data: bytes | memoryview = source.read_bytes()
            except OSError as exc:
                raise GalleryFileError(f"{source}: cannot read ({exc.strerror})") from exc
        elif isinstance(source, (bytes, memoryview)):
            data = source
        else:
            data = source.read()
        buf = memoryview(data)
        head = len(_GALLERY_MAGIC) + struct.calcsize("<IQQI")
        if len(buf) < head or bytes(buf[:len(_GALLERY_MAGIC)]) != _GALLERY_MAGIC:
            raise GalleryFileError("not a gallery file")
        version, n, n_off, n_p = struct.unpack("<IQQI", buf[len(_GALLERY_MAGIC):head])
        if version != GALLERY_FORMAT_VERSION:
            raise GalleryFileError(f"gallery format {version} unsupported")
        sizes = (8 * n_p, 8 * ROW * n, 4 * 5 * n, 8 * n_off)
        if len(buf) != head + sum(sizes):
            raise GalleryFileError("gallery file truncated or too long")
        at = head
        parts = []
        for size in sizes:
            parts.append(buf[at:at + size])
            at += size
        params = np.frombuffer(parts[0], "<f8")
        if not np.array_equal(params, matcher._p):
            raise GalleryFileError("gallery built with other matcher parameters")
        words = np.zeros(n * ROW + lssr.PAD, np.uint64)
        words[:n * ROW] = np.frombuffer(parts[1], "<u8")
        geometry = np.frombuffer(parts[2], "<f4").reshape(n, 5).astype(np.float32)
        offsets = np.frombuffer(parts[3], "<i8").astype(np.int64)
        if (
            len(offsets) == 0
            or offsets[0] != 0
            or offsets[-1] != n
            or bool(np.any(np.diff(offsets) < 0))
            or not bool(np.all(np.isfinite(geometry)))
        ):
            raise GalleryFileError("gallery arrays are inconsistent")
        # The kernel relies on each template's cylinders being sorted by direction.
        t = geometry[:, G_T]
        same = np.ones(max(n - 1, 0), np.bool_)
        same[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < n)] - 1] = False
        if bool(np.any((t < 0) | (t >= 2 * math.pi))) or bool(np.any(np.diff(t)[same] < 0)):
            raise GalleryFileError("gallery cylinder directions out of range or unsorted")
        g = cls.__new__(cls)
        g.matcher = matcher
        g.words = words
        g.geometry = geometry
        g.offsets = offsets
        return g

    def subset(self, indices: NDArray[np.integer]) -> Gallery:
        """A gallery of the templates ``indices`` (in that order), sharing nothing with this one.

        Copies each template's block of the packed arrays (no cylinders are
        rebuilt): cheap for a shortlist of a few dozen templates.
        """
        idx = np.asarray(indices, np.int64)
        sizes = self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        words = np.zeros(int(offsets[-1]) * ROW + lssr.PAD, np.uint64)
        geometry = np.empty((int(offsets[-1]), 5), np.float32)
        for k, g in enumerate(idx):
            s, e = int(self.offsets[g]), int(self.offsets[g + 1])
            words[offsets[k] * ROW:offsets[k + 1] * ROW] = self.words[s * ROW:e * ROW]
            geometry[offsets[k]:offsets[k + 1]] = self.geometry[s:e]
        g = Gallery.__new__(Gallery)
        g.matcher = self.matcher
        g.words = words
        g.geometry = geometry
        g.offsets = offsets
        return g

    @property
    def nbytes(self) -> int:
        """Memory held by the packed gallery (all arrays)."""
        return self.words.nbytes + self.geometry.nbytes + self.offsets.nbytes

    def scores(
        self,
        probe: Template | Prepared,
        *,
        threads: int | None = None,
    ) -> NDArray[np.float32]:
        """Score of ``probe`` against every template, in gallery order (exhaustive)."""
        q = probe if isinstance(probe, Prepared) else self.matcher.prepare(probe)
        out = np.zeros(len(self), np.float32)
        if len(self) == 0 or len(q) == 0:
            return out
        n_threads = threads if threads is not None else self.matcher.threads
        previous = numba.get_num_threads()
        if n_threads is not None:
            set_threads(n_threads)
        t = self.matcher.tables
        try:
            lssr.search(q.words, q.geometry, self.words, self.geometry, self.offsets,
                        t.p, t.lut, t.n_p, 16 * numba.get_num_threads(), out)
        finally:
            set_threads(previous)
        return out

    def search(
        self,
        probe: Template | Prepared,
        top: int = 10,
        *,
        threads: int | None = None,
    ) -> list[tuple[int, float]]:
        """The ``top`` best (index, score) pairs, best first (ties by lower index)."""
        if top <= 0:
            return []
        s = self.scores(probe, threads=threads)
        k = min(top, len(s))
        if k == 0:
            return []
        idx = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        idx = idx[np.lexsort((idx, -s[idx]))]
        return [(int(i), float(s[i])) for i in idx]


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on tiny inputs.

    The agent calls this at start-up so the first voter does not pay for
    compilation.
    """
    rng = np.random.default_rng(0)
    ts = [
        Template.from_arrays(
            rng.uniform(20, 280, 12), rng.uniform(20, 380, 12), rng.uniform(0, 6.28, 12),
            width=300, height=400,
        )
        for _ in range(2)
    ]
    m = Matcher()
    a, b = m.prepare(ts[0]), m.prepare(ts[1])
    m.compare_prepared(a, b)
    m.pairs(a, b)
    g = m.gallery(ts)
    g.search(a, top=1)
