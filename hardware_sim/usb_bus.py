"""Several simulated USB devices on one bus, as one pyusb backend.

Each simulator of this package is a pyusb backend presenting one device
(:class:`hardware_sim.usb_replay.ReplayBackend` for the sensors,
:class:`hardware_sim.escpos_sim.EscposUsbBackend` for the printer). A kiosk's
bus holds several at once, and the technician's mistakes are about which one
is where: another sensor model than configured, the printer where the sensor
was expected. :class:`UsbBus` puts any of them on one bus
(``usb.core.find(..., backend=bus)`` enumerates them all) and routes every
call to the backend of the device it concerns; :meth:`UsbBus.plug` and
:meth:`UsbBus.unplug` add and remove a device while the agent runs.

:func:`string_descriptor` answers ``GET_DESCRIPTOR(STRING)`` control
transfers as a device does, so a simulator can give a product string.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator, Mapping, MutableSequence
from dataclasses import dataclass
from typing import Any

import usb.backend
import usb.core

__all__ = ["UsbBus", "string_descriptor"]

_GET_DESCRIPTOR = 6
_DESC_STRING = 3
_LANGID_EN_US = b"\x09\x04"


def string_descriptor(bm_request_type: int, b_request: int, w_value: int,
                      strings: Mapping[int, str], data: MutableSequence[int]) -> int | None:
    """Answer a ``GET_DESCRIPTOR(STRING)`` request into ``data``; None for any other request.

    Index 0 is the language list (US English only); an index not in
    ``strings`` stalls (``USBError`` EPIPE), as a real device does.
    """
    if bm_request_type != 0x80 or b_request != _GET_DESCRIPTOR or w_value >> 8 != _DESC_STRING:
        return None
    index = w_value & 0xFF
    if index == 0:
        payload = _LANGID_EN_US
    elif index in strings:
        payload = strings[index].encode("utf-16-le")
    else:
        raise usb.core.USBError("Pipe error", errno=errno.EPIPE)
    desc = bytes((2 + len(payload), _DESC_STRING)) + payload
    n = min(len(desc), len(data))
    for i in range(n):
        data[i] = desc[i]
    return n


@dataclass(frozen=True)
class _Dev:
    """A device of the bus: the backend that simulates it and its own device id."""

    backend: Any
    dev: Any


@dataclass(frozen=True)
class _Handle:
    backend: Any
    handle: Any


class UsbBus(usb.backend.IBackend):  # type: ignore[misc]  # pyusb ships no types
    """A pyusb backend enumerating the devices of several simulator backends (module docstring)."""

    def __init__(self, *devices: Any) -> None:
        self._lock = threading.Lock()
        self._devices: list[Any] = list(devices)

    def plug(self, backend: Any) -> None:
        """Attach the device ``backend`` simulates (it enumerates from now on)."""
        with self._lock:
            if backend not in self._devices:
                self._devices.append(backend)

    def unplug(self, backend: Any) -> None:
        """Detach it: it no longer enumerates (a handle already open keeps its backend)."""
        with self._lock:
            if backend in self._devices:
                self._devices.remove(backend)

    # enumeration and descriptors: routed by the device
    def enumerate_devices(self) -> Iterator[_Dev]:
        with self._lock:
            devices = list(self._devices)
        for backend in devices:
            for dev in backend.enumerate_devices():
                yield _Dev(backend, dev)

    def get_parent(self, dev: _Dev) -> None:
        return None

    def get_device_descriptor(self, dev: _Dev) -> Any:
        return dev.backend.get_device_descriptor(dev.dev)

    def get_configuration_descriptor(self, dev: _Dev, config: int) -> Any:
        return dev.backend.get_configuration_descriptor(dev.dev, config)

    def get_interface_descriptor(self, dev: _Dev, intf: int, alt: int, config: int) -> Any:
        return dev.backend.get_interface_descriptor(dev.dev, intf, alt, config)

    def get_endpoint_descriptor(self, dev: _Dev, ep: int, intf: int, alt: int,
                                config: int) -> Any:
        return dev.backend.get_endpoint_descriptor(dev.dev, ep, intf, alt, config)

    def open_device(self, dev: _Dev) -> _Handle:
        return _Handle(dev.backend, dev.backend.open_device(dev.dev))

    # everything on an open handle: routed by the handle
    def close_device(self, h: _Handle) -> None:
        h.backend.close_device(h.handle)

    def set_configuration(self, h: _Handle, config_value: int) -> None:
        h.backend.set_configuration(h.handle, config_value)

    def get_configuration(self, h: _Handle) -> int:
        return int(h.backend.get_configuration(h.handle))

    def set_interface_altsetting(self, h: _Handle, intf: int, altsetting: int) -> None:
        h.backend.set_interface_altsetting(h.handle, intf, altsetting)

    def claim_interface(self, h: _Handle, intf: int) -> None:
        h.backend.claim_interface(h.handle, intf)

    def release_interface(self, h: _Handle, intf: int) -> None:
        h.backend.release_interface(h.handle, intf)

    def bulk_write(self, h: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return int(h.backend.bulk_write(h.handle, ep, intf, data, timeout))

    def bulk_read(self, h: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return int(h.backend.bulk_read(h.handle, ep, intf, buff, timeout))

    def ctrl_transfer(self, h: _Handle, bm_request_type: int, b_request: int, w_value: int,
                      w_index: int, data: Any, timeout: int) -> int:
        return int(h.backend.ctrl_transfer(h.handle, bm_request_type, b_request, w_value,
                                           w_index, data, timeout))

    def clear_halt(self, h: _Handle, ep: int) -> None:
        h.backend.clear_halt(h.handle, ep)

    def reset_device(self, h: _Handle) -> None:
        h.backend.reset_device(h.handle)

    def is_kernel_driver_active(self, h: _Handle, intf: int) -> bool:
        return bool(h.backend.is_kernel_driver_active(h.handle, intf))

    def detach_kernel_driver(self, h: _Handle, intf: int) -> None:
        h.backend.detach_kernel_driver(h.handle, intf)

    def attach_kernel_driver(self, h: _Handle, intf: int) -> None:
        h.backend.attach_kernel_driver(h.handle, intf)
