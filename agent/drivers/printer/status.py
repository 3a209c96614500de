"""The receipt printer's state as a closed type, decoded from ``DLE EOT 1-4`` in one function.

:func:`decode_status` is the only place raw status bits become a
:class:`PrinterState`; vendor differences live in the profile's
:class:`~agent.drivers.printer.profiles.StatusLayout`, not in branches here.
What printing a slip did is a value too (:data:`PrintOutcome`): with the
status, these are the closed types the station acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agent.drivers.printer.errors import StatusReplyError
from agent.drivers.printer.profiles import StatusLayout

#: Every DLE EOT reply byte is ``0xx1xx10``: bits 1 and 4 set, bits 0 and 7 clear.
_FIXED_MASK = 0x93
_FIXED_VALUE = 0x12


class PrinterState(Enum):
    """What the printer can do right now (worst condition wins)."""

    READY = "ready"
    PAPER_NEAR_END = "paper-near-end"  # still printable; change the roll soon
    PAPER_OUT = "paper-out"
    COVER_OPEN = "cover-open"
    OFFLINE = "offline"
    ERROR = "error"
    DISCONNECTED = "disconnected"
    #: The configured printer is absent and another plausible device stands in
    #: its place (another USB printer, the sensor's id as ``printer.port``, a
    #: Grow sensor answering at the serial ``printer.port``).
    WRONG_DEVICE = "wrong-device"


@dataclass(frozen=True)
class StatusFlags:
    """The raw conditions reported by the four ``DLE EOT`` bytes."""

    raw: bytes
    offline: bool
    cover_open: bool
    feed_button: bool
    paper_stop: bool
    error: bool
    mechanism_error: bool
    cutter_error: bool
    unrecoverable_error: bool
    auto_recoverable_error: bool
    paper_near_end: bool
    paper_end: bool


@dataclass(frozen=True)
class PrinterStatus:
    """The printer's state, the raw flags behind it (None when it did not answer) and why."""

    state: PrinterState
    flags: StatusFlags | None = None
    detail: str = ""
    #: When the printer is not found: what is plugged instead and what to do
    #: (one clause, also at the end of ``detail``), "" when nothing plausible is.
    instead: str = ""

    @property
    def printable(self) -> bool:
        """Whether a slip can be printed now (READY or PAPER_NEAR_END)."""
        return self.state in (PrinterState.READY, PrinterState.PAPER_NEAR_END)


def decode_status(raw: bytes, layout: StatusLayout) -> PrinterStatus:
    """Map the replies to ``DLE EOT 1``, ``2``, ``3``, ``4`` (in that order) to a status.

    Precedence, worst first: ERROR (unrecoverable, cutter, mechanism,
    auto-recoverable such as head overheat) > COVER_OPEN > PAPER_OUT >
    OFFLINE (no other cause given, e.g. the feed button is held) >
    PAPER_NEAR_END > READY. Raises :class:`StatusReplyError` when ``raw`` is
    not four bytes of the ``0xx1xx10`` pattern (some USB printers answer 0x00).
    """
    if len(raw) != 4:
        raise StatusReplyError(raw, f"expected 4 bytes, got {len(raw)}")
    for i, byte in enumerate(raw, start=1):
        if byte & _FIXED_MASK != _FIXED_VALUE:
            raise StatusReplyError(raw, f"byte {i} (n={i}) breaks the 0xx1xx10 pattern")
    s1, s2, s3, s4 = raw
    flags = StatusFlags(
        raw=bytes(raw),
        offline=bool(s1 & layout.n1_offline),
        cover_open=bool(s2 & layout.n2_cover_open),
        feed_button=bool(s2 & layout.n2_feed_button),
        paper_stop=bool(s2 & layout.n2_paper_stop),
        error=bool(s2 & layout.n2_error),
        mechanism_error=bool(s3 & layout.n3_mechanism_error),
        cutter_error=bool(s3 & layout.n3_cutter_error),
        unrecoverable_error=bool(s3 & layout.n3_unrecoverable),
        auto_recoverable_error=bool(s3 & layout.n3_auto_recoverable),
        paper_near_end=bool(s4 & layout.n4_near_end),
        paper_end=bool(s4 & layout.n4_paper_end),
    )
    errors = [
        name
        for name, on in (
            ("unrecoverable error", flags.unrecoverable_error),
            ("auto-cutter error", flags.cutter_error),
            ("mechanism error", flags.mechanism_error),
            ("auto-recoverable error", flags.auto_recoverable_error),
        )
        if on
    ]
    if errors:
        return PrinterStatus(PrinterState.ERROR, flags, ", ".join(errors))
    if flags.cover_open:
        return PrinterStatus(PrinterState.COVER_OPEN, flags, "cover open")
    if flags.paper_end or flags.paper_stop:
        return PrinterStatus(PrinterState.PAPER_OUT, flags, "paper end")
    if flags.error:
        # n=2 bit 6 without a cause in n=3: the model reports only the summary bit.
        return PrinterStatus(PrinterState.ERROR, flags, "error (no cause reported)")
    if flags.offline:
        why = "feed button held" if flags.feed_button else "offline"
        return PrinterStatus(PrinterState.OFFLINE, flags, why)
    if flags.paper_near_end:
        return PrinterStatus(PrinterState.PAPER_NEAR_END, flags, "paper near end")
    return PrinterStatus(PrinterState.READY, flags)


def encode_status(
    layout: StatusLayout,
    *,
    offline: bool = False,
    cover_open: bool = False,
    paper_near_end: bool = False,
    paper_end: bool = False,
    cutter_error: bool = False,
    unrecoverable_error: bool = False,
) -> bytes:
    """The four reply bytes a printer with ``layout`` sends in the given condition.

    The device side of :func:`decode_status` (used by the simulator). As on
    real printers, an open cover or paper end also makes the printer offline
    and sets the n=2 stop bit.
    """
    stopped = cover_open or paper_end or cutter_error or unrecoverable_error
    s1 = _FIXED_VALUE | (layout.n1_offline if (offline or stopped) else 0)
    s2 = _FIXED_VALUE
    if cover_open:
        s2 |= layout.n2_cover_open
    if paper_end:
        s2 |= layout.n2_paper_stop
    if cutter_error or unrecoverable_error:
        s2 |= layout.n2_error
    s3 = _FIXED_VALUE
    if cutter_error:
        s3 |= layout.n3_cutter_error
    if unrecoverable_error:
        s3 |= layout.n3_unrecoverable
    s4 = _FIXED_VALUE
    if paper_near_end or paper_end:
        s4 |= layout.n4_near_end
    if paper_end:
        s4 |= layout.n4_paper_end
    return bytes((s1, s2, s3, s4))


# --- outcomes of printing a slip --------------------------------------------------


@dataclass(frozen=True)
class Printed:
    """The printer processed the whole slip, cut included, and is still healthy."""

    status_after: PrinterStatus


@dataclass(frozen=True)
class NotPrinted:
    """Nothing was sent (printer not ready, or unreachable): safe to retry as the ORIGINAL."""

    status: PrinterStatus


@dataclass(frozen=True)
class Uncertain:
    """Bytes were sent but the slip was not confirmed: reprint only as a DUPLICATE."""

    status: PrinterStatus
    detail: str = ""


PrintOutcome = Printed | NotPrinted | Uncertain
