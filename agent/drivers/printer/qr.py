"""QR codes on a slip: the printer's native ``GS ( k`` symbol, or a raster image of one."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.drivers.printer.escpos import Command, SymbolCommand
from agent.drivers.printer.profiles import QR_ECC

_QR_ECC_BYTE = {"L": 48, "M": 49, "Q": 50, "H": 51}


def qr_commands(data: bytes, module_size: int, ecc: str = QR_ECC) -> list[Command]:
    """The native ``GS ( k`` sequence: model 2, module size, error correction, store, print."""
    return [
        SymbolCommand(49, 65, bytes((50, 0))),
        SymbolCommand(49, 67, bytes((module_size,))),
        SymbolCommand(49, 69, bytes((_QR_ECC_BYTE[ecc],))),
        SymbolCommand(49, 80, b"0" + data),
        SymbolCommand(49, 81, b"0"),
    ]


def qr_dots(data: bytes, module_size: int, ecc: str, width_dots: int) -> npt.NDArray[np.bool_]:
    """A QR code as a centred boolean image ``width_dots`` wide (quiet zone 4 modules)."""
    import segno

    qr = segno.make_qr(data, error=ecc.lower(), boost_error=False)
    matrix = np.array([list(row) for row in qr.matrix], dtype=np.bool_)
    matrix = np.pad(matrix, 4)
    scale = max(1, min(module_size, width_dots // matrix.shape[1]))
    big = np.kron(matrix, np.ones((scale, scale), dtype=np.bool_))
    out = np.zeros((big.shape[0], width_dots), dtype=np.bool_)
    left = max(0, (width_dots - big.shape[1]) // 2)
    out[:, left : left + big.shape[1]] = big[:, : width_dots - left]
    return out
