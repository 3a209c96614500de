"""The lifecycle state machine: allowed transitions only, persisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.station.lifecycle import (
    TRANSITIONS,
    Command,
    Lifecycle,
    Phase,
    TransitionError,
    next_phase,
)


def test_a_whole_day_in_order(tmp_path: Path) -> None:
    life = Lifecycle(tmp_path / "l.sqlite")
    for command, phase in [(Command.INSTALL, Phase.PROVISIONED), (Command.OPEN, Phase.OPEN),
                           (Command.PAUSE, Phase.PAUSED), (Command.RESUME, Phase.OPEN),
                           (Command.CLOSE, Phase.CLOSED), (Command.EXPORT, Phase.EXPORTED)]:
        assert life.apply(command) is phase
    life.close()
    assert Lifecycle(tmp_path / "l.sqlite").phase is Phase.EXPORTED


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("command", list(Command))
def test_every_pair_outside_the_table_is_refused(phase: Phase, command: Command) -> None:
    if (phase, command) in TRANSITIONS:
        assert next_phase(phase, command) is TRANSITIONS[(phase, command)]
    else:
        with pytest.raises(TransitionError, match=f"cannot {command.value}"):
            next_phase(phase, command)


def test_closed_station_cannot_reopen(tmp_path: Path) -> None:
    life = Lifecycle(tmp_path / "l.sqlite")
    for c in (Command.INSTALL, Command.OPEN, Command.CLOSE):
        life.apply(c)
    with pytest.raises(TransitionError):
        life.apply(Command.OPEN)
    assert life.phase is Phase.CLOSED
