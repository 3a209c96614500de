"""The audit event catalogue: ``agent/audit/events.toml`` loaded and validated.

The TOML file is the single source of truth for every event the kiosk may log.
From it this module

* loads a :class:`Catalogue` (field types, events, request/complete pairs),
  refusing a catalogue that declares a field name suggesting personal data;
* validates the fields of one event (:meth:`Catalogue.validate`): unknown
  event, missing, extra or ill-typed field -> :class:`EventFieldError`;
* is what :mod:`agent.audit.generate` renders ``agent/audit/event_ids.py`` (the
  closed :class:`EventId` enum, so callers and ``mypy`` see every member) and
  ``docs/EVENTS.md`` from (``python -m agent.audit.generate --write``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal, cast, get_args

from agent.audit.event_ids import EventId

__all__ = [
    "CATALOGUE",
    "CATALOGUE_PATH",
    "Catalogue",
    "CatalogueError",
    "Disposition",
    "EventFieldError",
    "EventId",
    "EventSpec",
    "EventType",
    "FieldSpec",
    "FieldValue",
    "load_catalogue",
]

CATALOGUE_PATH = Path(__file__).with_name("events.toml")

FieldValue = str | int | bool
FieldType = Literal["token", "serial", "sha256", "signature", "int", "bool", "enum"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)

_EVENT_ID_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_PATTERNS: dict[str, re.Pattern[str]] = {
    "token": re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$"),
    "serial": re.compile(r"^[A-Za-z0-9][A-Za-z0-9/._-]{0,63}$"),
    "sha256": re.compile(r"^[0-9a-f]{64}$"),
    "signature": re.compile(r"^[0-9a-f]{128}$"),
}
# A field whose name contains one of these words would invite personal data into
# a log that is signed, exported and sent off the kiosk. Voters are referred to by
# slip serial only.
FORBIDDEN_FIELD_WORDS = frozenset(
    {
        "name", "names", "surname", "given", "patronymic", "document", "passport",
        "birth", "dob", "born", "template", "templates", "minutiae", "image", "photo",
        "fingerprint", "address", "phone", "pin", "inn", "personal", "voter", "sex",
        "gender", "nationality", "face", "signature_image",
    }
)  # fmt: skip


class CatalogueError(ValueError):
    """``events.toml`` is malformed or breaks a catalogue rule."""


class EventFieldError(ValueError):
    """An event was logged with an unknown id or missing, extra or ill-typed fields."""

    def __init__(self, event: str, field: str, message: str) -> None:
        where = f"{event}.{field}" if field else event
        super().__init__(f"{where}: {message}")
        self.event = event
        self.field = field


class EventType(Enum):
    """Broad class of an event (who or what caused it)."""

    OPERATOR_ACTION = "operator-action"
    APPLICATION_ACTION = "application-action"
    APPLICATION_STATUS = "application-status"
    DEVICE_STATUS = "device-status"
    VOTER_OUTCOME = "voter-outcome"
    INTEGRITY = "integrity"


class Disposition(Enum):
    """Outcome a *complete* event stands for; ``NA`` for requests and status events."""

    SUCCESS = "success"
    FAILURE = "failure"
    NA = "na"


@dataclass(frozen=True)
class FieldSpec:
    """One declared field: its type and constraints."""

    name: str
    type: FieldType
    description: str
    values: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: object) -> FieldValue:
        """Return ``value`` if it fits this field, else raise ``ValueError`` saying why."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be a bool, got {type(value).__name__}")
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be an int, got {type(value).__name__}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{value} is above the maximum {self.maximum}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        if self.type == "enum":
            if value not in self.values:
                raise ValueError(f"{value!r} is not one of {', '.join(self.values)}")
            return value
        if not _PATTERNS[self.type].match(value):
            raise ValueError(f"{value!r} is not a valid {self.type}")
        return value

    def type_text(self) -> str:
        """Human description of the type, for the documentation."""
        if self.type == "enum":
            return "one of " + ", ".join(f"`{v}`" for v in self.values)
        if self.type == "int" and (self.minimum is not None or self.maximum is not None):
            lo = "" if self.minimum is None else str(self.minimum)
            hi = "" if self.maximum is None else str(self.maximum)
            return f"int {lo}..{hi}"
        return self.type


@dataclass(frozen=True)
class EventSpec:
    """One catalogue event."""

    id: str
    type: EventType
    description: str
    fields: tuple[str, ...]
    optional: tuple[str, ...] = ()
    completes: str | None = None
    disposition: Disposition = Disposition.NA


@dataclass(frozen=True)
class Catalogue:
    """The whole catalogue: field specs by name, events by id (file order)."""

    version: int
    fields: Mapping[str, FieldSpec]
    events: Mapping[str, EventSpec]

    def spec(self, event: EventId | str) -> EventSpec:
        """The spec of ``event``; :class:`EventFieldError` if it is not catalogued."""
        key = event.value if isinstance(event, EventId) else event
        try:
            return self.events[key]
        except KeyError:
            raise EventFieldError(str(key), "", "not in the event catalogue") from None

    def validate(self, event: EventId | str, values: Mapping[str, object]) -> dict[str, FieldValue]:
        """Check ``values`` against ``event``'s declaration; return them in canonical order.

        Every required field must be present, optional ones may be, nothing else
        is allowed, and each value must fit its field type.
        """
        spec = self.spec(event)
        allowed = set(spec.fields) | set(spec.optional)
        extra = sorted(set(values) - allowed)
        if extra:
            raise EventFieldError(spec.id, extra[0], "field not declared for this event")
        out: dict[str, FieldValue] = {}
        for name in (*spec.fields, *spec.optional):
            if name not in values:
                if name in spec.fields:
                    raise EventFieldError(spec.id, name, "required field missing")
                continue
            try:
                out[name] = self.fields[name].check(values[name])
            except ValueError as exc:
                raise EventFieldError(spec.id, name, str(exc)) from None
        return out


