"""Finger minutiae record codecs: ISO/IEC 19794-2:2005, ANSI INCITS 378-2004, ISO/IEC 19794-2:2011.

Pure functions, no I/O. Readers validate every field they touch and raise
:class:`~agent.match.template.TemplateError` naming the byte offset and the
field; they never leak ``IndexError``/``struct.error`` and never loop on a
length they have not bounded by the input size.

All formats are normalised to :class:`~agent.match.template.Template`
(coordinates at ``STANDARD_DPI``). Writers produce single-view records at
197 px/cm (500 dpi).

Format detection (``load_template``):

* ``FMR\\0`` + ``030\\0``  -> ISO/IEC 19794-2:2011.
* ``FMR\\0`` + `` 20\\0``  -> ISO/IEC 19794-2:2005 when the 4-byte length at
  offset 8 equals the input size, ANSI INCITS 378-2004 when the 2-byte length
  at offset 8 does (or is 0 and the 4-byte length at offset 10 does). The two
  share magic and version, so the length field is the only discriminator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.match.template import PX_PER_CM_STANDARD, Template, TemplateError

Format = Literal["iso2005", "ansi378", "iso2011"]

_MAGIC = b"FMR\x00"
_V20 = b" 20\x00"
_V30 = b"030\x00"

MAX_COORDINATE = (1 << 14) - 1
"""x, y and image sizes are 14-bit fields in every supported format."""

# ISO 19794-2:2005 / ANSI 378 impression types: live plain, live rolled,
# non-live plain, non-live rolled, swipe (8), contactless/"other" (9 in ANSI).
_IMPRESSION_TYPES_2005 = frozenset({0, 1, 2, 3, 8, 9})
# ISO 19794-2:2011 adds latent types 4..7 and keeps 8 (swipe) and 24, 28, 29 (unknown/other).
_IMPRESSION_TYPES_2011 = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 24, 28, 29})
_MAX_FINGER_POSITION = 10
_QUALITY_NOT_REPORTED_2011 = 254
_QUALITY_FAILED_2011 = 255


class _Reader:
    """Bounds-checked big-endian reader that reports offsets and field names."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def need(self, n: int, field: str) -> int:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise TemplateError(
                f"truncated: {field} needs {n} bytes, {self.end - start} left",
                offset=start,
                field=field,
            )
        self.pos = start + n
        return start

    def u8(self, field: str) -> int:
        at = self.need(1, field)
        return self.data[at]

    def u16(self, field: str) -> int:
        at = self.need(2, field)
        return int.from_bytes(self.data[at : at + 2], "big")

    def u32(self, field: str) -> int:
        at = self.need(4, field)
        return int.from_bytes(self.data[at : at + 4], "big")

    def skip(self, n: int, field: str) -> None:
        self.need(n, field)


@dataclass(frozen=True)
class _Geometry:
    width: int
    height: int
    xres: int
    yres: int


def detect_format(data: bytes) -> Format:
    """Return which supported format ``data`` is, or raise ``TemplateError``."""
    if len(data) < 8:
        raise TemplateError(f"record of {len(data)} bytes is shorter than a header", offset=0,
                            field="header")
    if data[:4] != _MAGIC:
        raise TemplateError("not a finger minutiae record", offset=0, field="format identifier")
    version = data[4:8]
    if version == _V30:
        return "iso2011"
    if version != _V20:
        raise TemplateError(f"unsupported version {version!r}", offset=4, field="version")
    n = len(data)
    if n >= 12 and int.from_bytes(data[8:12], "big") == n:
        return "iso2005"
    if n >= 10 and int.from_bytes(data[8:10], "big") == n:
        return "ansi378"
    short_zero = n >= 14 and int.from_bytes(data[8:10], "big") == 0
    if short_zero and int.from_bytes(data[10:14], "big") == n:
        return "ansi378"
    raise TemplateError(
        f"record length field does not match the {n}-byte input (neither ISO 2005 nor ANSI 378)",
        offset=8,
        field="record length",
    )


