"""Receipt-printer capability profiles and the printer's tuned constants, as data.

A profile says what one printer model can do: paper width in dots, the
``ESC t n`` numbers of the code pages it has (and which python codec each one
is), whether it renders QR codes itself (``GS ( k``), how it cuts, how its
``DLE EOT`` status bytes are laid out, and its USB ids. The encoder, the
status decoder, the service and the simulator all read the same profile, so a
new model is a new entry here, not new code.

Sources: Epson ESC/POS reference (code page table: 17 = PC866, 46 = WPC1251,
53 = KZ-1048 on TM-T20II/III, T70II, T88V, m30III, L90), Citizen CT-S300 /
CT-S310II manuals (``DLE EOT 3`` bit 2 = mechanism error), python-escpos'
capabilities database (58 mm clones: 384 dots, 32 columns, CP866 at 17).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agent.runtime.config import ConfigError

# --- tuned constants (one place; see docs/DEVICES.md "Receipt printers") -------------

#: Font used to rasterise text the printer cannot print from a code page.
FONT_REGULAR = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FONT_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
#: Monospaced font the simulator uses to draw code-page text (12 x 24 dot cells).
FONT_MONO = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
FONT_MONO_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf")
#: Pixel size of rasterised text: close to the 24-dot Font A so raster and
#: code-page lines look alike on one slip.
RASTER_FONT_PX = 22
RASTER_FONT_PX_LARGE = 40
#: Smallest size a rasterised line shrinks to before a word is hyphenated (still
#: readable on 203 dpi thermal paper: about 2.4 mm capitals).
RASTER_FONT_PX_MIN = 18
#: Vertical pitch of one rasterised text line (font A is 24 dots + 6 spacing).
RASTER_LINE_DOTS = 30
RASTER_LINE_DOTS_LARGE = 54
#: Real printers misbehave when a GS v 0 band height is a multiple of this.
RASTER_BAD_BAND_MULTIPLE = 48
#: Lines fed before the cut so the last printed line clears the cutter.
CUT_FEED_DOTS = 48
#: Error-correction level of QR codes (M: 15 % recovery; slips get creased).
QR_ECC: Literal["L", "M", "Q", "H"] = "M"
#: Largest QR payload accepted (version 40-M byte mode is 2331 bytes).
QR_MAX_BYTES = 2331


@dataclass(frozen=True)
class PrinterTimings:
    """Timeouts of the printer service; tests shorten them, production keeps the defaults."""

    #: Reply time allowed for the four ``DLE EOT`` status bytes (real-time commands).
    #: A printer answers in milliseconds; the margin is for the kiosk's side: on a
    #: loaded 2-core machine the reply took up to 0.35 s to be read (p99 0.14 s,
    #: benchmarks/RESULTS.md), a Pi-class CPU is slower still.
    status_timeout_s: float = 2.0
    #: Further status reads after a slip that got no answer, before its outcome
    #: is declared uncertain (which prints it again as DUPLICATE).
    status_rereads: int = 2
    #: Time allowed for one write chunk to be accepted by the port / endpoint.
    write_timeout_s: float = 5.0
    #: Time allowed for the printer to finish a slip (``GS r 1`` barrier), plus per-KiB.
    print_timeout_s: float = 10.0
    print_timeout_per_kib_s: float = 0.5
    #: Period of the DLE EOT polls while waiting for a slip to finish.
    barrier_poll_s: float = 0.25
    #: Pause before reopening a device whose status read failed.
    reopen_delay_s: float = 0.2


DEFAULT_TIMINGS = PrinterTimings()


@dataclass(frozen=True)
class StatusLayout:
    """Where each condition lives in the ``DLE EOT n`` reply bytes (a mask per n).

    Every reply byte has the fixed pattern ``0xx1xx10``; the masks below pick
    the variable bits. A mask of 0 means the model does not report that condition.
    """

    n1_offline: int = 0x08
    n2_cover_open: int = 0x04
    n2_feed_button: int = 0x08
    n2_paper_stop: int = 0x20
    n2_error: int = 0x40
    n3_mechanism_error: int = 0x00
    n3_cutter_error: int = 0x08
    n3_unrecoverable: int = 0x20
    n3_auto_recoverable: int = 0x40
    n4_near_end: int = 0x0C
    n4_paper_end: int = 0x60


EPSON_STATUS = StatusLayout()
#: Citizen CT-S310II/CT-S300: ``DLE EOT 3`` bit 2 reports a mechanism error (also
#: raised by opening the cover while printing); ``DLE EOT 4`` reports each
#: near-end / paper-end sensor bit separately (any bit set counts).
CITIZEN_STATUS = StatusLayout(n3_mechanism_error=0x04)

CutMode = Literal["full", "partial"]


@dataclass(frozen=True)
class PrinterProfile:
    """What one printer model can do (see the module docstring)."""

    name: str
    description: str
    paper_mm: int
    dots_per_line: int
    chars_per_line: int
    #: ``(ESC t n, python codec)`` in order of preference for text; a line is
    #: printed from the first code page that encodes every character of it.
    code_pages: tuple[tuple[int, str], ...]
    qr_native: bool
    cut: CutMode
    status: StatusLayout
    #: ``(vendor, product)`` USB ids verified on real units of this model. Empty
    #: when nobody on the project has checked one: configure ``usb:VVVV:PPPP``
    #: from ``lsusb`` or let ``usb`` pick the first printer-class interface.
    usb_ids: tuple[tuple[int, int], ...] = ()
    #: Bytes per bulk OUT / serial write; small chunks avoid the ETIMEDOUT seen
    #: with long writes to 58 mm printers on a Raspberry Pi.
    write_chunk: int = 1024
    #: Tallest ``GS v 0`` band sent in one command.
    raster_band_rows: int = 64
    #: Whether ``GS r 1`` (processed in order, after the slip) is supported; it is
    #: the barrier that tells "printed" from "still in the buffer".
    transmit_status: bool = True

    def codec_for(self, n: int) -> str | None:
        """The python codec of ``ESC t n`` on this model, or None if it has no such page."""
        for number, codec in self.code_pages:
            if number == n:
                return codec
        return None

    def page_number(self, codec: str) -> int | None:
        """The ``ESC t`` number of ``codec`` on this model, or None."""
        for number, c in self.code_pages:
            if c == codec:
                return number
        return None

    @property
    def has_kz1048(self) -> bool:
        """Whether Kyrgyz letters can be printed as text (otherwise they are rasterised)."""
        return self.page_number("kz1048") is not None


_EPSON_80 = PrinterProfile(
    name="epson-tm-t20iii",
    description="Epson TM-T20III, 80 mm: KZ-1048 (ESC t 53), native QR",
    paper_mm=80,
    dots_per_line=576,
    chars_per_line=48,
    code_pages=((53, "kz1048"), (17, "cp866"), (46, "cp1251"), (0, "cp437")),
    qr_native=True,
    cut="partial",
    status=EPSON_STATUS,
)

PROFILES: dict[str, PrinterProfile] = {
    p.name: p
    for p in (
        PrinterProfile(
            name="generic-58",
            description="58 mm ESC/POS clone (POS-58, ZJ-5870, Xprinter XP-58): no KZ-1048, "
            "no native QR; Kyrgyz text and QR codes are rasterised",
            paper_mm=58,
            dots_per_line=384,
            chars_per_line=32,
            code_pages=((17, "cp866"), (0, "cp437")),
            qr_native=False,
            cut="partial",
            status=EPSON_STATUS,
            write_chunk=512,
        ),
        _EPSON_80,
        replace(_EPSON_80, name="epson-tm-m30iii",
                description="Epson TM-m30III, 80 mm: KZ-1048 (ESC t 53), native QR"),
        replace(_EPSON_80, name="citizen-ct-s310ii",
                description="Citizen CT-S310II, 80 mm: CP866 only (Kyrgyz letters "
                "rasterised), native QR, Citizen status layout",
                code_pages=((17, "cp866"), (0, "cp437")),
                status=CITIZEN_STATUS),
    )
}

#: Profile the simulator uses unless told otherwise: KZ-1048-capable, so slips
#: round-trip as text in the demo.
SIMULATOR_DEFAULT_PROFILE = "epson-tm-t20iii"


def get_profile(name: str) -> PrinterProfile:
    """The profile called ``name``; :class:`ConfigError` (field ``printer.profile``) if unknown."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown printer profile {name!r} (known: {known})",
                          field="printer.profile") from None
