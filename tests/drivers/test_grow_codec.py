"""Byte-vector tests of the Grow packet codec (no I/O)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.drivers.sensor.grow_codec import (
    DATA_PACKET_SIZES,
    MAX_LENGTH,
    UART_IMAGE_BYTES,
    AuraLed,
    Confirmation,
    Decoded,
    Instruction,
    LedColour,
    LedControl,
    Packet,
    PacketId,
    PacketReader,
    SystemParameters,
    checksum,
    confirmation_of,
    pack_image,
    split_data,
    unpack_image,
)
from agent.drivers.sensor.types import (
    ChecksumError,
    FrameLengthError,
    ProtocolError,
    SensorState,
    SensorStatus,
    UnexpectedPacketError,
    UnknownConfirmationError,
    map_status,
)

# Frames as printed in the R30x / R503 manuals.
GEN_IMG = bytes.fromhex("EF01FFFFFFFF010003010005")
VFY_PWD_0 = bytes.fromhex("EF01FFFFFFFF0100071300000000001B")
READ_SYS_PARA = bytes.fromhex("EF01FFFFFFFF0100030F0013")
ACK_OK = bytes.fromhex("EF01FFFFFFFF07000300000A")
ACK_NO_FINGER = bytes.fromhex("EF01FFFFFFFF07000302000C")


def drain(reader: PacketReader) -> list[Packet]:
    out: list[Packet] = []
    while isinstance(pkt := reader.next_packet(), Packet):
        out.append(pkt)
    return out


@pytest.mark.parametrize(
    ("frame", "packet"),
    [
        (GEN_IMG, Packet.command(Instruction.GEN_IMG)),
        (VFY_PWD_0, Packet.command(Instruction.VFY_PWD, b"\0\0\0\0")),
        (READ_SYS_PARA, Packet.command(Instruction.READ_SYS_PARA)),
        (ACK_OK, Packet.ack(Confirmation.OK)),
        (ACK_NO_FINGER, Packet.ack(Confirmation.NO_FINGER)),
    ],
)
def test_known_frames(frame: bytes, packet: Packet) -> None:
    assert packet.to_bytes() == frame
    assert Packet.from_bytes(frame) == packet


def test_address_is_big_endian() -> None:
    frame = Packet.command(Instruction.GEN_IMG, address=0x12345678).to_bytes()
    assert frame[2:6] == bytes.fromhex("12345678")
    assert Packet.from_bytes(frame).address == 0x12345678


def test_largest_checksum_vector() -> None:
    payload = b"\xff" * 256
    # 2 (id) + 0x01 + 0x02 (length 258) + 256 * 255 = 0xFF05
    frame = Packet(PacketId.DATA, payload).to_bytes()
    assert frame[-2:] == b"\xff\x05"
    assert Packet.from_bytes(frame).payload == payload


def test_checksum_is_masked_to_16_bits() -> None:
    # Legal packets stay below 0x10000; the sum itself must still wrap, not grow.
    payload = b"\xff" * 300
    assert checksum(PacketId.DATA, payload) == (2 + 0x01 + 0x2E + 300 * 255) & 0xFFFF
    assert checksum(PacketId.DATA, payload) < 0x10000


@given(
    pid=st.sampled_from(list(PacketId)),
    payload=st.binary(min_size=0, max_size=MAX_LENGTH - 2),
    address=st.integers(0, 0xFFFFFFFF),
)
def test_round_trip(pid: PacketId, payload: bytes, address: int) -> None:
    pkt = Packet(pid, payload, address)
    assert Packet.from_bytes(pkt.to_bytes()) == pkt


@given(payloads=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6))
def test_byte_at_a_time_delivery(payloads: list[bytes]) -> None:
    pkts = [Packet(PacketId.DATA, p) for p in payloads]
    stream = b"".join(p.to_bytes() for p in pkts)
    reader = PacketReader()
    got: list[Packet] = []
    for i in range(len(stream)):
        assert reader.wanted() >= 1
        reader.feed(stream[i : i + 1])
        got.extend(drain(reader))
    assert got == pkts
    assert reader.pending == 0 and reader.discarded == 0


def test_wanted_asks_for_exactly_the_rest_of_a_packet() -> None:
    frame = Packet(PacketId.DATA, bytes(128)).to_bytes()
    reader = PacketReader()
    assert reader.wanted() == 9
    reader.feed(frame[:9])
    assert reader.wanted() == len(frame) - 9
    reader.feed(frame[9:])
    assert reader.pending == len(frame)
    assert isinstance(reader.next_packet(), Packet)
    assert reader.wanted() == 9


def test_garbage_before_and_between_packets_is_skipped_and_counted() -> None:
    noise = b"\x55\x00\xef\x13\xff"  # includes the ready byte and a lone EF
    reader = PacketReader()
    reader.feed(noise + ACK_OK + b"\x01\x02" + ACK_NO_FINGER)
    got = drain(reader)
    assert [confirmation_of(p) for p in got] == [Confirmation.OK, Confirmation.NO_FINGER]
    assert reader.discarded == len(noise) + 2


@given(noise=st.binary(max_size=64).filter(lambda b: 0xEF not in b),
       payload=st.binary(min_size=1, max_size=32))
def test_any_noise_before_a_packet_is_skipped(noise: bytes, payload: bytes) -> None:
    pkt = Packet(PacketId.ACK, payload)
    reader = PacketReader()
    reader.feed(noise + pkt.to_bytes())
    assert drain(reader) == [pkt]
    assert reader.discarded == len(noise)


@given(stream=st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_protocol_errors(stream: bytes) -> None:
    reader = PacketReader()
    reader.feed(stream)
    for _ in range(len(stream) + 1):  # every step consumes bytes, so this bound suffices
        try:
            if reader.next_packet() is Decoded.NEED_MORE:
                break
        except ProtocolError:
            continue
    else:
        raise AssertionError("reader made no progress")
    assert reader.pending <= 9 + MAX_LENGTH  # never more than one partial frame held


def test_trailing_header_half_is_kept() -> None:
    reader = PacketReader()
    reader.feed(b"\x00\x00\xef")
    assert reader.next_packet() is Decoded.NEED_MORE
    reader.feed(ACK_OK[1:])
    assert drain(reader) == [Packet.ack(Confirmation.OK)]


def test_bad_checksum_raises_and_reader_recovers() -> None:
    bad = bytearray(ACK_OK)
    bad[-1] ^= 0x01
    reader = PacketReader()
    reader.feed(bytes(bad) + ACK_NO_FINGER)
    with pytest.raises(ChecksumError) as info:
        reader.next_packet()
    assert info.value.frame == bytes(bad)
    assert info.value.expected == 0x000A and info.value.received == 0x000B
    assert drain(reader) == [Packet.ack(Confirmation.NO_FINGER)]


def test_oversize_length_raises_and_reader_resyncs() -> None:
    oversize = bytes.fromhex("EF01FFFFFFFF02") + (MAX_LENGTH + 1).to_bytes(2, "big")
    reader = PacketReader()
    reader.feed(oversize + ACK_OK)
    with pytest.raises(FrameLengthError):
        reader.next_packet()
    assert drain(reader) == [Packet.ack(Confirmation.OK)]


def test_length_below_checksum_size_is_refused() -> None:
    with pytest.raises(FrameLengthError):
        Packet.from_bytes(bytes.fromhex("EF01FFFFFFFF0700010008"))


def test_unknown_packet_id_is_refused() -> None:
    with pytest.raises(UnexpectedPacketError):
        Packet.from_bytes(bytes.fromhex("EF01FFFFFFFF05000300000A"))


def test_truncated_and_padded_frames_are_refused() -> None:
    with pytest.raises(FrameLengthError):
        Packet.from_bytes(ACK_OK[:-1])
    with pytest.raises(ProtocolError):
        Packet.from_bytes(ACK_OK + b"\x00")


def test_oversize_payload_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        Packet(PacketId.DATA, bytes(257))


def test_confirmation_codes_are_typed() -> None:
    assert confirmation_of(Packet.ack(0x13)) is Confirmation.WRONG_PASSWORD
    with pytest.raises(UnknownConfirmationError) as info:
        confirmation_of(Packet.ack(0xC7))
    assert info.value.code == 0xC7
    with pytest.raises(UnexpectedPacketError):
        confirmation_of(Packet(PacketId.DATA, b"\x00"))
    with pytest.raises(FrameLengthError):
        confirmation_of(Packet(PacketId.ACK, b""))


@pytest.mark.parametrize("size", DATA_PACKET_SIZES)
def test_image_split_in_every_packet_size(size: int) -> None:
    data = bytes(range(256)) * (UART_IMAGE_BYTES // 256)
    pkts = split_data(data, size)
    assert len(pkts) == UART_IMAGE_BYTES // size
    assert all(p.pid is PacketId.DATA for p in pkts[:-1])
    assert pkts[-1].pid is PacketId.END_DATA
    assert all(len(p.payload) == size for p in pkts)
    assert b"".join(p.payload for p in pkts) == data


@pytest.mark.parametrize("size", DATA_PACKET_SIZES)
def test_last_partial_chunk_is_kept(size: int) -> None:
    data = bytes(i % 251 for i in range(1000))
    pkts = split_data(data, size)
    assert pkts[-1].pid is PacketId.END_DATA
    assert len(pkts[-1].payload) == (1000 % size or size)
    stream = b"".join(p.to_bytes() for p in pkts)
    reader = PacketReader()
    reader.feed(stream)
    assert b"".join(p.payload for p in drain(reader)) == data


def test_split_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError):
        split_data(b"x", 100)
    with pytest.raises(ValueError):
        split_data(b"", 128)


def test_uart_image_is_high_nibble_first() -> None:
    img = np.full((288, 256), 255, dtype=np.uint8)
    img[0, 0], img[0, 1] = 0x12, 0xA9  # nibbles 1 and A
    packed = pack_image(img)
    assert len(packed) == UART_IMAGE_BYTES
    assert packed[0] == 0x1A and packed[1] == 0xFF
    out = unpack_image(packed)
    assert out.shape == (288, 256) and out.dtype == np.uint8
    assert out[0, 0] == 0x11 and out[0, 1] == 0xAA and out[0, 2] == 255


def test_image_quantisation_round_trip() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(288, 256), dtype=np.uint8)
    assert np.array_equal(unpack_image(pack_image(img)), (img >> 4) * 17)
    with pytest.raises(FrameLengthError):
        unpack_image(pack_image(img)[:-1])
    with pytest.raises(ValueError):
        pack_image(img[:, :200])


def test_eight_bit_images_are_sent_as_is() -> None:
    img = np.arange(288 * 256, dtype=np.uint32).reshape(288, 256).astype(np.uint8)
    data = pack_image(img, 8)
    assert len(data) == 73728 and data[:3] == b"\x00\x01\x02"
    assert np.array_equal(unpack_image(data, 8), img)
    with pytest.raises(FrameLengthError):
        unpack_image(data, 4)


def test_system_parameters_vector() -> None:
    raw = bytes.fromhex("0004 0009 00C8 0003 FFFFFFFF 0002 0006".replace(" ", ""))
    sp = SystemParameters.from_bytes(raw)
    assert sp.status_register == 4 and sp.library_size == 200 and sp.security_level == 3
    assert sp.packet_size == 128 and sp.baud == 57600
    assert sp.to_bytes() == raw
    with pytest.raises(ProtocolError):
        SystemParameters.from_bytes(raw[:-2] + b"\x00\x0d")  # baud multiplier 13
    with pytest.raises(FrameLengthError):
        SystemParameters.from_bytes(raw[:-1])


def test_aura_led_parameters() -> None:
    led = AuraLed(LedControl.FLASHING, LedColour.YELLOW, speed=0x30, times=3)
    assert led.to_params() == bytes([2, 0x30, 5, 3])
    assert AuraLed.from_params(led.to_params()) == led
    with pytest.raises(ProtocolError):
        AuraLed.from_params(bytes([9, 0, 1, 0]))
    with pytest.raises(FrameLengthError):
        AuraLed.from_params(b"\x01")


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((0, 0), {}, SensorStatus(SensorState.READY, 0)),
        ((0, 0x0001), {}, SensorStatus(SensorState.BUSY, 0, "module busy")),
        ((None,), {}, SensorStatus(SensorState.DISCONNECTED, None, "no reply")),
    ],
)
def test_map_status_table(args: tuple[int | None, ...], kwargs: dict[str, object],
                          expected: SensorStatus) -> None:
    assert map_status(*args) == expected  # type: ignore[arg-type]


def test_map_status_faults() -> None:
    from agent.drivers.sensor.types import SensorBusyError, SensorDisconnected

    assert map_status(0x1A).state is SensorState.FAULT
    assert map_status(0x1A).last_code == 0x1A
    assert map_status(None, fault=SensorDisconnected("gone")).state is SensorState.DISCONNECTED
    assert map_status(None, fault=SensorBusyError("held")).state is SensorState.BUSY
    assert map_status(0, fault=ChecksumError(b"", 1, 2)).state is SensorState.FAULT
