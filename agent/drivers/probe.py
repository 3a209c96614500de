"""Who answers at a serial port: a receipt printer, a fingerprint sensor, or neither.

Used only after a device failed to answer its own protocol at its port, to
tell "nothing answers" from "the other device answers here": the sensor's
and the printer's USB-serial bridges are often the same chip (CH340
``1a86:7523``), so the udev names follow the USB port, and two cables
swapped put the printer behind ``/dev/kesp-sensor`` and the sensor behind
``/dev/kesp-printer``. Each probe is one short exchange of the other
device's real-time query, harmless to a device that does not speak it: a
printer's ``DLE EOT 1-4`` (a Grow module ignores bytes that are not a
packet) and a Grow module's ``VfyPwd`` (sent only where nothing has
answered ``DLE EOT`` since the port appeared: a printer would print it).
The constants below are this module's tuned values (it belongs to no one
driver package's parameters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from agent.drivers.printer.errors import StatusReplyError
from agent.drivers.printer.escpos import STATUS_QUERY
from agent.drivers.printer.profiles import EPSON_STATUS
from agent.drivers.printer.status import decode_status
from agent.drivers.sensor.grow_device import GrowDevice
from agent.drivers.sensor.parameters import READ_SLICE_S, SensorTimings
from agent.drivers.sensor.types import DeviceRefusedError, SensorError
from agent.drivers.transport import LinkError, SerialLink, TransportUnavailableError, open_serial

__all__ = ["GROW_PROBE_BAUDS", "PRINTER_PROBE_BAUDS", "PROBE_REPLY_S", "grow_answers",
           "printer_answers"]

PRINTER_PROBE_BAUDS = (19200, 9600, 38400, 115200)
"""Serial rates ESC/POS printers are set to (DIP switches), the common default first."""

GROW_PROBE_BAUDS = (57600, 115200)
"""Grow module rates tried: the factory default, then the fastest integrators set."""

PROBE_REPLY_S = 0.3
"""How long a probe waits for the other device's reply (both answer within milliseconds)."""


def printer_answers(port: str, bauds: Sequence[int] = PRINTER_PROBE_BAUDS) -> int | None:
    """The baud rate at which an ESC/POS printer answers ``DLE EOT 1-4`` at ``port``, or None.

    Exactly four valid status bytes count (line noise does not: it rarely makes
    four bytes of the ``0xx1xx10`` pattern, and does not stop after four).
    """
    for baud in bauds:
        try:
            link = SerialLink(port, baud)
        except TransportUnavailableError:
            return None
        try:
            link.discard_input()
            link.write(STATUS_QUERY, PROBE_REPLY_S)
            reply = link.read(5, PROBE_REPLY_S)  # one byte more than a printer sends
            if len(reply) == 4:
                with contextlib.suppress(StatusReplyError):
                    decode_status(reply, EPSON_STATUS)  # the fixed bits are every model's
                    return baud
        except LinkError:
            return None
        finally:
            link.close()
    return None


def grow_answers(port: str, bauds: Sequence[int] = GROW_PROBE_BAUDS) -> int | None:
    """The baud rate at which a Grow fingerprint module acknowledges ``VfyPwd`` at ``port``.

    Any well-formed acknowledge counts, a refused password included.
    """
    timings = SensorTimings(reply_timeout_s=PROBE_REPLY_S, command_retries=1)
    for baud in bauds:
        try:
            ser = open_serial(port, baud, READ_SLICE_S)
        except TransportUnavailableError:
            return None
        try:
            GrowDevice(ser, timings=timings).verify_password(0, retries=1)
            return baud
        except DeviceRefusedError:
            return baud
        except (SensorError, OSError):
            continue
        finally:
            ser.close()
    return None
