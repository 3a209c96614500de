"""Document readers: the pure assembler, a serial reader over a real pty, keyboard wedges."""

from __future__ import annotations

import io
import os
import random
import struct
import threading
from collections.abc import Iterator, Sequence

import pytest

from agent.drivers.docreader.reader import (
    EvdevDecoder,
    EvdevDocumentReader,
    KeyboardDocumentReader,
    MrzAssembler,
    MrzRead,
    MrzRejected,
    ReaderStatus,
    ReadOutcome,
    SerialDocumentReader,
)
from agent.drivers.transport import TransportUnavailableError
from hardware_sim.docreader_sim import (
    SCENARIOS,
    DocReaderSimulator,
    Framing,
    corrupt,
    encode,
    run_scenario,
    synthetic_document,
)

DOC1 = synthetic_document(1)
DOC2 = synthetic_document(2)
PASSPORT = synthetic_document(3, "td3")


def numbers(outcomes: Sequence[ReadOutcome]) -> list[str]:
    return [o.mrz.document_number if isinstance(o, MrzRead) else o.problem for o in outcomes]


# ------------------------------------------------------------------ assembler


@pytest.mark.parametrize("framing", ["cr", "lf", "crlf", "stx-etx", "one-line"])
def test_framings_byte_at_a_time(framing: Framing) -> None:
    a = MrzAssembler()
    out = []
    for b in encode(DOC1, framing) + encode(PASSPORT, framing):
        out += a.feed(chr(b))
    out += a.flush()
    assert numbers(out) == ["ID0000001", "AC0000003"]
    assert isinstance(out[1], MrzRead) and out[1].format == "td3"


def test_garbage_between_documents_is_dropped_quietly() -> None:
    a = MrzAssembler()
    text = "\x00\xff@@noise\r" + "\r".join(DOC1) + "\r" + "SHORT<<LINE\r" + "\n".join(DOC2)
    out = a.feed(text + "\n") + a.flush()
    assert numbers(out) == ["ID0000001", "ID0000002"]
    assert a.garbage_lines == 2


def test_partial_document_does_not_shift_the_next() -> None:
    a = MrzAssembler()
    out = a.feed("\r".join(DOC1[:2]) + "\r")  # line 3 lost
    out += a.feed("\r".join(DOC2) + "\r")
    assert numbers(out) == ["line3.missing", "ID0000002"]
    # First line lost: lines 2 and 3 are orphans, reported once; the next document is intact.
    out = a.feed("\r".join(DOC1[1:]) + "\r" + "\r".join(DOC2) + "\r")
    assert numbers(out) == ["line1.missing", "ID0000002"]


def test_misread_digit_is_rejected_with_its_field() -> None:
    bad = corrupt(DOC1, random.Random(4))
    out = MrzAssembler().feed("\r".join(bad) + "\r")
    assert len(out) == 1 and isinstance(out[0], MrzRejected)
    assert out[0].format == "td1" and out[0].problem.endswith(".check")


def test_flush_reports_incomplete_and_takes_an_unterminated_last_line() -> None:
    a = MrzAssembler()
    assert a.feed("\r".join(PASSPORT)) == []  # last line not terminated yet
    assert a.pending
    assert numbers(a.flush()) == ["AC0000003"]
    assert a.feed(PASSPORT[0] + "\r") == []
    assert numbers(a.flush()) == ["line2.missing"]
    assert not a.pending and a.flush() == []


def test_endless_line_is_bounded() -> None:
    a = MrzAssembler()
    assert a.feed("A" * 10_000) == []
    assert not a.pending and a.garbage_lines == 1


# --------------------------------------------------------------- serial + pty


@pytest.fixture
def sim() -> Iterator[DocReaderSimulator]:
    with DocReaderSimulator() as s:
        yield s


def collect(reader: SerialDocumentReader, n: int, timeout: float = 5.0) -> list[ReadOutcome]:
    out: list[ReadOutcome] = []
    while len(out) < n:
        outcome = reader.read(timeout)
        if outcome is None:
            break
        out.append(outcome)
    return out


@pytest.mark.parametrize("name", ["normal", "crlf", "stx-etx", "one-line", "noisy", "slow"])
def test_serial_reader_over_pty(sim: DocReaderSimulator, name: str) -> None:
    reader = SerialDocumentReader.open(sim.path)
    try:
        sent = run_scenario(sim, SCENARIOS[name], 3, 0.0, seed=7)
        got = collect(reader, 3)
        assert [o.mrz.lines for o in got if isinstance(o, MrzRead)] == sent
    finally:
        reader.close()


def test_serial_faults_are_values(sim: DocReaderSimulator) -> None:
    reader = SerialDocumentReader.open(sim.path, idle_flush_s=0.1)
    try:
        run_scenario(sim, SCENARIOS["partial"], 3, 0.0, seed=1)
        got = collect(reader, 3)
        assert numbers(got)[:2] == ["ID0000001", "ID0000002"]
        assert isinstance(got[2], MrzRejected) and got[2].problem.endswith(".missing")
        assert reader.read(0.2) is None  # nothing more, no spurious outcomes
    finally:
        reader.close()


