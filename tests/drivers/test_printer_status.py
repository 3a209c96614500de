"""DLE EOT status bytes -> PrinterStatus: byte vectors, vendor layouts, corrupt replies."""

from __future__ import annotations

import itertools

import pytest

from agent.drivers.printer.errors import StatusReplyError
from agent.drivers.printer.profiles import CITIZEN_STATUS, EPSON_STATUS
from agent.drivers.printer.status import PrinterState, decode_status, encode_status


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("12 12 12 12", PrinterState.READY),
        ("12 12 12 1e", PrinterState.PAPER_NEAR_END),  # n=4 bits 2-3
        ("1a 32 12 7e", PrinterState.PAPER_OUT),  # offline, stopped by paper end
        ("12 12 12 72", PrinterState.PAPER_OUT),  # paper-end sensor alone
        ("1a 16 12 12", PrinterState.COVER_OPEN),
        ("1a 36 12 7e", PrinterState.COVER_OPEN),  # cover open wins over paper end
        ("1a 1a 12 12", PrinterState.OFFLINE),  # feed button held
        ("1a 12 12 12", PrinterState.OFFLINE),
        ("1a 52 1a 12", PrinterState.ERROR),  # auto-cutter error
        ("1a 52 32 12", PrinterState.ERROR),  # unrecoverable
        ("1a 12 52 12", PrinterState.ERROR),  # auto-recoverable (head overheat)
        ("1a 52 12 12", PrinterState.ERROR),  # summary bit only
    ],
)
def test_epson_vectors(raw: str, state: PrinterState) -> None:
    status = decode_status(bytes.fromhex(raw), EPSON_STATUS)
    assert status.state is state
    assert status.flags is not None and status.flags.raw == bytes.fromhex(raw)
    assert status.printable is (state in (PrinterState.READY, PrinterState.PAPER_NEAR_END))


def test_flags_carry_the_raw_conditions() -> None:
    flags = decode_status(bytes.fromhex("1a 36 1a 7e"), EPSON_STATUS).flags
    assert flags is not None
    assert flags.offline and flags.cover_open and flags.paper_stop and flags.cutter_error
    assert flags.paper_near_end and flags.paper_end
    assert not flags.unrecoverable_error and not flags.feed_button


def test_citizen_mechanism_error_is_in_the_profile_not_in_code() -> None:
    raw = bytes.fromhex("12 12 16 12")  # n=3 bit 2
    assert decode_status(raw, EPSON_STATUS).state is PrinterState.READY
    citizen = decode_status(raw, CITIZEN_STATUS)
    assert citizen.state is PrinterState.ERROR and "mechanism" in citizen.detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("00 00 00 00", "byte 1"),  # USB printers that answer zeros
        ("12 12 12", "expected 4 bytes"),
        ("12 12 12 12 12", "expected 4 bytes"),
        ("12 13 12 12", "byte 2"),  # bit 0 set
        ("12 12 92 12", "byte 3"),  # bit 7 set
        ("12 12 12 02", "byte 4"),  # bit 4 clear: a GS r reply, not DLE EOT
    ],
)
def test_corrupt_replies_raise(raw: str, reason: str) -> None:
    with pytest.raises(StatusReplyError, match=reason) as info:
        decode_status(bytes.fromhex(raw), EPSON_STATUS)
    assert info.value.raw == bytes.fromhex(raw)


@pytest.mark.parametrize("layout", [EPSON_STATUS, CITIZEN_STATUS])
def test_encode_decode_round_trip(layout: object) -> None:
    assert layout is EPSON_STATUS or layout is CITIZEN_STATUS
    for offline, cover, near, end in itertools.product((False, True), repeat=4):
        raw = encode_status(layout, offline=offline, cover_open=cover,
                            paper_near_end=near, paper_end=end)
        st = decode_status(raw, layout)
        if cover:
            expected = PrinterState.COVER_OPEN
        elif end:
            expected = PrinterState.PAPER_OUT
        elif offline:
            expected = PrinterState.OFFLINE
        elif near:
            expected = PrinterState.PAPER_NEAR_END
        else:
            expected = PrinterState.READY
        assert st.state is expected, (offline, cover, near, end, raw.hex())
    assert decode_status(encode_status(layout, cutter_error=True), layout).state is (
        PrinterState.ERROR
    )