def load_template(data: bytes) -> Template:
    """Decode the first finger view of any supported minutiae record.

    Raises ``TemplateError`` for anything malformed.
    """
    return load_templates(data)[0]


def load_templates(data: bytes) -> list[Template]:
    """Decode every finger view of a record (a record may hold several fingers)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TemplateError(f"expected bytes, got {type(data).__name__}", field="input")
    raw = bytes(data)
    fmt = detect_format(raw)
    if fmt == "iso2011":
        return _read_2011(raw)
    return _read_2005_family(raw, fmt)


def _scale(res: int) -> float:
    return PX_PER_CM_STANDARD / res


def _read_2005_family(data: bytes, fmt: Format) -> list[Template]:
    r = _Reader(data, 8)
    if fmt == "iso2005":
        r.u32("record length")
        r.u16("capture equipment")
    else:
        if r.u16("record length") == 0:
            r.u32("record length (extended)")
        r.u32("CBEFF product identifier")
        r.u16("capture equipment")
    width_at = r.pos
    width = r.u16("image width")
    height = r.u16("image height")
    xres_at = r.pos
    xres = r.u16("x resolution")
    yres = r.u16("y resolution")
    views_at = r.pos
    n_views = r.u8("number of finger views")
    r.u8("reserved")
    if width == 0 or width > MAX_COORDINATE:
        raise TemplateError(f"image width {width} not in 1..{MAX_COORDINATE}", offset=width_at,
                            field="image width")
    if height == 0 or height > MAX_COORDINATE:
        raise TemplateError(f"image height {height} not in 1..{MAX_COORDINATE}",
                            offset=width_at + 2, field="image height")
    if xres == 0:
        raise TemplateError("x resolution is 0", offset=xres_at, field="x resolution")
    if yres == 0:
        raise TemplateError("y resolution is 0", offset=xres_at + 2, field="y resolution")
    if n_views == 0:
        raise TemplateError("record holds no finger view", offset=views_at,
                            field="number of finger views")
    geo = _Geometry(width, height, xres, yres)
    out = [_read_view_2005(r, geo, fmt) for _ in range(n_views)]
    if r.pos != len(data):
        raise TemplateError(f"{len(data) - r.pos} bytes after the last finger view", offset=r.pos,
                            field="record length")
    return out


def _read_view_2005(r: _Reader, geo: _Geometry, fmt: Format) -> Template:
    pos_at = r.pos
    position = r.u8("finger position")
    if position > _MAX_FINGER_POSITION:
        raise TemplateError(f"finger position {position} > {_MAX_FINGER_POSITION}", offset=pos_at,
                            field="finger position")
    imp_at = r.pos
    impression = r.u8("view number / impression type") & 0x0F
    if impression not in _IMPRESSION_TYPES_2005:
        raise TemplateError(f"impression type {impression} unknown", offset=imp_at,
                            field="impression type")
    q_at = r.pos
    quality = r.u8("finger quality")
    if quality > 100:
        raise TemplateError(f"finger quality {quality} > 100", offset=q_at, field="finger quality")
    n = r.u8("number of minutiae")
    angle_unit = 2.0 * math.pi / 256.0 if fmt == "iso2005" else math.radians(2.0)
    x, y, a, k, q = _read_minutiae(r, n, 6, geo, angle_unit, 255 if fmt == "iso2005" else 179)
    _skip_extended(r, None)
    return _build(x, y, a, k, q, geo, quality, position, fmt)


def _read_minutiae(
    r: _Reader, n: int, size: int, geo: _Geometry, angle_unit: float, max_angle: int
) -> tuple[list[float], list[float], list[float], list[int], list[int]]:
    r.need(0, "minutiae")
    if r.pos + n * size > r.end:
        raise TemplateError(
            f"{n} minutiae of {size} bytes do not fit in the {r.end - r.pos} bytes left",
            offset=r.pos,
            field="number of minutiae",
        )
    xs: list[float] = []
    ys: list[float] = []
    angles: list[float] = []
    kinds: list[int] = []
    quals: list[int] = []
    for i in range(n):
        at = r.pos
        w1 = r.u16(f"minutia {i} type/x")
        w2 = r.u16(f"minutia {i} y")
        ang = r.u8(f"minutia {i} angle")
        qual = r.u8(f"minutia {i} quality") if size == 6 else _QUALITY_NOT_REPORTED_2011
        kind = w1 >> 14
        x = w1 & 0x3FFF
        y = w2 & 0x3FFF
        if kind == 3:
            raise TemplateError(f"minutia {i} has reserved type 3", offset=at,
                                field=f"minutia {i} type")
        if x >= geo.width:
            raise TemplateError(f"minutia {i} x={x} outside image width {geo.width}", offset=at,
                                field=f"minutia {i} x")
        if y >= geo.height:
            raise TemplateError(f"minutia {i} y={y} outside image height {geo.height}",
                                offset=at + 2, field=f"minutia {i} y")
        if ang > max_angle:
            raise TemplateError(f"minutia {i} angle code {ang} > {max_angle}", offset=at + 4,
                                field=f"minutia {i} angle")
        if size == 6 and qual > 100 and qual not in (
            _QUALITY_NOT_REPORTED_2011,
            _QUALITY_FAILED_2011,
        ):
            raise TemplateError(f"minutia {i} quality {qual} > 100", offset=at + 5,
                                field=f"minutia {i} quality")
        xs.append(x)
        ys.append(y)
        angles.append(ang * angle_unit)
        kinds.append(kind)
        quals.append(qual if qual <= 100 else 0)
    return xs, ys, angles, kinds, quals


def _skip_extended(r: _Reader, view_end: int | None) -> None:
    """Validate and skip the extended data of one view.

    The 2-byte total length is followed by typed blocks (type 2 bytes, length
    2 bytes). Writers disagree whether a block length counts its own 4-byte
    header; both readings are accepted when exactly one of them tiles the
    declared total.
    """
    len_at = r.pos
    total = r.u16("extended data length")
    if total == 0:
        return
    if view_end is not None and r.pos + total != view_end:
        raise TemplateError(
            f"extended data length {total} does not end the view", offset=len_at,
            field="extended data length",
        )
    start = r.pos
    r.need(total, "extended data")
    blocks = r.data[start : start + total]
    if not (_tiles(blocks, header_counted=True) or _tiles(blocks, header_counted=False)):
        raise TemplateError("extended data blocks do not add up to the declared length",
                            offset=len_at, field="extended data block length")


def _tiles(blocks: bytes, *, header_counted: bool) -> bool:
    pos = 0
    while pos < len(blocks):
        if pos + 4 > len(blocks):
            return False
        length = int.from_bytes(blocks[pos + 2 : pos + 4], "big")
        step = length if header_counted else length + 4
        if step < 4:
            return False
        pos += step
    return pos == len(blocks)


def _build(
    x: list[float],
    y: list[float],
    a: list[float],
    k: list[int],
    q: list[int],
    geo: _Geometry,
    quality: int,
    position: int,
    fmt: Format,
) -> Template:
    sx = _scale(geo.xres)
    sy = _scale(geo.yres)
    return Template(
        x=np.asarray(x, np.float32) * np.float32(sx),
        y=np.asarray(y, np.float32) * np.float32(sy),
        angle=np.asarray(a, np.float32),
        kind=np.asarray(k, np.uint8),
        minutia_quality=np.asarray(q, np.uint8),
        width=max(1, round(geo.width * sx)),
        height=max(1, round(geo.height * sy)),
        quality=quality,
        finger_position=position,
        source_format=fmt,
    )


def _read_2011(data: bytes) -> list[Template]:
    r = _Reader(data, 8)
    total_at = r.pos
    total = r.u32("record length")
    if total != len(data):
        raise TemplateError(f"record length {total} != input size {len(data)}", offset=total_at,
                            field="record length")
    reps_at = r.pos
    n_reps = r.u16("number of representations")
    cert_flag = r.u8("certification flag")
    if n_reps == 0:
        raise TemplateError("record holds no representation", offset=reps_at,
                            field="number of representations")
    out: list[Template] = []
    for _ in range(n_reps):
        rep_at = r.pos
        rep_len = r.u32("representation length")
        if rep_len < 4 or rep_at + rep_len > len(data):
            raise TemplateError(f"representation length {rep_len} overruns the record",
                                offset=rep_at, field="representation length")
        rr = _Reader(data, r.pos, rep_at + rep_len)
        out.append(_read_rep_2011(rr, cert_flag != 0))
        if rr.pos != rr.end:
            raise TemplateError(f"{rr.end - rr.pos} unread bytes in representation", offset=rr.pos,
                                field="representation length")
        r.pos = rr.end
    if r.pos != len(data):
        raise TemplateError("bytes after the last representation", offset=r.pos,
                            field="record length")
    return out


def _read_rep_2011(r: _Reader, has_cert: bool) -> Template:
    r.skip(9, "capture date and time")
    r.u8("capture device technology")
    r.u16("capture device vendor")
    r.u16("capture device type")
    nq = r.u8("number of quality blocks")
    quality = 0
    for i in range(nq):
        qat = r.pos
        score = r.u8(f"quality block {i} score")
        r.u16(f"quality block {i} vendor")
        r.u16(f"quality block {i} algorithm")
        if score > 100 and score != _QUALITY_FAILED_2011:
            raise TemplateError(f"quality score {score} > 100", offset=qat,
                                field=f"quality block {i} score")
        if i == 0 and score <= 100:
            quality = score
    if has_cert:
        nc = r.u8("number of certification blocks")
        r.skip(3 * nc, "certification blocks")
    pos_at = r.pos
    position = r.u8("finger position")
    if position > _MAX_FINGER_POSITION:
        raise TemplateError(f"finger position {position} > {_MAX_FINGER_POSITION}", offset=pos_at,
                            field="finger position")
    r.u8("representation number")
    xres_at = r.pos
    xres = r.u16("x resolution")
    yres = r.u16("y resolution")
    if xres == 0:
        raise TemplateError("x resolution is 0", offset=xres_at, field="x resolution")
    if yres == 0:
        raise TemplateError("y resolution is 0", offset=xres_at + 2, field="y resolution")
    imp_at = r.pos
    impression = r.u8("impression type")
    if impression not in _IMPRESSION_TYPES_2011:
        raise TemplateError(f"impression type {impression} unknown", offset=imp_at,
                            field="impression type")
    w_at = r.pos
    width = r.u16("image width")
    height = r.u16("image height")
    if width == 0 or width > MAX_COORDINATE:
        raise TemplateError(f"image width {width} not in 1..{MAX_COORDINATE}", offset=w_at,
                            field="image width")
    if height == 0 or height > MAX_COORDINATE:
        raise TemplateError(f"image height {height} not in 1..{MAX_COORDINATE}", offset=w_at + 2,
                            field="image height")
    f_at = r.pos
    flags = r.u8("minutia field length / ridge ending type")
    size = flags >> 4
    if size not in (5, 6):
        raise TemplateError(f"minutia field length {size} is neither 5 nor 6", offset=f_at,
                            field="minutia field length")
    if flags & 0x0F > 2:
        raise TemplateError(f"ridge ending type {flags & 0x0F} unknown", offset=f_at,
                            field="ridge ending type")
    n = r.u8("number of minutiae")
    geo = _Geometry(width, height, xres, yres)
    x, y, a, k, q = _read_minutiae(r, n, size, geo, 2.0 * math.pi / 256.0, 255)
    _skip_extended(r, r.end)
    return _build(x, y, a, k, q, geo, quality, position, "iso2011")


# --------------------------------------------------------------------------- writers


def _encode_minutiae(t: Template, angle_codes: int, width: int, height: int) -> bytes:
    out = bytearray()
    xs = np.rint(np.asarray(t.x, np.float64)).astype(np.int64)
    ys = np.rint(np.asarray(t.y, np.float64)).astype(np.int64)
    ang = np.asarray(t.angle, np.float64) % (2.0 * math.pi)
    for i in range(len(t)):
        xi, yi = int(xs[i]), int(ys[i])
        if not (0 <= xi < width and 0 <= yi < height):
            raise TemplateError(f"minutia {i} at ({xi}, {yi}) outside {width}x{height}",
                                field=f"minutia {i}")
        kind = int(t.kind[i])
        if kind > 2:
            raise TemplateError(f"minutia {i} kind {kind} cannot be encoded",
                                field=f"minutia {i} type")
        code = round(float(ang[i]) / (2.0 * math.pi) * angle_codes) % angle_codes
        q = min(100, int(t.minutia_quality[i]))
        out += ((kind << 14) | xi).to_bytes(2, "big")
        out += yi.to_bytes(2, "big")
        out += bytes((code, q))
    return bytes(out)


def _check_writable(t: Template) -> None:
    if len(t) > 255:
        raise TemplateError(f"{len(t)} minutiae exceed the 255 a view can hold",
                            field="number of minutiae")
    if t.width > MAX_COORDINATE or t.height > MAX_COORDINATE:
        raise TemplateError(f"image {t.width}x{t.height} exceeds 14-bit sizes", field="image size")
    if not 0 <= t.finger_position <= _MAX_FINGER_POSITION:
        raise TemplateError(f"finger position {t.finger_position} invalid",
                            field="finger position")


def to_iso2005(t: Template) -> bytes:
    """Encode ``t`` as a one-view ISO/IEC 19794-2:2005 record at 197 px/cm."""
    _check_writable(t)
    body = bytes((t.finger_position, 0, t.quality, len(t)))
    body += _encode_minutiae(t, 256, t.width, t.height)
    body += b"\x00\x00"
    total = 24 + len(body)
    head = (
        _MAGIC
        + _V20
        + total.to_bytes(4, "big")
        + b"\x00\x00"
        + t.width.to_bytes(2, "big")
        + t.height.to_bytes(2, "big")
        + PX_PER_CM_STANDARD.to_bytes(2, "big")
        + PX_PER_CM_STANDARD.to_bytes(2, "big")
        + b"\x01\x00"
    )
    return head + body


def to_ansi378(t: Template, *, product_id: int = 0) -> bytes:
    """Encode ``t`` as a one-view ANSI INCITS 378-2004 record at 197 px/cm.

    ``product_id`` is the 4-byte CBEFF product identifier (owner << 16 | type).
    """
    _check_writable(t)
    if not 0 <= product_id <= 0xFFFFFFFF:
        raise TemplateError(f"CBEFF product id {product_id} is not 32-bit",
                            field="CBEFF product identifier")
    body = bytes((t.finger_position, 0, t.quality, len(t)))
    body += _encode_minutiae(t, 180, t.width, t.height)
    body += b"\x00\x00"
    rest = (
        product_id.to_bytes(4, "big")
        + b"\x00\x00"
        + t.width.to_bytes(2, "big")
        + t.height.to_bytes(2, "big")
        + PX_PER_CM_STANDARD.to_bytes(2, "big")
        + PX_PER_CM_STANDARD.to_bytes(2, "big")
        + b"\x01\x00"
        + body
    )
    total = 10 + len(rest)
    if total <= 0xFFFF:
        return _MAGIC + _V20 + total.to_bytes(2, "big") + rest
    total += 4
    return _MAGIC + _V20 + b"\x00\x00" + total.to_bytes(4, "big") + rest
