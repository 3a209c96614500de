"""images/requirements.lock stays true to pyproject.toml and to what agent/ imports.

The kiosk image installs exactly the lock (offline, hashes checked), so a
dependency that is declared or imported but not pinned there breaks the image
build, and only the slow image test would notice. These checks run in the
default suite and need no network.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "images" / "requirements.lock"
#: Our own top-level packages (everything setuptools packages from this repository).
FIRST_PARTY = {"agent", "hardware_sim", "provisioning", "ops"}


def _lock_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kesp_images_lock", REPO / "images" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK_TOOL = _lock_tool()
_ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})*)",
    re.MULTILINE,
)


def _pins() -> dict[str, tuple[str, int]]:
    """Canonical name -> (pinned version, number of wheel hashes)."""
    text = LOCK.read_text()
    return {canonicalize_name(m[1]): (m[2], m[3].count("--hash=")) for m in _ENTRY.finditer(text)}


def _kiosk_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in LOCK_TOOL.KIOSK_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def _third_party_imports(package: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, for every non-stdlib, non-local import."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_lock_header_names_the_tool_that_writes_it() -> None:
    header = LOCK.read_text().split("\n\n")[0]
    assert "images/lock.py" in header
    for word in re.findall(r"images/[\w./-]+", LOCK.read_text()):
        assert (REPO / word).exists(), f"the lock's header names {word}, which does not exist"


def test_every_pin_has_wheel_hashes() -> None:
    pins = _pins()
    assert pins, "no pins parsed from the lock"
    entries = [line for line in LOCK.read_text().splitlines() if "==" in line]
    assert len(entries) == len(pins), "a lock entry is not in 'name==version --hash=...' form"
    assert all(count >= 1 for _, count in pins.values()), {
        name: count for name, (_, count) in pins.items() if count == 0}


def test_kiosk_runtime_dependencies_are_pinned_within_their_ranges() -> None:
    pins = _pins()
    for req in _kiosk_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not pinned in images/requirements.lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"images/requirements.lock pins {name}=={pins[name][0]} outside {req}")


def test_modules_agent_imports_are_pinned() -> None:
    pins = _pins()
    providers = metadata.packages_distributions()
    imports = _third_party_imports(REPO / "agent")
    assert {"numpy", "numba", "nacl"} <= imports.keys()  # the walk does see imports
    for module, where in imports.items():
        dists = providers.get(module)
        assert dists, f"{where} imports {module}, which no installed distribution provides"
        assert any(canonicalize_name(d) in pins for d in dists), (
            f"{where} imports {module} ({', '.join(dists)}), not pinned in "
            "images/requirements.lock: declare it in pyproject.toml and rerun images/lock.py")


def test_lock_is_exactly_the_kiosk_closure() -> None:
    """Nothing missing (a dependency of a dependency) and nothing stale (ops-only packages)."""
    closure = set(LOCK_TOOL.runtime_closure())
    pinned = set(_pins())
    assert not closure - pinned, f"needed on the kiosk but not pinned: {sorted(closure - pinned)}"
    assert not pinned - closure, (
        f"pinned but not needed by the kiosk agent: {sorted(pinned - closure)} "
        "(ops-only dependencies belong in the [ops] extra)")


@pytest.mark.parametrize("ops_only", ["psycopg", "psycopg-binary"])
def test_ops_only_dependencies_stay_off_the_kiosk(ops_only: str) -> None:
    assert ops_only not in _pins()
    assert all(canonicalize_name(r.name) != ops_only for r in _kiosk_requirements())
