"""The device API of a ZhianTec / Grow fingerprint module: one method per instruction.

:class:`GrowDevice` speaks the packets of :mod:`.grow_codec` over any
:class:`~agent.drivers.transport.SerialPort` and returns typed results
(:class:`~agent.drivers.sensor.grow_codec.Confirmation`, parsed parameters,
images). It retries a corrupt or missing reply but never reconnects: that is
the service's job (:class:`~agent.drivers.sensor.grow.GrowSensor`).
"""

from __future__ import annotations

import logging
import termios
import time

import numpy as np
import serial
from numpy.typing import NDArray

from agent.drivers.sensor.grow_codec import (
    BAUD_UNIT,
    CHAR_FILE_BYTES,
    DATA_PACKET_SIZES,
    DEFAULT_ADDRESS,
    IMAGE_BYTES,
    READY_BYTE,
    AuraLed,
    Confirmation,
    ImageBits,
    Instruction,
    Packet,
    PacketId,
    PacketReader,
    Register,
    SystemParameters,
    confirmation_of,
    unpack_image,
)
from agent.drivers.sensor.parameters import READ_SLICE_S, SensorTimings
from agent.drivers.sensor.types import (
    DeviceRefusedError,
    ProtocolError,
    SensorDisconnected,
    SensorError,
    SensorTimeoutError,
    UnexpectedPacketError,
)
from agent.drivers.transport import SerialPort

log = logging.getLogger(__name__)


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
