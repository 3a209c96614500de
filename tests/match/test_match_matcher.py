"""Matcher and gallery: score bands on real FVC2002 pairs, invariances, search."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.match import Matcher, Template, load_template
from agent.match import parameters as prm
from agent.match.evaluation import load_set
from agent.match.matcher import warm_up


@pytest.fixture(scope="module")
def db1(ref_data: Path) -> dict[tuple[int, int], Template]:
    return load_set(ref_data / "fvc2002" / "DB1_B")


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher()


def transformed(t: Template, angle: float, dx: float, dy: float) -> Template:
    """Rigidly move a template (rotation about its centroid; ISO angles are CCW, y down)."""
    cx, cy = float(t.x.mean()), float(t.y.mean())
    c, s = math.cos(angle), math.sin(angle)
    # With y pointing down, a counter-clockwise turn as seen is (x, -y) rotated by +angle.
    x = cx + (t.x - cx) * c + (t.y - cy) * s + dx
    y = cy - (t.x - cx) * s + (t.y - cy) * c + dy
    return Template.from_arrays(x, y, t.angle + angle, width=2000, height=2000, kind=t.kind)


def test_mated_and_non_mated_score_bands(matcher: Matcher,
                                         db1: dict[tuple[int, int], Template]) -> None:
    prepared = {k: matcher.prepare(t) for k, t in db1.items()}
    genuine = [matcher.compare_prepared(prepared[(f, 1)], prepared[(f, j)])
               for f in range(10) for j in range(2, 9)]
    impostor = [matcher.compare_prepared(prepared[(f, 1)], prepared[(g, 1)])
                for f in range(10) for g in range(10) if f != g]
    t3 = prm.threshold(1e-3)
    assert max(impostor) < t3 * 1.5
    assert np.median(impostor) < prm.threshold(1e-1) * 1.2
    assert np.median(genuine) > 3 * t3
    assert np.mean(np.asarray(genuine) >= t3) >= 0.85


def test_self_score_is_high_and_bounded(matcher: Matcher,
                                        db1: dict[tuple[int, int], Template]) -> None:
    for t in list(db1.values())[:10]:
        s = matcher.compare(t, t)
        assert 0.9 <= s <= 1.0 + 1e-6


@pytest.mark.parametrize("degrees", [-60, -25, 30, 60])
def test_rotation_and_translation_invariance(matcher: Matcher, degrees: int,
                                             db1: dict[tuple[int, int], Template]) -> None:
    a = db1[(3, 1)]
    b = db1[(3, 2)]
    moved = transformed(b, math.radians(degrees), 200.0, -50.0)
    base = matcher.compare(a, b)
    assert matcher.compare(a, moved) == pytest.approx(base, rel=0.25, abs=0.02)
    assert matcher.compare(b, moved) > 0.8


def test_scores_are_symmetric(matcher: Matcher, db1: dict[tuple[int, int], Template]) -> None:
    keys = list(db1)[:24]
    worst = max(abs(matcher.compare(db1[a], db1[b]) - matcher.compare(db1[b], db1[a]))
                for a in keys for b in keys)
    assert worst < 0.05


def test_degenerate_templates_score_zero(matcher: Matcher,
                                         db1: dict[tuple[int, int], Template]) -> None:
    empty = Template.from_arrays([], [], [], width=300, height=400)
    lonely = Template.from_arrays([100.0], [100.0], [1.0], width=300, height=400)
    t = db1[(0, 1)]
    assert matcher.compare(empty, t) == 0.0
    assert matcher.compare(t, empty) == 0.0
    assert matcher.compare(lonely, t) == 0.0  # one minutia has no neighbours: no cylinder


def test_gallery_search_finds_mates(matcher: Matcher,
                                    db1: dict[tuple[int, int], Template]) -> None:
    keys = sorted(db1)
    g = matcher.gallery([db1[k] for k in keys])
    assert len(g) == 80
    assert g.nbytes > 0
    hits = 0
    for f in range(10):
        res = g.search(db1[(f, 1)], top=8)
        assert len(res) == 8
        assert res[0] == (keys.index((f, 1)), pytest.approx(res[0][1]))
        assert [s for _, s in res] == sorted((s for _, s in res), reverse=True)
        hits += sum(keys[i][0] == f for i, _ in res[1:])
    assert hits >= 0.75 * 10 * 7


def test_search_threads_and_edges(matcher: Matcher,
                                  db1: dict[tuple[int, int], Template]) -> None:
    ts = [db1[(f, 1)] for f in range(10)]
    g = matcher.gallery(ts)
    one = g.scores(ts[2], threads=1)
    two = g.scores(ts[2], threads=2)
    np.testing.assert_array_equal(one, two)
    assert np.allclose(one, [matcher.compare(ts[2], t) for t in ts], atol=1e-6)
    assert g.search(ts[2], top=0) == []
    assert len(g.search(ts[2], top=100)) == 10
    empty = matcher.gallery([])
    assert empty.search(ts[0]) == []


def test_gallery_keeps_indices_with_empty_templates(matcher: Matcher,
                                                    db1: dict[tuple[int, int], Template]) -> None:
    empty = Template.from_arrays([], [], [], width=300, height=400)
    g = matcher.gallery([empty, db1[(4, 2)], empty, db1[(4, 3)]])
    res = dict(g.search(db1[(4, 2)], top=4))
    assert res[0] == 0.0 and res[2] == 0.0
    assert res[1] > res[3] > 0.0


def test_register_template_file(matcher: Matcher, ref_data: Path) -> None:
    a = load_template((ref_data / "fvc2002" / "DB4_B" / "102_1.iso").read_bytes())
    b = load_template((ref_data / "fvc2002" / "DB4_B" / "102_2.iso").read_bytes())
    c = load_template((ref_data / "fvc2002" / "DB4_B" / "107_1.iso").read_bytes())
    assert matcher.compare(a, b) > matcher.compare(a, c)


def test_warm_up_runs() -> None:
    warm_up()


def test_gallery_save_and_load(matcher: Matcher, db1: dict[tuple[int, int], Template],
                               tmp_path: Path) -> None:
    from agent.match.matcher import Gallery, GalleryFileError

    ts = [db1[k] for k in sorted(db1)]
    g = matcher.gallery(ts)
    path = tmp_path / "station.gallery"
    g.save(path)
    loaded = Gallery.load(matcher, path)
    assert len(loaded) == len(g)
    np.testing.assert_array_equal(loaded.scores(ts[5]), g.scores(ts[5]))
    # Other parameters, a corrupt file, shuffled directions: all refused.
    other = Matcher(prm.MccParameters(radius=60.0))
    with pytest.raises(GalleryFileError, match="parameters"):
        Gallery.load(other, path)
    bad = tmp_path / "bad.gallery"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GalleryFileError):
        Gallery.load(matcher, bad)
    g.geometry[:] = g.geometry[::-1].copy()
    g.save(bad)
    with pytest.raises(GalleryFileError, match=r"unsorted|inconsistent"):
        Gallery.load(matcher, bad)


def test_gallery_words_are_stored_by_column(matcher: Matcher,
                                            db1: dict[tuple[int, int], Template]) -> None:
    from agent.match import lssr
    from agent.match.cylinders import ROW

    ts = [db1[(f, 2)] for f in range(5)]
    g = matcher.gallery(ts)
    assert g.words.shape == (len(g.geometry) * ROW + lssr.PAD,)
    assert not g.words[-lssr.PAD:].any()
    for k, t in enumerate(ts):
        rows = matcher.prepare(t).words
        s, e = g.offsets[k], g.offsets[k + 1]
        assert e - s == len(rows)
        # Word w of cylinder j of this template sits at block + w * nb + j.
        np.testing.assert_array_equal(g.words[s * ROW:e * ROW].reshape(ROW, e - s).T, rows)


def test_search_equals_one_to_one_over_a_whole_set(matcher: Matcher,
                                                   db1: dict[tuple[int, int], Template]) -> None:
    # Every template size (most not a multiple of the kernel's 8 lanes), the
    # last template reading into the padding: the gallery kernel and the 1:1
    # path (its own column copy) agree exactly.
    ts = [db1[k] for k in sorted(db1)]
    g = matcher.gallery(ts)
    assert len({len(matcher.prepare(t)) % 8 for t in ts}) > 4
    for probe in (ts[0], ts[41], ts[-1]):
        q = matcher.prepare(probe)
        expected = np.array([matcher.compare_prepared(q, matcher.prepare(t)) for t in ts],
                            np.float32)
        np.testing.assert_array_equal(g.scores(q, threads=1), expected)


def test_search_refuses_words_without_padding(matcher: Matcher,
                                              db1: dict[tuple[int, int], Template]) -> None:
    from agent.match import lssr

    g = matcher.gallery([db1[(1, 1)], db1[(2, 1)]])
    q = matcher.prepare(db1[(1, 2)])
    t = matcher.tables
    out = np.zeros(len(g), np.float32)
    with pytest.raises(ValueError, match="padding"):
        lssr.search(q.words, q.geometry, g.words[:-1], g.geometry, g.offsets, t.p, t.lut, t.n_p,
                    2, out)


def test_gallery_file_of_another_format_is_refused(matcher: Matcher,
                                                   db1: dict[tuple[int, int], Template],
                                                   tmp_path: Path) -> None:
    import struct

    from agent.match.matcher import GALLERY_FORMAT_VERSION, Gallery, GalleryFileError

    path = tmp_path / "old.gallery"
    matcher.gallery([db1[(1, 1)]]).save(path)
    data = bytearray(path.read_bytes())
    # The version follows the 8-byte magic; format 3 stored cylinders by row.
    assert struct.unpack_from("<I", data, 8)[0] == GALLERY_FORMAT_VERSION
    struct.pack_into("<I", data, 8, 3)
    with pytest.raises(GalleryFileError, match="format 3 unsupported"):
        Gallery.load(matcher, bytes(data))
