"""Signed telemetry: envelopes, a durable outbox and an MQTT publisher (Sparkplug-style sessions)."""
