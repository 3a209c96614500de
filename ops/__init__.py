"""Central operations: verify kiosk telemetry, keep state, show turnout and device health."""