def _str(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{where}: '{key}' must be a non-empty string")
    return value


def _names(table: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogueError(f"{where}: '{key}' must be a list of strings")
    return tuple(cast(list[str], value))


def _parse_field(name: str, raw: object) -> FieldSpec:
    where = f"fields.{name}"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: must be a table")
    if not _FIELD_NAME_RE.match(name):
        raise CatalogueError(f"{where}: field names are lower_snake_case")
    bad = sorted(set(name.split("_")) & FORBIDDEN_FIELD_WORDS)
    if bad:
        raise CatalogueError(
            f"{where}: '{bad[0]}' suggests personal data, which the audit log must never hold"
        )
    unknown = sorted(set(raw) - {"type", "description", "values", "min", "max"})
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    ftype = _str(raw, "type", where)
    if ftype not in FIELD_TYPES:
        raise CatalogueError(f"{where}: type {ftype!r} is not one of {', '.join(FIELD_TYPES)}")
    values = _names(raw, "values", where)
    if (ftype == "enum") != bool(values):
        raise CatalogueError(f"{where}: 'values' is required for enum fields and only for them")
    bounds: list[int | None] = []
    for key in ("min", "max"):
        b = raw.get(key)
        if b is not None and (ftype != "int" or isinstance(b, bool) or not isinstance(b, int)):
            raise CatalogueError(f"{where}: '{key}' must be an integer on an int field")
        bounds.append(b)
    return FieldSpec(
        name=name,
        type=cast(FieldType, ftype),
        description=_str(raw, "description", where),
        values=values,
        minimum=bounds[0],
        maximum=bounds[1],
    )


def _parse_event(event_id: str, raw: object, fields: Mapping[str, FieldSpec]) -> EventSpec:
    where = f"events.{event_id}"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: must be a table")
    if not _EVENT_ID_RE.match(event_id):
        raise CatalogueError(f"{where}: event ids are lower-kebab-case")
    unknown = sorted(
        set(raw) - {"type", "description", "fields", "optional", "completes", "disposition"}
    )
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        etype = EventType(_str(raw, "type", where))
    except ValueError:
        raise CatalogueError(f"{where}: unknown event type {raw.get('type')!r}") from None
    required = _names(raw, "fields", where)
    optional = _names(raw, "optional", where)
    listed = (*required, *optional)
    if len(set(listed)) != len(listed):
        raise CatalogueError(f"{where}: a field is listed twice")
    for f in listed:
        if f not in fields:
            raise CatalogueError(f"{where}: field {f!r} is not declared under [fields]")
    completes = raw.get("completes")
    if completes is not None and not isinstance(completes, str):
        raise CatalogueError(f"{where}: 'completes' must be an event id")
    try:
        disposition = Disposition(raw.get("disposition", "na"))
    except ValueError:
        raise CatalogueError(f"{where}: unknown disposition {raw.get('disposition')!r}") from None
    if (completes is None) != (disposition is Disposition.NA):
        raise CatalogueError(f"{where}: a complete event needs both 'completes' and 'disposition'")
    return EventSpec(
        id=event_id,
        type=etype,
        description=_str(raw, "description", where),
        fields=required,
        optional=optional,
        completes=completes,
        disposition=disposition,
    )


def parse_catalogue(text: str) -> Catalogue:
    """Parse and check the TOML text of a catalogue."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"version", "fields", "events"})
    if unknown:
        raise CatalogueError(f"unknown top-level key(s) {', '.join(unknown)}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CatalogueError("'version' must be a positive integer")
    raw_fields = data.get("fields", {})
    raw_events = data.get("events", {})
    if not isinstance(raw_fields, dict) or not isinstance(raw_events, dict) or not raw_events:
        raise CatalogueError("[fields] and [events] must be tables; [events] must not be empty")
    fields = {name: _parse_field(name, raw) for name, raw in raw_fields.items()}
    events = {eid: _parse_event(eid, raw, fields) for eid, raw in raw_events.items()}
    for spec in events.values():
        if spec.completes is not None:
            req = events.get(spec.completes)
            if req is None or req.completes is not None:
                raise CatalogueError(
                    f"events.{spec.id}: completes {spec.completes!r}, which is not a request event"
                )
    used = {f for e in events.values() for f in (*e.fields, *e.optional)}
    unused = sorted(set(fields) - used)
    if unused:
        raise CatalogueError(f"fields.{unused[0]}: declared but used by no event")
    return Catalogue(version=version, fields=fields, events=events)


def load_catalogue(path: str | Path = CATALOGUE_PATH) -> Catalogue:
    """Read and check a catalogue file (default: the packaged ``events.toml``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"cannot read {path}: {exc}") from exc
    return parse_catalogue(text)


CATALOGUE: Catalogue = load_catalogue()
