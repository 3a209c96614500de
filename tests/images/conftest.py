"""Fixtures of the image tests: the arm64 root filesystem (slow tests only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from arm64 import build_rootfs, require_emulation


@pytest.fixture(scope="session")
def arm64_rootfs(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An arm64 kiosk root filesystem with the agent in /opt/kesp/venv."""
    markexpr = str(request.config.getoption("markexpr") or "")
    if "slow" not in markexpr.replace("not slow", "") and os.environ.get("KESP_SLOW") != "1":
        pytest.skip("needs an arm64 root filesystem: run with -m slow")
    require_emulation()
    given = os.environ.get("KESP_ARM64_ROOTFS")
    if given:
        root = Path(given)
        assert (root / "opt/kesp/venv/bin/python").exists(), f"{root} has no /opt/kesp/venv"
        return root
    return build_rootfs(tmp_path_factory.mktemp("arm64") / "rootfs")
