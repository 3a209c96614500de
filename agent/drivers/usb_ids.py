"""What the devices on a USB bus are, from their ids and classes: no I/O.

When the configured sensor or printer is not on the bus, the technician
needs to read what *is* there: another fingerprint sensor (a different
model, so ``sensor.kind`` is wrong or the wrong sensor was delivered), a
printer where the sensor was expected, the sensor's id configured as the
printer. :func:`role_of` says which of the kiosk's roles a device plausibly
plays and :func:`describe` names it in one short phrase. The enumeration
itself (descriptors, product strings) is :func:`agent.drivers.transport.list_usb`.

The tables are facts of the field, not tuned values: the USB sensor models
the drivers support, vendor ids of fingerprint-sensor makers (those with
devices in libfprint), the printer class and vendor ids of the makers of
the printers the profiles name or that the field deploys (Epson, Citizen,
and the chips of the common 58 mm clones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PRINTER_CLASS", "SENSOR_MODELS", "Role", "UsbSeen", "describe", "plausible",
           "role_of"]

PRINTER_CLASS = 7
"""USB interface class of printers (``usblp`` binds to it)."""

HUB_CLASS = 9

#: ``(vendor, product)`` -> (model, ``sensor.kind``) of the USB sensors the drivers
#: support (the drivers' ``MODEL``; tests/drivers/test_usb_wrong_device.py checks both agree).
SENSOR_MODELS: dict[tuple[int, int], tuple[str, str]] = {
    (0x298D, 0x1010): ("NB-1010-U", "nb1010-usb"),
    (0x08FF, 0x5731): ("AES3500", "aes3500-usb"),
}

#: Makers of USB fingerprint sensors: their devices are vendor-specific (class
#: 0xFF), so the vendor id is what tells a sensor from a keyboard.
FINGERPRINT_VENDORS: dict[int, str] = {
    0x298D: "Next Biometrics",
    0x08FF: "AuthenTec",
    0x27C6: "Goodix",
    0x06CB: "Synaptics",
    0x138A: "Validity",
    0x147E: "UPEK",
    0x1C7A: "LighTuning",
    0x05BA: "DigitalPersona",
    0x1162: "SecuGen",
}

#: Makers of receipt printers (or of their USB chips) whose units may show a
#: vendor-specific interface instead of the printer class.
PRINTER_VENDORS: dict[int, str] = {
    0x04B8: "Epson",
    0x1D90: "Citizen",
    0x0416: "Winbond (58 mm clones)",
    0x0FE6: "ICS Advent (Xprinter clones)",
}

Role = Literal["fingerprint-sensor", "printer"]


@dataclass(frozen=True)
class UsbSeen:
    """One device as enumeration shows it: ids, classes, product string if it gave one."""

    vendor: int
    product: int
    #: The device class and every interface class of its configurations.
    classes: tuple[int, ...] = ()
    #: The product string descriptor ("" when the device has none or it could not be read).
    name: str = ""

    @property
    def ident(self) -> str:
        """``vvvv:pppp`` as ``lsusb`` prints it."""
        return f"{self.vendor:04x}:{self.product:04x}"


def role_of(seen: UsbSeen) -> Role | None:
    """Which kiosk device ``seen`` plausibly is, or None (hubs, keyboards, the rest)."""
    if (seen.vendor, seen.product) in SENSOR_MODELS or seen.vendor in FINGERPRINT_VENDORS:
        return "fingerprint-sensor"
    if PRINTER_CLASS in seen.classes or seen.vendor in PRINTER_VENDORS:
        return "printer"
    return None


def describe(seen: UsbSeen) -> str:
    """``AES3500 fingerprint sensor 08ff:5731``, ``printer-class device 1209:0001 "POS58"``."""
    model = SENSOR_MODELS.get((seen.vendor, seen.product))
    role = role_of(seen)
    if model is not None:
        text = f"{model[0]} fingerprint sensor {seen.ident}"
    elif role == "fingerprint-sensor":
        text = f"{FINGERPRINT_VENDORS[seen.vendor]} fingerprint sensor {seen.ident}"
    elif PRINTER_CLASS in seen.classes:
        text = f"printer-class device {seen.ident}"
    elif role == "printer":
        text = f"{PRINTER_VENDORS[seen.vendor]} device {seen.ident}"
    else:
        text = f"USB device {seen.ident}"
    # A product string is the device's own words: printable ASCII only, shortened.
    name = "".join(c for c in seen.name if " " <= c <= "~").strip()[:64]
    return f'{text} "{name}"' if name else text


def plausible(seen: tuple[UsbSeen, ...], role: Role) -> tuple[UsbSeen, ...]:
    """The devices in ``seen`` that play ``role``, in a stable order (ids ascending)."""
    return tuple(sorted((s for s in seen if role_of(s) == role),
                        key=lambda s: (s.vendor, s.product)))
