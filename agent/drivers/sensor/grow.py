"""ZhianTec / Grow fingerprint modules over a serial port: device API and service.

:class:`GrowDevice` is the device API: one method per instruction, over any
:class:`~agent.drivers.transport.SerialPort`, returning typed results
(:class:`~agent.drivers.sensor.grow_codec.Confirmation`, parsed parameters, images).
:class:`GrowSensor` is the :class:`~agent.drivers.sensor.service.FingerprintSensor`
service on top: finger polling, LED guidance, baud negotiation and transparent
reconnection when the port disappears (USB-serial bridge pulled, pty closed)
and comes back at the same path.
"""

from __future__ import annotations

import contextlib
import logging
import termios
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import serial
from numpy.typing import NDArray

from agent.drivers.sensor.grow_codec import (
    BAUD_UNIT,
    CHAR_FILE_BYTES,
    DATA_PACKET_SIZES,
    DEFAULT_ADDRESS,
    IMAGE_BYTES,
    IMAGE_DPI,
    READY_BYTE,
    AuraLed,
    Confirmation,
    ImageBits,
    Instruction,
    LedColour,
    LedControl,
    Packet,
    PacketId,
    PacketReader,
    Register,
    SystemParameters,
    confirmation_of,
    unpack_image,
)
from agent.drivers.sensor.parameters import BAUD_CANDIDATES, READ_SLICE_S, SensorTimings
from agent.drivers.sensor.reconnecting import Reconnecting
from agent.drivers.sensor.types import (
    Capture,
    DeviceRefusedError,
    Guidance,
    NoFinger,
    ProtocolError,
    SensorDisconnected,
    SensorError,
    SensorStatus,
    SensorTimeoutError,
    UnexpectedPacketError,
    map_status,
)
from agent.drivers.transport import SerialPort, TransportUnavailableError, open_serial

log = logging.getLogger(__name__)

T = TypeVar("T")


# How each guidance looks on the R503 ring. Colours follow the usual kiosk
# convention (blue = waiting, green = good, red = no); RETRY flashes three times.
AURA_FOR_GUIDANCE: dict[Guidance, AuraLed] = {
    Guidance.READY: AuraLed(LedControl.BREATHING, LedColour.BLUE, speed=0x60),
    Guidance.CAPTURING: AuraLed(LedControl.ON, LedColour.CYAN),
    Guidance.ACCEPTED: AuraLed(LedControl.ON, LedColour.GREEN),
    Guidance.RETRY: AuraLed(LedControl.FLASHING, LedColour.YELLOW, speed=0x30, times=3),
    Guidance.REFUSED: AuraLed(LedControl.ON, LedColour.RED),
    Guidance.FAULT: AuraLed(LedControl.FLASHING, LedColour.RED, speed=0x20, times=0),
}


