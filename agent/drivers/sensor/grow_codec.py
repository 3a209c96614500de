"""Packet codec of the ZhianTec / Grow fingerprint modules (R30x, R503, AS608).

Pure: no I/O. A packet on the wire is::

    EF 01 | address (4) | packet id (1) | length (2) | payload (length - 2) | checksum (2)

big-endian, ``length`` counting payload plus checksum, checksum the low 16 bits of
the sum of packet id, both length bytes and every payload byte. The same codec
serves the host driver (:mod:`agent.drivers.sensor.grow`) and the device-side simulator
(:mod:`hardware_sim.grow_sim`).

Pitfalls of popular libraries avoided on purpose: the checksum is verified on
every packet and masked to 16 bits, and the last partial data chunk of an image
is kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from agent.drivers.sensor.types import (
    ChecksumError,
    FrameLengthError,
    ProtocolError,
    UnexpectedPacketError,
    UnknownConfirmationError,
)

HEADER = b"\xef\x01"
DEFAULT_ADDRESS = 0xFFFFFFFF
PREFIX_LEN = 9  # header + address + packet id + length
DATA_PACKET_SIZES = (32, 64, 128, 256)
# The longest legal packet is a 256-byte data packet; anything longer is line
# noise that happens to follow EF 01, and waiting for it would stall the reader.
MAX_LENGTH = max(DATA_PACKET_SIZES) + 2
READY_BYTE = 0x55  # sent alone by the module after power-up / SoftReset

IMAGE_WIDTH = 256
IMAGE_HEIGHT = 288
IMAGE_DPI = 500
UART_IMAGE_BYTES = IMAGE_WIDTH * IMAGE_HEIGHT // 2  # 4 bits per pixel
CHAR_FILE_BYTES = 512
SYS_PARA_BYTES = 16
BAUD_UNIT = 9600


class PacketId(IntEnum):
    """The packet identifier byte."""

    COMMAND = 0x01
    DATA = 0x02
    ACK = 0x07
    END_DATA = 0x08


class Instruction(IntEnum):
    """Instruction codes (first payload byte of a command packet)."""

    GEN_IMG = 0x01
    IMG2TZ = 0x02
    MATCH = 0x03
    SEARCH = 0x04
    REG_MODEL = 0x05
    STORE = 0x06
    LOAD_CHAR = 0x07
    UP_CHAR = 0x08
    DOWN_CHAR = 0x09
    UP_IMAGE = 0x0A
    DOWN_IMAGE = 0x0B
    DELETE_CHAR = 0x0C
    EMPTY = 0x0D
    SET_SYS_PARA = 0x0E
    READ_SYS_PARA = 0x0F
    SET_PWD = 0x12
    VFY_PWD = 0x13
    HIGH_SPEED_SEARCH = 0x1B
    TEMPLATE_NUM = 0x1D
    READ_INDEX_TABLE = 0x1F
    AURA_LED_CONFIG = 0x35
    SOFT_RESET = 0x3D
    GET_ECHO = 0x53


class Confirmation(IntEnum):
    """Every confirmation code the modules document, by meaning."""

    OK = 0x00
    RECEIVE_ERROR = 0x01
    NO_FINGER = 0x02
    CAPTURE_FAILED = 0x03
    IMAGE_MESSY = 0x06
    TOO_FEW_FEATURES = 0x07
    NO_MATCH = 0x08
    NOT_FOUND = 0x09
    MERGE_FAILED = 0x0A
    BAD_LOCATION = 0x0B
    DATABASE_READ_ERROR = 0x0C
    UPLOAD_FAILED = 0x0D
    PACKET_RESPONSE_FAILED = 0x0E
    IMAGE_UPLOAD_FAILED = 0x0F
    DELETE_FAILED = 0x10
    CLEAR_FAILED = 0x11
    WRONG_PASSWORD = 0x13
    NO_VALID_IMAGE = 0x15
    FLASH_ERROR = 0x18
    BAD_REGISTER = 0x1A
    ADDRESS_CODE = 0x20
    MUST_VERIFY_PASSWORD = 0x21
    HANDSHAKE_OK = 0x55  # GetEcho's "alive" answer


class Register(IntEnum):
    """SetSysPara register numbers."""

    BAUD = 4  # value N: 9600 x N
    SECURITY_LEVEL = 5
    PACKET_SIZE = 6  # value 0-3: 32/64/128/256 bytes


class LedControl(IntEnum):
    """R503 AuraLedConfig control byte."""

    BREATHING = 1
    FLASHING = 2
    ON = 3
    OFF = 4
    FADE_ON = 5
    FADE_OFF = 6


class LedColour(IntEnum):
    """R503 AuraLedConfig colour index."""

    RED = 1
    BLUE = 2
    PURPLE = 3
    GREEN = 4
    YELLOW = 5
    CYAN = 6
    WHITE = 7


class Decoded(Enum):
    """What :meth:`PacketReader.next_packet` may say besides a packet."""

    NEED_MORE = "need-more"


def checksum(packet_id: int, payload: bytes) -> int:
    """Low 16 bits of the sum of packet id, both length bytes and the payload."""
    length = len(payload) + 2
    return (packet_id + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


@dataclass(frozen=True)
class Packet:
    """One packet: id, payload (without checksum) and module address."""

    pid: PacketId
    payload: bytes
    address: int = DEFAULT_ADDRESS

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFFFFFF:
            raise ValueError(f"address {self.address:#x} out of 32-bit range")
        if len(self.payload) + 2 > MAX_LENGTH:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_LENGTH - 2}")

    def to_bytes(self) -> bytes:
        """The packet as sent on the wire."""
        head = HEADER + struct.pack(">IBH", self.address, self.pid, len(self.payload) + 2)
        return head + self.payload + struct.pack(">H", checksum(self.pid, self.payload))

    @classmethod
    def from_bytes(cls, data: bytes) -> Packet:
        """Decode exactly one packet; raise a :class:`ProtocolError` subclass otherwise."""
        reader = PacketReader()
        reader.feed(data)
        pkt = reader.next_packet()
        if pkt is Decoded.NEED_MORE:
            raise FrameLengthError(f"truncated packet ({len(data)} bytes)", data)
        if reader.discarded or reader.pending:
            raise ProtocolError("bytes around the packet", data)
        return pkt

    # Convenience constructors for the common kinds.
    @classmethod
    def command(cls, instruction: Instruction, params: bytes = b"",
                address: int = DEFAULT_ADDRESS) -> Packet:
        """A command packet."""
        return cls(PacketId.COMMAND, bytes([instruction]) + params, address)

    @classmethod
    def ack(cls, code: int, data: bytes = b"", address: int = DEFAULT_ADDRESS) -> Packet:
        """An acknowledge packet carrying a confirmation code and optional data."""
        return cls(PacketId.ACK, bytes([code]) + data, address)


class PacketReader:
    """Incremental decoder: feed bytes as they arrive, take packets out.

    Bytes before a header are skipped (line noise, the lone ``55`` after reset)
    and counted in :attr:`discarded`. A frame with a bad checksum is consumed and
    reported by raising :class:`ChecksumError`; an impossible length field drops
    the header and raises :class:`FrameLengthError`; in both cases the reader
    resynchronises on the next header, so it can be used again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.discarded = 0

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet forming a complete packet."""
        return len(self._buf)

    def wanted(self) -> int:
        """How many more bytes complete the packet being received (at least 1).

        Lets a blocking reader ask for exactly that many, so a 128-byte data
        packet costs one read call instead of 139.
        """
        buf = self._buf
        if len(buf) < PREFIX_LEN or buf[:2] != HEADER:
            return max(1, PREFIX_LEN - len(buf))
        length = int.from_bytes(buf[7:9], "big")
        if length < 2 or length > MAX_LENGTH:
            return 1
        return max(1, PREFIX_LEN + length - len(buf))

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def clear(self) -> None:
        """Forget buffered bytes (after a resynchronisation on the line)."""
        self.discarded += len(self._buf)
        self._buf.clear()

    def next_packet(self) -> Packet | Decoded:
        """The next complete packet, or ``Decoded.NEED_MORE``."""
        buf = self._buf
        start = buf.find(HEADER)
        if start < 0:
            # Keep a trailing EF: it may be the first half of a header.
            keep = 1 if buf[-1:] == HEADER[:1] else 0
            self.discarded += len(buf) - keep
            del buf[: len(buf) - keep]
            return Decoded.NEED_MORE
        if start:
            self.discarded += start
            del buf[:start]
        if len(buf) < PREFIX_LEN:
            return Decoded.NEED_MORE
        address, pid, length = struct.unpack_from(">IBH", buf, 2)
        if length < 2 or length > MAX_LENGTH or pid not in PacketId._value2member_map_:
            frame = bytes(buf[:PREFIX_LEN])
            del buf[:2]
            self.discarded += 2
            if pid not in PacketId._value2member_map_:
                raise UnexpectedPacketError(f"unknown packet id {pid:#04x}", frame)
            raise FrameLengthError(f"length field {length} outside 2..{MAX_LENGTH}", frame)
        total = PREFIX_LEN + length
        if len(buf) < total:
            return Decoded.NEED_MORE
        frame = bytes(buf[:total])
        del buf[:total]
        payload = frame[PREFIX_LEN:-2]
        received = int.from_bytes(frame[-2:], "big")
        expected = checksum(pid, payload)
        if received != expected:
            raise ChecksumError(frame, expected, received)
        return Packet(PacketId(pid), payload, address)


# --- acknowledge payloads -------------------------------------------------------


def confirmation_of(pkt: Packet) -> Confirmation:
    """The typed confirmation code of an acknowledge packet."""
    if pkt.pid is not PacketId.ACK:
        raise UnexpectedPacketError(f"expected an acknowledge, got {pkt.pid.name}", pkt.to_bytes())
    if not pkt.payload:
        raise FrameLengthError("acknowledge without confirmation code", pkt.to_bytes())
    code = pkt.payload[0]
    if code not in Confirmation._value2member_map_:
        raise UnknownConfirmationError(code, pkt.to_bytes())
    return Confirmation(code)


@dataclass(frozen=True)
class SystemParameters:
    """The 16 bytes ReadSysPara returns."""

    status_register: int
    system_id: int
    library_size: int
    security_level: int
    address: int
    packet_size_code: int  # 0-3
    baud_multiplier: int  # 1-12

    @property
    def packet_size(self) -> int:
        """Data packet size in bytes."""
        return DATA_PACKET_SIZES[self.packet_size_code]

    @property
    def baud(self) -> int:
        """UART speed in bits per second."""
        return BAUD_UNIT * self.baud_multiplier

    def to_bytes(self) -> bytes:
        """The 16-byte wire form."""
        return struct.pack(">HHHHIHH", self.status_register, self.system_id, self.library_size,
                           self.security_level, self.address, self.packet_size_code,
                           self.baud_multiplier)

    @classmethod
    def from_bytes(cls, data: bytes) -> SystemParameters:
        """Parse and range-check the wire form."""
        if len(data) != SYS_PARA_BYTES:
            raise FrameLengthError(f"system parameters are {len(data)} bytes, not 16", data)
        fields = struct.unpack(">HHHHIHH", data)
        params = cls(*fields)
        if params.packet_size_code > 3 or not 1 <= params.baud_multiplier <= 12:
            raise ProtocolError("system parameters out of range", data)
        return params


@dataclass(frozen=True)
class AuraLed:
    """An R503 LED ring setting: control, speed (0-255), colour, times (0 = forever)."""

    control: LedControl
    colour: LedColour
    speed: int = 0x80
    times: int = 0

    def to_params(self) -> bytes:
        """The four AuraLedConfig parameter bytes."""
        return bytes([self.control, self.speed & 0xFF, self.colour, self.times & 0xFF])

    @classmethod
    def from_params(cls, params: bytes) -> AuraLed:
        """Parse the four parameter bytes (range-checked)."""
        if len(params) != 4:
            raise FrameLengthError("AuraLedConfig takes 4 parameter bytes", params)
        try:
            return cls(LedControl(params[0]), LedColour(params[2]), params[1], params[3])
        except ValueError as exc:
            raise ProtocolError(f"bad AuraLedConfig parameters: {exc}", params) from exc


# --- data transfers -----------------------------------------------------------


def split_data(data: bytes, packet_size: int, address: int = DEFAULT_ADDRESS) -> list[Packet]:
    """Cut ``data`` into DATA packets of ``packet_size`` and one END_DATA packet."""
    if packet_size not in DATA_PACKET_SIZES:
        raise ValueError(f"packet size {packet_size} not one of {DATA_PACKET_SIZES}")
    if not data:
        raise ValueError("nothing to send")
    chunks = [data[i : i + packet_size] for i in range(0, len(data), packet_size)]
    pkts = [Packet(PacketId.DATA, c, address) for c in chunks[:-1]]
    pkts.append(Packet(PacketId.END_DATA, chunks[-1], address))
    return pkts


ImageBits = Literal[4, 8]
IMAGE_BYTES: dict[int, int] = {4: UART_IMAGE_BYTES, 8: IMAGE_WIDTH * IMAGE_HEIGHT}


def pack_image(image: NDArray[np.uint8], bits: ImageBits = 4) -> bytes:
    """Pack a 288 x 256 grey image for UpImage: 4 bits (UART; high nibble = left pixel)
    or 8 bits per pixel (the modules' USB interface)."""
    if image.shape != (IMAGE_HEIGHT, IMAGE_WIDTH) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 {IMAGE_HEIGHT}x{IMAGE_WIDTH}, got {image.shape}")
    if bits == 8:
        return image.tobytes()
    nib = image >> 4
    return ((nib[:, 0::2] << 4) | nib[:, 1::2]).astype(np.uint8).tobytes()


def unpack_image(data: bytes, bits: ImageBits = 4) -> NDArray[np.uint8]:
    """The UpImage data as 288 x 256 grey levels (4-bit samples x 17, so 0xF -> 255)."""
    expected = IMAGE_BYTES[bits]
    if len(data) != expected:
        raise FrameLengthError(f"image of {len(data)} bytes, expected {expected}", data[:64])
    if bits == 8:
        return np.frombuffer(data, dtype=np.uint8).reshape(IMAGE_HEIGHT, IMAGE_WIDTH).copy()
    packed = np.frombuffer(data, dtype=np.uint8).reshape(IMAGE_HEIGHT, IMAGE_WIDTH // 2)
    out = np.empty((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
    out[:, 0::2] = (packed >> 4) * 17
    out[:, 1::2] = (packed & 0x0F) * 17
    return out
