"""The slip ledger's rules: serials, states, and never two originals."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.station.ledger import Ledger, LedgerError, SlipKind, SlipState


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite", "s-0001", "kiosk-a")


def test_serials_are_per_kiosk_increasing_and_survive_reopen(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "l.sqlite", "s-0001", "kiosk-a")
    a = first.allocate(SlipKind.IDENTIFIED, voter=3)
    b = first.allocate(SlipKind.REFUSED, voter=3, state=SlipState.PENDING)
    first.close()
    again = Ledger(tmp_path / "l.sqlite", "s-0001", "kiosk-a")
    c = again.allocate(SlipKind.NOT_IDENTIFIED)
    assert [a.serial, b.serial, c.serial] == [
        "s-0001-kiosk-a-00001", "s-0001-kiosk-a-00002", "s-0001-kiosk-a-00003"]
    assert again.get(b.serial).state is SlipState.PENDING


def test_confirmed_original_then_reprint_is_duplicate(ledger: Ledger) -> None:
    rec = ledger.allocate(SlipKind.IDENTIFIED, voter=1)
    ledger.make_pending(rec.serial)
    assert ledger.begin_print(rec.serial) is False
    ledger.printed(rec.serial, duplicate=False)
    ledger.reprint_request(rec.serial)
    assert ledger.begin_print(rec.serial) is True
    ledger.printed(rec.serial, duplicate=True)
    final = ledger.get(rec.serial)
    assert (final.originals, final.duplicates, final.state) == (1, 1, SlipState.PRINTED)


def test_not_printed_may_retry_as_original(ledger: Ledger) -> None:
    rec = ledger.allocate(SlipKind.REFUSED, voter=1, state=SlipState.PENDING)
    assert ledger.begin_print(rec.serial) is False
    ledger.not_printed(rec.serial)
    assert ledger.get(rec.serial).state is SlipState.PENDING
    assert ledger.begin_print(rec.serial) is False


def test_uncertain_or_interrupted_print_only_ever_duplicates(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", "s", "k")
    rec = ledger.allocate(SlipKind.IDENTIFIED, voter=1)
    ledger.make_pending(rec.serial)
    ledger.begin_print(rec.serial)
    ledger.uncertain(rec.serial)
    assert ledger.get(rec.serial).state is SlipState.PENDING
    assert ledger.begin_print(rec.serial) is True
    # the process dies while sending: the restart sees 'sending'
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite", "s", "k")
    assert reopened.get(rec.serial).next_is_duplicate
    assert reopened.begin_print(rec.serial) is True
    reopened.printed(rec.serial, duplicate=True)
    assert reopened.get(rec.serial).originals == 0


def test_state_rules_are_enforced(ledger: Ledger) -> None:
    rec = ledger.allocate(SlipKind.IDENTIFIED, voter=1)
    with pytest.raises(LedgerError, match="allocated"):
        ledger.printed(rec.serial, duplicate=False)
    ledger.void(rec.serial)
    with pytest.raises(LedgerError):
        ledger.make_pending(rec.serial)
    with pytest.raises(LedgerError, match="no slip"):
        ledger.get("nope")
    assert ledger.count(SlipKind.IDENTIFIED) == 0
