"""Technician and CEC tooling: keys, roll packages, device registration, broker credentials."""
