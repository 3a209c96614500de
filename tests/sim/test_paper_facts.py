"""The day's cross-checks read the paper the way the durability rules define it."""

from __future__ import annotations

from collections import Counter

from hardware_sim.rig import DayFacts, disagreements, read_paper


def _slip(title: str, serial: str, duplicate: bool = False) -> str:
    banner = "ДУБЛИКАТ\nDUPLICATE\n" if duplicate else ""
    return f"{banner}БШК / ЦИК КР\n{title}\nЧек №: {serial}\n"


REFUSED = "УЖЕ ИДЕНТИФИЦИРОВАН"
IDENTIFIED = "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА"


def _facts(texts: list[str], refused: int, identified_serials: set[str]) -> DayFacts:
    paper, originals, copies = read_paper(texts)
    return DayFacts(
        methods=Counter({"identify": len(identified_serials)}),
        ledger=Counter({"refused": refused}),
        paper=paper,
        audit=Counter({"voter-identified": len(identified_serials), "voter-refused": refused}),
        mark_serials=frozenset(identified_serials),
        originals=originals,
        copies=copies,
    )


def test_a_slip_cut_mid_print_and_reprinted_as_duplicate_counts_once() -> None:
    # s-2's original never came out whole (power cut); the recovered agent printed
    # it marked DUPLICATE. s-3 came out whole and was reprinted as DUPLICATE too.
    texts = [_slip(REFUSED, "s-1"), _slip(REFUSED, "s-2", duplicate=True),
             _slip(REFUSED, "s-3"), _slip(REFUSED, "s-3", duplicate=True),
             _slip(IDENTIFIED, "s-4")]
    facts = _facts(texts, refused=3, identified_serials={"s-4"})
    assert facts.paper["refused"] == 3
    assert disagreements(facts, None, "kiosk") == []


def test_two_originals_of_any_slip_kind_are_reported() -> None:
    texts = [_slip(REFUSED, "s-1"), _slip(REFUSED, "s-1")]
    problems = disagreements(_facts(texts, refused=1, identified_serials=set()), None, "kiosk")
    assert problems == ["slips printed twice as ORIGINAL: ['s-1']"]


def test_a_slip_missing_from_paper_is_reported() -> None:
    texts = [_slip(REFUSED, "s-1")]
    problems = disagreements(_facts(texts, refused=2, identified_serials=set()), None, "kiosk")
    assert len(problems) == 1 and problems[0].startswith("roll store")
