"""Bit operations the kernels need and Numba does not offer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numba import types
from numba.extending import intrinsic


def _popcount_codegen(typingctx: object, x: object) -> tuple[object, object]:
    """LLVM ``ctpop`` on a uint64 (one instruction on x86-64 and AArch64)."""
    del typingctx, x
    sig = types.uint64(types.uint64)

    def codegen(context: object, builder: Any, signature: object, args: Any) -> Any:
        del context, signature
        return builder.ctpop(args[0])

    return sig, codegen


# Numba calls the intrinsic with one argument; mypy sees its real signature.
popcount = cast(Callable[[np.uint64], np.uint64], intrinsic(_popcount_codegen))

