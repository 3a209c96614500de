"""Where the reference fingerprint data is: in the package, or a fuller copy beside it.

The repository carries what the demo and the tests need (``hardware_sim/data``,
package data, so an installed package finds it too; sources and licences in
its README): every FVC2002 ISO template, two PNG impressions of each of the 40
fingers, and the two USB recordings. The benchmarks that need every FVC2002
image (extraction accuracy over the whole protocol) ask for the full set: the
folder named by ``KESP_SHARED_DATA``, else ``../shared/data`` beside the
repository, in the same layout.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = Path(__file__).resolve().with_name("data")
FULL_ENV = "KESP_SHARED_DATA"
_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "data"


class ReferenceDataError(FileNotFoundError):
    """The data asked for is not there; the message says where it looked and what to do."""


def reference_data(*, full: bool = False) -> Path:
    """The root holding ``fvc2002/DB{1..4}_B`` and ``usb-recordings/``.

    Without ``full``: the data embedded in the package (always there in a
    whole checkout). With ``full``: the complete FVC2002 set, from
    ``$KESP_SHARED_DATA`` or ``../shared/data``; raises
    :class:`ReferenceDataError` when neither holds it.
    """
    if not full:
        if not (EMBEDDED / "fvc2002" / "DB1_B").is_dir():
            raise ReferenceDataError(
                f"the reference data embedded in the package is missing at {EMBEDDED}: "
                "restore it from the repository (git checkout -- hardware_sim/data)")
        return EMBEDDED
    named = os.environ.get(FULL_ENV)
    root = Path(named) if named else _BESIDE
    if not (root / "fvc2002" / "DB1_B" / "101_8.png").is_file():
        where = f"{FULL_ENV}={named}" if named else f"{root} (set {FULL_ENV}=DIR to name it)"
        raise ReferenceDataError(
            f"the full FVC2002 set (all 8 impressions per finger) is not at {where}; "
            "this benchmark needs it, the demo and the tests do not")
    return root
