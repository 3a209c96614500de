"""KESP kiosk agent: voter identification on the polling-station kiosk.

Sub-packages: ``agent.drivers`` (sensor, printer, document reader),
``agent.match`` (templates, extraction, matching), ``agent.telemetry``
(signed MQTT telemetry with a durable outbox). The station application
(lifecycle, roll store, marks, audit log, slips) lives in this package.
"""

__version__ = "0.1.0"
