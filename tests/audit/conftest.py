"""Fixtures for the audit-log tests: a device key and a log path."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from agent.audit.log import AUDIT_FILE


@pytest.fixture
def key() -> SigningKey:
    """A fresh device signing key."""
    return SigningKey.generate()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where the log under test lives."""
    return tmp_path / "state" / AUDIT_FILE
