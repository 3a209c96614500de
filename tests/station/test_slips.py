"""Slips and reports: bilingual content, Kyrgyz letters intact, facts present."""

from __future__ import annotations

import datetime as dt

from agent.station.slips import (
    Place,
    ReportFacts,
    VoterLine,
    closing_report,
    identified_slip,
    not_identified_slip,
    refused_slip,
    zero_report,
)

AT = dt.datetime(2026, 11, 27, 10, 15, tzinfo=dt.UTC)
VOTER = VoterLine(17, "Үсөнбаева Жаңыл", "Усенбаева Жаныл")


def test_identified_slip_names_voter_serial_and_method_in_both_languages() -> None:
    doc = identified_slip(serial="s-1-k-00017", place=Place("s-1", "k"), voter=VOTER,
                          method="identify", at=AT)
    text = doc.plain_text()
    for needle in ("ИДЕНТИФИКАЦИЯДАН ӨТТҮ", "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА", "Үсөнбаева Жаңыл",
                   "Усенбаева Жаныл", "№ в списке: 17", "s-1-k-00017", "отпечаток пальца"):
        assert needle in text
    assert not doc.duplicate
    assert identified_slip(serial="x", place=Place("s", "k"), voter=VOTER,
                           method="verify", at=AT, duplicate=True).duplicate


def test_refusal_and_not_identified_send_voter_to_commission() -> None:
    refused = refused_slip(serial="r", place=Place("s", "k"), voter=VOTER, first_at=AT,
                           first_kiosk="kiosk-b", at=AT).plain_text()
    assert "УЖЕ ИДЕНТИФИЦИРОВАН" in refused and "kiosk-b" in refused
    assert "Комиссияга кайрылыңыз" in refused
    unknown = not_identified_slip(serial="u", place=Place("s", "k"), attempts=3,
                                  at=AT).plain_text()
    assert "НЕ ИДЕНТИФИЦИРОВАН" in unknown and "Попыток: 3" in unknown
    assert "Жаңыл" not in unknown  # an unknown person's slip names no voter


def test_reports_carry_counts_hashes_and_conflicts() -> None:
    facts = ReportFacts(station_id="s-1", district="osh", kiosk="k", software_version="0.1.0",
                        roll_hash="ab" * 32, roll_voters=40, audit_head="cd" * 32, at=AT,
                        counts={"identified": 0}, peers=("k2",), merged_voters=5,
                        conflicts=("№4: k/1, k2/9",), revoked=("k3 (№ > 2): №7/s-1-k3-00002",))
    zero = zero_report(serial="z", facts=facts).plain_text()
    assert "НУЛЕВОЙ ОТЧЕТ" in zero and "abababababababab" in zero
    closing = closing_report(serial="c", facts=facts).plain_text()
    assert "ИТОГОВЫЙ ОТЧЕТ" in closing and "КОНФЛИКТ: №4" in closing and "k2" in closing
    assert "ОТОЗВАН: k3 (№ > 2): №7/s-1-k3-00002" in closing  # a revoked kiosk's marks
