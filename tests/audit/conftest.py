"""Fixtures for the audit-log tests: a device key and a log path."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey


@pytest.fixture
def key() -> SigningKey:
    """A fresh device signing key."""
    return SigningKey.generate()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where the log under test lives."""
    return tmp_path / "state" / "audit.sqlite3"

