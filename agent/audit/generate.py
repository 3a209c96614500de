"""Render the event catalogue: ``agent/audit/event_ids.py`` and ``docs/EVENTS.md``.

Both are generated from ``agent/audit/events.toml`` (loaded and checked by
:mod:`agent.audit.events`). Regenerate both with
``python -m agent.audit.generate --write`` (``--write-docs`` for the
documentation only); ``--check`` exits 1 when either is stale, and a test does
the same in CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.audit.events import Catalogue, CatalogueError, EventType, load_catalogue

ENUM_PATH = Path(__file__).with_name("event_ids.py")
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "EVENTS.md"


def member_name(event_id: str) -> str:
    """The :class:`EventId` member name of an event id (``a-b`` -> ``A_B``)."""
    return event_id.upper().replace("-", "_")


def render_enum(cat: Catalogue) -> str:
    """Source of ``agent/audit/event_ids.py`` for ``cat``."""
    lines = [
        '"""Closed set of audit event ids.',
        "",
        "GENERATED from agent/audit/events.toml by ``python -m agent.audit.generate --write``;"
        " do not edit.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from enum import Enum",
        "",
        "",
        "class EventId(Enum):",
        '    """Every event of the audit catalogue (see docs/EVENTS.md)."""',
        "",
    ]
    lines += [f'    {member_name(e)} = "{e}"' for e in cat.events]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_docs(cat: Catalogue) -> str:
    """Markdown of ``docs/EVENTS.md`` for ``cat``."""
    out = [
        "# Audit events",
        "",
        "<!-- GENERATED from agent/audit/events.toml by"
        " `python -m agent.audit.generate --write-docs`; do not edit. -->",
        "",
        "Every entry of the kiosk's audit log (and every audit telemetry event) is one of",
        "the events below. Fields are checked against this catalogue when an entry is",
        "written: an unknown event, a missing or extra field, or a value of the wrong",
        "type is refused. No field holds personal data; a voter appears only as the",
        "serial of the slip they received.",
        "",
        f"Catalogue version {cat.version}, {len(cat.events)} events.",
        "",
        "## Field types",
        "",
        "| type | values |",
        "|---|---|",
        "| token | lowercase `[a-z0-9][a-z0-9_.:-]{0,63}` |",
        "| serial | `[A-Za-z0-9][A-Za-z0-9/._-]{0,63}` |",
        "| sha256 | 64 lowercase hex digits |",
        "| signature | 128 lowercase hex digits (Ed25519) |",
        "| int | integer, bounds where given |",
        "| bool | true or false |",
        "| enum | one of the listed values |",
        "",
        "## Request / complete pairs",
        "",
        "| request | complete | disposition |",
        "|---|---|---|",
    ]
    for spec in cat.events.values():
        if spec.completes is not None:
            out.append(f"| `{spec.completes}` | `{spec.id}` | {spec.disposition.value} |")
    out += ["", "## Events by type", ""]
    for etype in EventType:
        members = [s for s in cat.events.values() if s.type is etype]
        if members:
            out.append(f"- **{etype.value}**: " + ", ".join(f"`{s.id}`" for s in members))
    out += ["", "## Events", ""]
    for spec in cat.events.values():
        out += [f"### `{spec.id}`", "", f"_{spec.type.value}_"]
        if spec.completes is not None:
            out[-1] += f"; completes `{spec.completes}` ({spec.disposition.value})"
        out += ["", spec.description, ""]
        if not spec.fields and not spec.optional:
            out += ["No fields.", ""]
            continue
        out += ["| field | type | required | description |", "|---|---|---|---|"]
        for name in (*spec.fields, *spec.optional):
            f = cat.fields[name]
            req = "yes" if name in spec.fields else "no"
            out.append(f"| `{name}` | {_cell(f.type_text())} | {req} | {_cell(f.description)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def stale_outputs(cat: Catalogue | None = None) -> list[Path]:
    """Generated files whose content differs from what the catalogue renders."""
    cat = cat or load_catalogue()
    stale = []
    for path, text in ((ENUM_PATH, render_enum(cat)), (DOCS_PATH, render_docs(cat))):
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current != text:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.audit.generate [--write | --write-docs | --check]``."""
    parser = argparse.ArgumentParser(prog="python -m agent.audit.generate", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate event_ids.py and docs")
    group.add_argument("--write-docs", action="store_true", help="regenerate docs/EVENTS.md")
    group.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    try:
        cat = load_catalogue()
    except CatalogueError as exc:
        print(f"events.toml: {exc}", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_outputs(cat)
        for p in stale:
            print(f"stale: {p} (run python -m agent.audit.generate --write)", file=sys.stderr)
        return 1 if stale else 0
    targets = [(DOCS_PATH, render_docs(cat))]
    if args.write:
        targets.append((ENUM_PATH, render_enum(cat)))
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
