"""The receipt printer's errors: bugs and corrupt input, never device states.

Device states (paper out, cover open, unplugged) are values
(:class:`~agent.drivers.printer.status.PrinterStatus`); what happened to a slip
is a value too (:data:`~agent.drivers.printer.status.PrintOutcome`). One small
hierarchy under :class:`EscposError`, at the bottom of the package.
"""

from __future__ import annotations

from pathlib import Path


class EscposError(Exception):
    """Base of the ESC/POS codec's errors (bugs and corrupt input, never device states)."""


class DocumentError(EscposError):
    """A document cannot be printed as given (control characters, non-ASCII QR, ...)."""

    def __init__(self, message: str, block_index: int) -> None:
        super().__init__(f"block {block_index}: {message}")
        self.block_index = block_index


class FontMissingError(EscposError):
    """The TrueType font needed to rasterise text is not installed."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"font {path} not found: install fonts-dejavu-core (apt) to print text "
            "this printer has no code page for"
        )
        self.path = path


class FrameError(EscposError):
    """A command frame has out-of-range fields (raised by constructors, not by the parser)."""


class StatusReplyError(EscposError):
    """A status reply is not a DLE EOT reply (wrong length or fixed bits): line noise or a bug."""

    def __init__(self, raw: bytes, reason: str) -> None:
        super().__init__(f"bad DLE EOT reply {raw.hex(' ')}: {reason}")
        self.raw = raw
