"""Verification of received telemetry: one pure function from (topic, bytes) to a verdict.

Checks, in this order, each with a stable rejection reason (a metric label):

==================  =========================================================
``bad_topic``       topic is not ``kesp/v1/<district>/<station>/<device>/<type>``
``oversized``       more than ``MAX_MESSAGE_BYTES``
``malformed``       too short, not UTF-8 JSON, wrong fields or ranges
``unknown_device``  device id of the topic is not in the registry
``revoked_device``  the device was revoked
``bad_signature``   Ed25519 signature does not verify (forged or altered)
``bad_version``     unsupported schema version
``topic_mismatch``  signed device/station/district/type differ from the
                    topic or the registry
``bad_payload``     a turnout/event/birth payload has the wrong shape
``duplicate``       (decided by the state store) counter already seen: a
                    replay or a QoS 1 redelivery, counted once
==================  =========================================================

A ``sent`` time far from ops' clock is *not* a rejection: the message is counted
and the device gets a clock alert (docs/TELEMETRY.md, "Clocks").

The signature is checked before the body is parsed, so unauthenticated bytes
never reach the JSON parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nacl.signing import VerifyKey

from agent.telemetry.envelope import (
    Envelope,
    EnvelopeError,
    decode_body,
    parse_topic,
    verify_signed,
)
from agent.telemetry.parameters import MAX_MESSAGE_BYTES
from ops.parameters import OpsTuning
from ops.registry import Registry

RejectReason = Literal[
    "bad_topic", "oversized", "malformed", "unknown_device", "revoked_device",
    "bad_signature", "bad_version", "topic_mismatch", "bad_payload",
    "duplicate",
]
REJECT_REASONS: tuple[str, ...] = (
    "bad_topic", "oversized", "malformed", "unknown_device", "revoked_device",
    "bad_signature", "bad_version", "topic_mismatch", "bad_payload",
    "duplicate",
)
TURNOUT_FIELDS = ("identified", "refused", "not_identified", "manual")
_HOUR_RE = re.compile(r"^([01]\d|2[0-3])$")


@dataclass(frozen=True)
class Accepted:
    """A verified message; ``key`` identifies it for deduplication within its device."""

    env: Envelope
    received_ms: int
    key: str
    signed: bytes = b""
    """The message exactly as received (signature || body): kept for turnout, so the
    public feed can hand observers the kiosk's own signed figure."""


@dataclass(frozen=True)
class Rejected:
    """A refused message and why."""

    reason: RejectReason
    device: str | None
    detail: str


Verdict = Accepted | Rejected


def dedup_key(env: Envelope) -> str:
    """Data messages by counter; a birth by (boot, send time); a death by boot.

    A death registered as the will and the same death sent on a graceful stop
    are the same bytes, so they share a key.
    """
    if env.type == "birth":
        return f"b:{env.boot}:{env.sent_ms}"
    if env.type == "death":
        return f"d:{env.boot}"
    return f"n:{env.n}"


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def check_turnout(p: Mapping[str, Any]) -> str | None:
    """Problem with a cumulative turnout payload, or None if it is well formed."""
    for name in TURNOUT_FIELDS:
        if not _nonneg_int(p.get(name)):
            return f"turnout field {name!r} must be a non-negative integer"
    by_hour = p.get("by_hour", {})
    if not isinstance(by_hour, dict):
        return "by_hour must be an object"
    for hour, count in by_hour.items():
        if not _HOUR_RE.match(hour) or not _nonneg_int(count):
            return f"by_hour entry {hour!r} is not 'HH': count"
    return None


def _check_payload(env: Envelope) -> str | None:
    p = env.payload
    if env.type == "turnout":
        return check_turnout(p)
    if env.type == "event":
        ev = p.get("event")
        return None if isinstance(ev, str) and 0 < len(ev) <= 64 else "event id missing"
    if env.type == "birth":
        return None if _nonneg_int(p.get("last_n")) and _nonneg_int(p.get("oldest_n")) \
            else "birth needs last_n and oldest_n"
    return None


class Verifier:
    """Stateless checks against the current registry (deduplication is the store's job)."""

    def __init__(self, registry: Registry, tuning: OpsTuning | None = None) -> None:
        self.tuning = tuning or OpsTuning()
        self.set_registry(registry)

    def set_registry(self, registry: Registry) -> None:
        """Swap in a reloaded registry (keys are decoded once here, not per message)."""
        self.registry = registry
        self._keys: dict[str, VerifyKey] = {
            d: rec.key() for d, rec in registry.devices.items() if rec.active
        }

    def check(self, topic: str, data: bytes, received_ms: int) -> Verdict:
        """Verify one message received at ``received_ms`` (ops wall clock)."""
        try:
            parts = parse_topic(topic)
        except EnvelopeError as exc:
            return Rejected("bad_topic", None, str(exc))
        device = parts.device
        if len(data) > MAX_MESSAGE_BYTES:
            return Rejected("oversized", device, f"{len(data)} bytes")
        key = self._keys.get(device)
        if key is None:
            rec = self.registry.get(device)
            if rec is None:
                return Rejected("unknown_device", device, "not in the registry")
            return Rejected("revoked_device", device, f"revoked {rec.revoked_at}")
        try:
            env = decode_body(verify_signed(data, key))
        except EnvelopeError as exc:
            return Rejected(exc.reason, device, str(exc))  # type: ignore[arg-type]
        rec = self.registry.devices[device]
        if (env.device, env.station, env.district, env.type) != (
            device, parts.station, parts.district, parts.type
        ) or (rec.station_id, rec.district) != (env.station, env.district):
            return Rejected("topic_mismatch", device, "signed identity differs from topic/registry")
        # No time window: a wrong clock is an alert (the store records the skew of
        # live messages), never a reason to drop signed turnout (see OpsTuning).
        problem = _check_payload(env)
        if problem is not None:
            return Rejected("bad_payload", device, problem)
        return Accepted(env, received_ms, dedup_key(env),
                        data if env.type == "turnout" else b"")
