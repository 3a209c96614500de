"""Transparency: an optional sink that receives every intermediate stage.

The pipeline calls ``sink.record(stage, value)`` once per stage, in order.
The default sink does nothing (and costs nothing); :class:`RecordingSink`
keeps everything, for ``show_extraction`` and for tests and debugging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ExtractionSink(Protocol):
    """Receiver of intermediate results, keyed by stage name."""

    def record(self, stage: str, value: object) -> None:
        """Called once per stage with that stage's output."""


class NullSink:
    """The default sink: records nothing."""

    def record(self, stage: str, value: object) -> None:
        """Discard ``value``."""


@dataclass
class RecordingSink:
    """Keeps every stage's output in ``stages`` (insertion order = pipeline order)."""

    stages: dict[str, object] = field(default_factory=dict)

    def record(self, stage: str, value: object) -> None:
        """Store ``value`` under ``stage``."""
        self.stages[stage] = value
