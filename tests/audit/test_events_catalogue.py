"""The event catalogue: generated files are fresh, rules are enforced, fields are checked."""

from __future__ import annotations

import pytest

from agent.audit.events import (
    CATALOGUE,
    CatalogueError,
    Disposition,
    EventFieldError,
    EventId,
    parse_catalogue,
)
from agent.audit.generate import DOCS_PATH, ENUM_PATH, main, render_docs, render_enum, stale_outputs


def test_generated_files_are_fresh() -> None:
    """Fails when events.toml changed without `python -m agent.audit.generate --write`."""
    assert stale_outputs() == [], "run: python -m agent.audit.generate --write"
    assert DOCS_PATH.read_text(encoding="utf-8") == render_docs(CATALOGUE)
    assert ENUM_PATH.read_text(encoding="utf-8") == render_enum(CATALOGUE)
    assert main(["--check"]) == 0


def test_enum_and_catalogue_agree() -> None:
    assert [e.value for e in EventId] == list(CATALOGUE.events)
    for required in (
        "agent-started", "station-opened", "voter-identified", "voter-refused",
        "voter-not-identified", "manual-decision", "slip-pending", "slip-printed",
        "slip-reprinted", "slip-print-failed", "audit-checkpoint", "clock-adjusted",
        "mark-conflict", "closing-report-printed", "zero-report-printed",
    ):  # fmt: skip
        assert required in CATALOGUE.events


def test_pairs_point_at_requests() -> None:
    completes = {s.id: s for s in CATALOGUE.events.values() if s.completes}
    assert completes["voter-identified"].disposition is Disposition.SUCCESS
    assert completes["voter-refused"].disposition is Disposition.FAILURE
    assert completes["slip-print-failed"].completes == "slip-pending"
    for spec in completes.values():
        assert spec.completes is not None
        assert CATALOGUE.events[spec.completes].completes is None


def test_no_field_invites_personal_data() -> None:
    for name in CATALOGUE.fields:
        for word in ("name", "document", "birth", "template", "passport", "photo"):
            assert word not in name.split("_")


_MINIMAL = """
version = 1
[fields.{field}]
type = "token"
description = "x"
[events.some-event]
type = "integrity"
description = "x"
fields = ["{field}"]
"""


@pytest.mark.parametrize(
    "field", ["voter_name", "document_number", "birth_date", "template", "given_names"]
)
def test_loader_refuses_personal_data_fields(field: str) -> None:
    with pytest.raises(CatalogueError, match="personal data"):
        parse_catalogue(_MINIMAL.format(field=field))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1\n[events]\n", "must not be empty"),
        (_MINIMAL.format(field="ok").replace('"token"', '"text"'), "type 'text' is not one of"),
        (_MINIMAL.format(field="ok").replace('fields = ["ok"]', 'fields = ["nope"]'),
         "'nope' is not declared"),
        (_MINIMAL.format(field="ok") + 'completes = "some-event"\n', "needs both"),
        (_MINIMAL.format(field="ok") + "colour = 1\n", "unknown key"),
        (_MINIMAL.format(field="ok").replace("some-event", "Some_Event"), "lower-kebab-case"),
        ("version = [", "not valid TOML"),
    ],
)  # fmt: skip
def test_loader_refuses_bad_catalogues(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(text)


def test_validate_fields() -> None:
    ok = CATALOGUE.validate(
        EventId.CLOSING_REPORT_PRINTED,
        {"report_serial": "R-2", "audit_head": "a" * 64, "identified": 3, "refused": 0,
         "not_identified": 1, "manual": 0, "last_slip": "K01-3"},
    )  # fmt: skip
    assert list(ok) == [
        "report_serial", "audit_head", "identified", "refused", "not_identified", "manual",
        "last_slip",
    ]  # fmt: skip
    with pytest.raises(EventFieldError, match="identified: -1 is below the minimum 0"):
        CATALOGUE.validate(
            EventId.STATION_CLOSED,
            {"identified": -1, "refused": 0, "not_identified": 0, "manual": 0},
        )
    with pytest.raises(EventFieldError, match=r"audit_head: 'A\+' is not a valid sha256"):
        CATALOGUE.validate(
            EventId.CLOSING_REPORT_PRINTED,
            {"report_serial": "R-2", "audit_head": "A+", "identified": 3, "refused": 0,
             "not_identified": 1, "manual": 0},
        )  # fmt: skip
    with pytest.raises(EventFieldError, match="not in the event catalogue"):
        CATALOGUE.validate("no-such-event", {})


def test_a_refused_peer_version_is_audited_with_both_versions() -> None:
    """What the agent records for a peer on another protocol version (runtime/service.py)."""
    cat = CATALOGUE
    base: dict[str, object] = {"peer": "kiosk-3", "mark_kiosk": "unknown", "mark_seq": 0}
    got = cat.validate(EventId.MARK_REJECTED,
                       {**base, "reason": "version-mismatch", "peer_protocol": 1, "protocol": 2})
    assert (got["peer_protocol"], got["protocol"]) == (1, 2)
    assert "peer_protocol" not in cat.validate(EventId.MARK_REJECTED, {**base, "reason": "x"})