class GrowDevice:
    """The instruction set of one module behind ``port`` (no retries across reconnects)."""

    def __init__(self, port: SerialPort, address: int = DEFAULT_ADDRESS,
                 timings: SensorTimings | None = None, image_bits: ImageBits = 4) -> None:
        self.port = port
        self.address = address
        self.image_bits: ImageBits = image_bits  # 4 over a UART, 8 over the USB interface
        self.timings = timings or SensorTimings()
        self.packet_size = 128  # updated by read_sys_para
        self._reader = PacketReader()

    # --- wire ---------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialTimeoutException as exc:
            raise SensorTimeoutError(f"write timed out: {exc}") from exc
        except OSError as exc:  # SerialException is an OSError
            raise SensorDisconnected(f"write failed: {exc}") from exc

    def _read(self, size: int) -> bytes:
        try:
            return self.port.read(size)
        except OSError as exc:
            raise SensorDisconnected(f"read failed: {exc}") from exc

    def send(self, pkt: Packet) -> None:
        """Send one packet."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("-> %s", pkt.to_bytes().hex(" "))
        self._write(pkt.to_bytes())

    def receive(self, timeout_s: float) -> Packet:
        """The next valid packet addressed to us, or raise (timeout, corrupt frame)."""
        deadline = time.monotonic() + timeout_s
        while True:
            pkt = self._reader.next_packet()
            if isinstance(pkt, Packet):
                if pkt.address != self.address:
                    raise UnexpectedPacketError(
                        f"reply from address {pkt.address:#010x}, expected {self.address:#010x}",
                        pkt.to_bytes())
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("<- %s", pkt.to_bytes().hex(" "))
                return pkt
            if time.monotonic() >= deadline:
                raise SensorTimeoutError(
                    f"no complete packet within {timeout_s:.2f} s "
                    f"({self._reader.pending} bytes pending)")
            chunk = self._read(self._reader.wanted())
            if chunk:
                self._reader.feed(chunk)

    def drain_limit(self, instruction: Instruction) -> float:
        """Longest a resync may wait for the line to fall quiet after ``instruction``.

        After a corrupt UpImage acknowledge the module may still be streaming
        the whole image (about 7 s at 57600 baud); resending before it is done
        would mix two transfers.
        """
        if instruction not in (Instruction.UP_IMAGE, Instruction.UP_CHAR):
            return self.timings.data_timeout_s
        if instruction is Instruction.UP_IMAGE:
            size = IMAGE_BYTES[self.image_bits]
        else:
            size = CHAR_FILE_BYTES
        wire_s = size * 1.1 * 10 / max(1, self.port.baudrate)  # 10 bits a byte, 10 % framing
        return self.timings.data_timeout_s + wire_s

    def resync(self, limit_s: float | None = None) -> None:
        """Drop whatever is on the line until it has been quiet for a moment."""
        quiet_until = time.monotonic() + 3 * READ_SLICE_S
        hard_stop = time.monotonic() + (self.timings.data_timeout_s if limit_s is None
                                        else limit_s)
        while time.monotonic() < hard_stop:
            if self._read(4096):
                quiet_until = time.monotonic() + 3 * READ_SLICE_S
            elif time.monotonic() >= quiet_until:
                break
        self.flush_input()

    def flush_input(self) -> None:
        """Forget received bytes nobody asked for (a late reply to an abandoned command
        must not be taken for the answer to the next one)."""
        self._reader.clear()
        try:
            self.port.reset_input_buffer()
        except (OSError, termios.error) as exc:  # tcflush on a vanished tty: termios.error
            raise SensorDisconnected(f"flush failed: {exc}") from exc

    def transact(self, instruction: Instruction, params: bytes = b"",
                 retries: int | None = None) -> Packet:
        """Send a command and return its acknowledge, resending after corrupt or lost replies."""
        attempts = self.timings.command_retries if retries is None else retries
        last: SensorError | None = None
        for _ in range(attempts):
            self.flush_input()
            self.send(Packet.command(instruction, params, self.address))
            try:
                ack = self.receive(self.timings.reply_timeout_s)
                confirmation_of(ack)  # validates kind and code
                return ack
            except (ProtocolError, SensorTimeoutError) as exc:
                log.warning("%s: %s; resynchronising", instruction.name, exc)
                last = exc
                self.resync(self.drain_limit(instruction))
        if last is None:  # attempts < 1 is refused by SensorTimings
            raise ValueError("retries must be >= 1")
        raise last

    def _code(self, instruction: Instruction, params: bytes = b"",
              retries: int | None = None) -> Confirmation:
        return confirmation_of(self.transact(instruction, params, retries))

    def _require_ok(self, instruction: Instruction, params: bytes = b"") -> Packet:
        ack = self.transact(instruction, params)
        code = confirmation_of(ack)
        if code is not Confirmation.OK:
            raise DeviceRefusedError(instruction.name, code, code.name)
        return ack

    def receive_data(self) -> bytes:
        """Collect DATA packets up to and including END_DATA; the last partial chunk is kept."""
        out = bytearray()
        while True:
            pkt = self.receive(self.timings.data_timeout_s)
            if pkt.pid is PacketId.DATA:
                out += pkt.payload
            elif pkt.pid is PacketId.END_DATA:
                out += pkt.payload
                return bytes(out)
            else:
                raise UnexpectedPacketError(f"{pkt.pid.name} inside a data transfer",
                                            pkt.to_bytes())

    # --- instructions ----------------------------------------------------------

    def verify_password(self, password: int, retries: int | None = None) -> None:
        """VfyPwd; raise :class:`DeviceRefusedError` on a wrong password."""
        code = self._code(Instruction.VFY_PWD, password.to_bytes(4, "big"), retries)
        if code is not Confirmation.OK:
            raise DeviceRefusedError("VFY_PWD", code, code.name)

    def read_sys_para(self) -> SystemParameters:
        """ReadSysPara; also remembers the data packet size."""
        ack = self._require_ok(Instruction.READ_SYS_PARA)
        params = SystemParameters.from_bytes(ack.payload[1:])
        self.packet_size = params.packet_size
        return params

    def gen_img(self) -> Confirmation:
        """GenImg: OK (image captured), NO_FINGER, CAPTURE_FAILED, ..."""
        return self._code(Instruction.GEN_IMG)

    def up_image(self) -> NDArray[np.uint8]:
        """UpImage: the image buffer as 288 x 256 grey levels (4-bit UART data expanded)."""
        last: SensorError | None = None
        for _ in range(self.timings.command_retries):
            self._require_ok(Instruction.UP_IMAGE)
            try:
                return unpack_image(self.receive_data(), self.image_bits)
            except (ProtocolError, SensorTimeoutError) as exc:
                # The module keeps its image buffer, so asking again is safe.
                log.warning("UpImage transfer failed: %s; asking again", exc)
                last = exc
                self.resync(self.drain_limit(Instruction.UP_IMAGE))
        if last is None:
            raise ValueError("command_retries must be >= 1")
        raise last

    def img2tz(self, buffer_id: int = 1) -> Confirmation:
        """Img2Tz: extract features of the image buffer into char buffer 1 or 2."""
        return self._code(Instruction.IMG2TZ, bytes([buffer_id]))

    def up_char(self, buffer_id: int = 1) -> bytes:
        """UpChar: the module's own (vendor-format) feature file of a char buffer."""
        self._require_ok(Instruction.UP_CHAR, bytes([buffer_id]))
        data = self.receive_data()
        if len(data) != CHAR_FILE_BYTES:
            raise ProtocolError(f"char file of {len(data)} bytes, expected {CHAR_FILE_BYTES}")
        return data

    def set_sys_para(self, register: Register, value: int) -> None:
        """SetSysPara."""
        self._require_ok(Instruction.SET_SYS_PARA, bytes([register, value]))

    def set_baud(self, baud: int) -> None:
        """Switch the module and then the port to ``baud`` (9600 x 1..12)."""
        if baud % BAUD_UNIT or not 1 <= baud // BAUD_UNIT <= 12:
            raise ValueError(f"baud {baud} is not 9600 x 1..12")
        self.set_sys_para(Register.BAUD, baud // BAUD_UNIT)
        time.sleep(READ_SLICE_S)  # let the ack leave before the line speed changes
        self.set_line_speed(baud)

    def set_line_speed(self, baud: int) -> None:
        """Change the host side of the line only (the module keeps its speed)."""
        try:
            self.port.baudrate = baud
        except (OSError, termios.error) as exc:
            raise SensorDisconnected(f"cannot set {baud} baud: {exc}") from exc

    def set_packet_size(self, size: int) -> None:
        """Set the data packet size (32/64/128/256)."""
        if size not in DATA_PACKET_SIZES:
            raise ValueError(f"packet size {size} not one of {DATA_PACKET_SIZES}")
        self.set_sys_para(Register.PACKET_SIZE, DATA_PACKET_SIZES.index(size))
        self.packet_size = size

    def soft_reset(self) -> None:
        """SoftReset, then wait for the module's ready byte ``55``."""
        self._require_ok(Instruction.SOFT_RESET)
        deadline = time.monotonic() + self.timings.reply_timeout_s
        while time.monotonic() < deadline:
            if READY_BYTE in self._read(1):
                self._reader.clear()
                return
        raise SensorTimeoutError("no ready byte after SoftReset")

    def aura_led(self, led: AuraLed, retries: int | None = None) -> Confirmation:
        """AuraLedConfig (R503 ring). Modules without a ring answer with an error code."""
        return self._code(Instruction.AURA_LED_CONFIG, led.to_params(), retries)

    def get_echo(self) -> bool:
        """GetEcho: True when the module answers ``55``."""
        return self._code(Instruction.GET_ECHO) is Confirmation.HANDSHAKE_OK


def _close_port(port: SerialPort) -> None:
    with contextlib.suppress(OSError):  # the port may already be gone
        port.close()


class GrowSensor:
    """:class:`~agent.drivers.sensor.service.FingerprintSensor` on a Grow module at a serial path.

    Every operation runs against the current :class:`GrowDevice`; when the port
    vanishes the service closes it and reopens the same path (a stable udev
    symlink such as ``/dev/kesp-sensor``) until the operation's deadline.
    """

    device_type: type[GrowDevice] = GrowDevice  # the device API class (benchmarks vary it)

    def __init__(self, opener: Callable[[int], SerialPort], baud: int = 57600,
                 password: int = 0, address: int = DEFAULT_ADDRESS,
                 timings: SensorTimings | None = None) -> None:
        self._opener = opener
        self.baud = baud
        self.password = password
        self.address = address
        self.timings = timings or SensorTimings()
        self._link: Reconnecting[GrowDevice] = Reconnecting(
            self._connect, lambda d: _close_port(d.port), self.timings)
        self.has_led: bool | None = None  # unknown until the first LED command
        self.params: SystemParameters | None = None
        self._negotiated = False

    @classmethod
    def open(cls, path: str, baud: int = 57600, password: int = 0,
             address: int = DEFAULT_ADDRESS, timings: SensorTimings | None = None) -> GrowSensor:
        """Open and handshake the module at ``path``; raise SensorDisconnected if absent."""
        sensor = cls(lambda b: open_serial(path, b, READ_SLICE_S), baud, password, address,
                     timings)
        sensor._link.get()
        return sensor

    # --- connection -------------------------------------------------------------

    def _connect(self) -> GrowDevice:
        """Open the port, find the module's baud rate, verify the password."""
        try:
            port = self._opener(self.baud)
        except TransportUnavailableError as exc:
            raise SensorDisconnected(str(exc)) from exc
        dev = self.device_type(port, self.address, self.timings)
        try:
            found = self._negotiate(dev)
            if found != self.baud:
                log.info("module answered at %d baud; switching it to %d", found, self.baud)
                dev.set_baud(self.baud)
            self.params = dev.read_sys_para()
        except BaseException:
            _close_port(port)
            raise
        return dev

    def _negotiate(self, dev: GrowDevice) -> int:
        """The baud rate at which the module answers VfyPwd (configured one first)."""
        candidates = [self.baud]
        if not self._negotiated:
            # Only the first open scans: once the module has been set to the
            # configured rate (stored in its flash) a reconnect must not spend
            # 20 s on other speeds while a voter waits.
            candidates += [b for b in BAUD_CANDIDATES if b != self.baud]
        for i, baud in enumerate(candidates):
            dev.set_line_speed(baud)
            try:
                # Full retries at the configured speed; one try for the others.
                dev.verify_password(self.password, retries=None if i == 0 else 1)
                self._negotiated = True
                return baud
            except SensorTimeoutError:
                continue
            except ProtocolError:
                dev.resync()
                continue
        raise SensorTimeoutError("module does not answer at any baud rate")

    @property
    def device(self) -> GrowDevice | None:
        """The open device API (None while disconnected)."""
        return self._link.handle

    @property
    def reconnects(self) -> int:
        """How many times the port was reopened after a fault."""
        return self._link.reconnects

    def _run(self, op: Callable[[GrowDevice], T], deadline: float) -> T:
        return self._link.run(op, deadline)

    def _gen_img(self, d: GrowDevice) -> Confirmation:
        code = d.gen_img()
        if code is Confirmation.MUST_VERIFY_PASSWORD:
            # A power blip behind a bridge that stayed up: the module forgot
            # the handshake but the port never went away.
            d.verify_password(self.password)
            code = d.gen_img()
        return code

    # --- FingerprintSensor ---------------------------------------------------------

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """Poll GenImg until a finger is imaged, then UpImage it; NoFinger at the timeout."""
        deadline = time.monotonic() + timeout_s

        def poll(d: GrowDevice) -> tuple[Confirmation, NDArray[np.uint8] | None]:
            # GenImg and UpImage form one unit: after a reconnect the module
            # has lost its image buffer, so both are repeated.
            code = self._gen_img(d)
            return code, d.up_image() if code is Confirmation.OK else None

        last_logged: Confirmation | None = None

        while True:
            try:
                code, image = self._run(poll, deadline)
            except DeviceRefusedError as exc:
                if exc.code not in (Confirmation.IMAGE_UPLOAD_FAILED,
                                    Confirmation.NO_VALID_IMAGE):
                    raise
                code, image = Confirmation(exc.code), None  # buffer lost (power blip)
            if image is not None:
                return Capture(image, IMAGE_DPI)
            if code not in (Confirmation.NO_FINGER, Confirmation.CAPTURE_FAILED) \
                    and code is not last_logged:
                log.info("GenImg answered %s; polling on", code.name)  # once per change
            last_logged = code
            if time.monotonic() >= deadline:
                return NoFinger()
            time.sleep(self.timings.poll_interval_s)

    def wait_for_lift(self, timeout_s: float) -> bool:
        """Poll GenImg until it reports no finger."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._run(self._gen_img, deadline) is Confirmation.NO_FINGER:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.timings.poll_interval_s)

    def guide(self, guidance: Guidance) -> None:
        """Set the R503 ring; remembered as absent after the first refusal or silence."""
        if self.has_led is False:
            return
        led = AURA_FOR_GUIDANCE[guidance]

        def set_ring(d: GrowDevice) -> Confirmation | None:
            try:
                return d.aura_led(led, retries=1)
            except (SensorTimeoutError, ProtocolError):
                # Modules without the ring stay silent or answer nonsense;
                # only a vanished port is worth a reconnect here.
                d.resync()
                return None

        deadline = time.monotonic() + self.timings.reply_timeout_s
        self.has_led = self._run(set_ring, deadline) is Confirmation.OK

    def status(self) -> SensorStatus:
        """ReadSysPara mapped by :func:`~agent.drivers.sensor.map_status`; never raises.

        While another thread is capturing, the outcome of its last operation is
        reported instead of waiting up to an UpImage (7 s at 57600 baud).
        """

        def query() -> SensorStatus:
            try:
                ack = self._link.get().transact(Instruction.READ_SYS_PARA)
                code = confirmation_of(ack)
                if code is not Confirmation.OK:
                    return map_status(int(code))
                params = SystemParameters.from_bytes(ack.payload[1:])
                self.params = params
                return map_status(0, params.status_register)
            except (SensorDisconnected, SensorTimeoutError) as exc:
                self._link.drop()
                self._link.last_fault = exc
                return map_status(None, fault=exc if isinstance(exc, SensorDisconnected) else None)
            except SensorError as exc:
                self._link.last_fault = exc
                return map_status(None, fault=exc)

        return self._link.status_of(query, self.timings.status_wait_s)

    def close(self) -> None:
        """Release the port."""
        self._link.drop()

    def __enter__(self) -> GrowSensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

