"""The installed station roll, verified and decrypted in memory at every start.

On disk the roll stays exactly as the CEC sent it (``<state_dir>/roll.pkg``):
signed by the CEC and encrypted to this kiosk, so biometric data is never
stored in clear. :func:`load_roll` re-verifies the signature, decrypts it,
decodes every finger template and packs them into one matching gallery.
A template that does not decode is skipped and counted (the voter's other
fingers still work); the count is part of the ``roll-verified`` audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nacl.signing import VerifyKey
from numpy.typing import NDArray

from agent.keys import DeviceKeys
from agent.match import Gallery, Matcher, Template, TemplateError, load_template
from agent.rollpackage import PackageError, Roll, Voter, open_package, package_hash

ROLL_FILE = "roll.pkg"
CEC_KEY_FILE = "cec.pub"


class RollError(RuntimeError):
    """No usable roll: missing, unreadable, or refused by verification."""


@dataclass(frozen=True)
class LoadedRoll:
    """The decrypted roll with its matching gallery and look-up indexes."""

    roll: Roll
    package_hash: str
    templates: tuple[Template, ...]
    owners: NDArray[np.int32]
    """``owners[i]`` is the voter index (into ``roll.voters``) of template ``i``."""
    gallery: Gallery
    by_list_number: dict[int, int]
    by_document: dict[str, int]
    bad_templates: int

    def voter(self, index: int) -> Voter:
        """The voter at ``index`` in ``roll.voters``."""
        return self.roll.voters[index]

    def templates_of(self, index: int) -> list[Template]:
        """The decoded templates of voter ``index``."""
        return [t for t, o in zip(self.templates, self.owners, strict=True) if o == index]


def load_cec_key(key_dir: Path) -> VerifyKey:
    """The CEC's verify key stored at ``device init`` (raw 32 bytes or hex)."""
    path = key_dir / CEC_KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise RollError(f"CEC key {path} not found; run 'kesp-provision device init'") from exc
    text = raw.strip()
    if len(raw) == 32:
        return VerifyKey(raw)
    try:
        return VerifyKey(bytes.fromhex(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RollError(f"CEC key {path} is neither 32 raw bytes nor 64 hex digits") from exc


def load_roll(
    state_dir: Path,
    keys: DeviceKeys,
    cec_key: VerifyKey,
    station_id: str,
    matcher: Matcher,
) -> LoadedRoll:
    """Verify, decrypt and index the installed roll; :class:`RollError` if unusable."""
    path = state_dir / ROLL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RollError(
            f"no roll installed at {path}; run 'kesp-provision device install-roll PACKAGE'"
        ) from exc
    except OSError as exc:
        raise RollError(f"cannot read roll {path}: {exc.strerror}") from exc
    try:
        roll = open_package(data, cec_key, keys.box, expected_station=station_id)
    except PackageError as exc:
        raise RollError(f"roll {path} refused: {exc}") from exc
    templates: list[Template] = []
    owners: list[int] = []
    bad = 0
    for index, voter in enumerate(roll.voters):
        for finger in voter.fingers:
            try:
                templates.append(load_template(finger.template))
            except TemplateError:
                bad += 1
                continue
            owners.append(index)
    return LoadedRoll(
        roll=roll,
        package_hash=package_hash(data),
        templates=tuple(templates),
        owners=np.asarray(owners, dtype=np.int32),
        gallery=matcher.gallery(templates),
        by_list_number={v.list_number: i for i, v in enumerate(roll.voters)},
        by_document={v.document: i for i, v in enumerate(roll.voters)},
        bad_templates=bad,
    )