def test_unplug_raises_and_replug_works(sim: DocReaderSimulator) -> None:
    reader = SerialDocumentReader.open(sim.path)
    sim.present(DOC1)
    assert numbers(collect(reader, 1)) == ["ID0000001"]
    sim.unplug()
    with pytest.raises(TransportUnavailableError):
        reader.read(1.0)
    assert reader.status is ReaderStatus.UNPLUGGED
    reader.close()
    with pytest.raises(TransportUnavailableError):
        SerialDocumentReader.open(sim.path)
    sim.replug()
    reader = SerialDocumentReader.open(sim.path)
    try:
        sim.present(DOC2)
        assert numbers(collect(reader, 1)) == ["ID0000002"]
    finally:
        reader.close()


# ------------------------------------------------------------------ keyboard


def test_keyboard_reader_on_a_pipe() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "r") as rf, os.fdopen(w, "w") as wf:

        def typist() -> None:
            wf.write("\n".join(DOC1).lower() + "\n")  # Caps Lock on
            wf.write(DOC2[0] + "\n")  # a document pulled away half-way
            wf.write("\n".join(PASSPORT) + "\n")
            wf.close()

        t = threading.Thread(target=typist)
        t.start()
        got = list(KeyboardDocumentReader(rf))
        t.join()
    assert numbers(got) == ["ID0000001", "line2.missing", "AC0000003"]


def test_keyboard_reader_reports_incomplete_at_end() -> None:
    got = list(KeyboardDocumentReader(io.StringIO(DOC1[0] + "\n" + DOC1[1] + "\n")))
    assert numbers(got) == ["line3.missing"]


_EV = struct.Struct("@llHHi")
_CODES = {**{c: 30 + i for i, c in enumerate("ASDFGHJKL")},
          **{c: 16 + i for i, c in enumerate("QWERTYUIOP")},
          **{c: 44 + i for i, c in enumerate("ZXCVBNM")},
          **{d: 2 + i for i, d in enumerate("1234567890")}}  # fmt: skip


def type_events(text: str) -> bytes:
    """What the kernel delivers when a US-layout wedge types ``text``."""
    out = bytearray()

    def key(code: int, value: int) -> None:
        out.extend(_EV.pack(0, 0, 1, code, value))
        out.extend(_EV.pack(0, 0, 0, 0, 0))  # EV_SYN

    for c in text:
        if c == "\n":
            presses = [(28, 1), (28, 0)]
        elif c == "<":
            presses = [(42, 1), (51, 1), (51, 0), (42, 0)]
        elif c.isalpha():
            presses = [(42, 1), (_CODES[c], 1), (_CODES[c], 0), (42, 0)]
        else:
            presses = [(_CODES[c], 1), (_CODES[c], 0)]
        for code, value in presses:
            key(code, value)
    return bytes(out)


def test_evdev_decoder_any_chunking() -> None:
    data = type_events("\n".join(DOC1) + "\n")
    dec = EvdevDecoder()
    text = "".join(dec.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert text == "\n".join(DOC1) + "\n"
    caps = EvdevDecoder()
    toggle = _EV.pack(0, 0, 1, 58, 1) + _EV.pack(0, 0, 1, 58, 0)
    assert caps.feed(toggle + _EV.pack(0, 0, 1, 30, 1) + _EV.pack(0, 0, 1, 99, 1)) == "A?"


def test_evdev_reader_over_a_pipe() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as rf:
        with os.fdopen(w, "wb") as wf:
            wf.write(type_events("\n".join(PASSPORT) + "\n" + "\n".join(DOC2) + "\n"))
        got = []
        reader = EvdevDocumentReader(rf)
        while (o := reader.read()) is not None:
            got.append(o)
    assert numbers(got) == ["AC0000003", "ID0000002"]


def test_outcomes_fit_the_audit_catalogue() -> None:
    """What the station logs about a read (format, failing field) passes the catalogue."""
    from agent.audit.events import CATALOGUE, EventId

    ok = MrzAssembler().feed("\r".join(PASSPORT) + "\r")[0]
    assert isinstance(ok, MrzRead)
    CATALOGUE.validate(EventId.DOCUMENT_READ, {"mrz_format": ok.format})
    misread = MrzAssembler().feed("\r".join(corrupt(DOC1, random.Random(1))) + "\r")
    partial = MrzAssembler()
    rejected = misread + partial.feed(DOC1[0] + "\r") + partial.flush()
    assert len(rejected) == 2
    for r in rejected:
        assert isinstance(r, MrzRejected)
        CATALOGUE.validate(
            EventId.DOCUMENT_READ_FAILED, {"mrz_format": r.format, "mrz_problem": r.problem}
        )
