"""Chosen and rejected responses (grounded answers, refusals, fabrications, wrong answers) and the
preference pairs made from them, on hand-made cases and on the demo knowledge base."""

from __future__ import annotations

import random
import re

import pytest

from data_builders import responses, synthesis
from data_builders.answer_types import answer_type, contains_answer, normalize_answer
from data_builders.records import (EVASIVE_QUOTE, FABRICATION_EXTERNAL, FABRICATION_NEAR_MISS, FABRICATION_ON_POLICY, GROUNDED,
                                   IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG, NEEDLESS_REFUSAL,
                                   OOK_REFUSAL_VS_FABRICATION, REFUSAL, WRONG_ANSWER, Case)
from halluguard.config import NegativesConfig
from halluguard.kb import Passage


@pytest.fixture(scope="module")
def demo(demo_kb):
    passages, questions = demo_kb
    by_id = {p.id: p for p in passages}
    ik = [q for q in questions if q.label == "ik"]
    ook = [q for q in questions if q.label == "ook"]
    return passages, ik, ook, by_id


def ik_case(q, by_id) -> Case:
    return Case(q.id, q.question, "ik", "in_knowledge", [by_id[q.passage_id]], answers=list(q.answers),
                source_question_id=q.id, group=by_id[q.passage_id].group)


def neighbours_of(passage_id: str, passages, n: int = 4):
    i = next(j for j, p in enumerate(passages) if p.id == passage_id)
    return passages[max(0, i - n):i] + passages[i + 1:i + 1 + n]


def words(text: str) -> int:
    return len(text.split())


def numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)*", text))


PLANS = [
    Passage("s1", "The Orbit plan costs €25 per month and includes 40 GB of data.", "Orbit plan", "plans"),
    Passage("s2", "The Comet plan costs €15 per month and includes 10 GB of data. It has no contract.",
            "Comet plan", "plans"),
    Passage("s3", "Refunds are paid within 14 days to the original card.", "Refunds", "refunds"),
]


# ---------------------------------------------------------------- expected type

@pytest.mark.parametrize("question, expected", [
    ("How much does the Verra Fold 3 cost?", "money"),
    ("What is the fee for a paper bill?", "money"),
    ("How long does a refund take?", "duration"),
    ("How many days do I have to return a phone?", "duration"),
    ("What time does the shop open?", "time"),
    ("When was the company founded?", "date"),
    ("How many shops are there?", "number"),
    ("Who runs the credit checks?", "entity"),
    ("What is the customer care phone number?", "phone"),
    ("What discount do students get?", "percent"),
    ("Why is the sky blue?", "other"),
])
def test_expected_type_from_the_question_wording(question, expected):
    assert responses.expected_type(question, []) == expected


def test_expected_type_prefers_the_gold_answer():
    assert responses.expected_type("When do bills come out?", ["3rd"]) == "date"
    assert responses.expected_type("How much data do I get?", ["60 GB"]) == "number"


# ---------------------------------------------------------------- grounded answers

def test_grounded_answers_contain_the_gold_answer_verbatim(demo):
    passages, ik, _, by_id = demo
    rng = random.Random(0)
    styles = set()
    for q in ik:
        case = ik_case(q, by_id)
        text = responses.grounded_answer(case, rng)
        assert any(a in text for a in q.answers), (q.id, text)
        assert words(text) < 60, text
        styles.add(text.split()[0])
    assert len(styles) > 20  # several styles, not one template


def test_grounded_answer_uses_the_supporting_sentence():
    case = Case("c", "How much does the Comet plan cost?", "ik", "in_knowledge", PLANS, answers=["€15"])
    for seed in range(10):
        text = responses.grounded_answer(case, random.Random(seed))
        assert "The Comet plan costs €15 per month" in text or "the Comet plan costs €15 per month" in text
        assert "It has no contract" not in text
    with pytest.raises(ValueError):
        responses.grounded_answer(Case("c", "?", "ik", "in_knowledge", PLANS), random.Random(0))


# ---------------------------------------------------------------- refusals

def test_refusals_are_varied_and_state_no_facts(demo):
    passages, ik, _, by_id = demo
    rng = random.Random(1)
    seen = []
    for q in ik[:30]:
        case = ik_case(q, by_id)
        for text in responses.refusal(case, rng, n=1):
            seen.append(text)
            assert words(text) < 60, text
            # No number from the evidence, unless it is part of a title or the question itself.
            allowed = numbers(" ".join(p.title for p in case.evidence)) | numbers(case.question)
            leaked = numbers(text) - allowed
            assert not leaked & numbers(case.evidence[0].text), (text, leaked)
            titles = " ".join(p.title for p in case.evidence)
            assert not any(a in text for a in q.answers if len(a) > 2 and a not in titles), text
    assert len(set(seen)) >= 10
    # Enough families that their openings vary too.
    assert len({" ".join(t.split()[:3]) for t in seen}) >= 8


def test_refusal_n_distinct_and_mentions_evidence_titles():
    case = Case("c", "How much does the Nebula plan cost?", "ook", "uncovered", PLANS[:2])
    out = responses.refusal(case, random.Random(0), n=12)
    assert len(out) == 12 and len(set(out)) == 12
    assert sum("Orbit plan" in t for t in out) >= 4
    assert all(not numbers(t) for t in out)
    no_titles = Case("c", "What is it?", "ook", "uncovered", [Passage("x", "Some text with 42 in it.")])
    assert all("42" not in t for t in responses.refusal(no_titles, random.Random(0), n=5))


def test_needless_refusal_is_a_refusal_for_an_answerable_case(demo):
    _, ik, _, by_id = demo
    case = ik_case(ik[0], by_id)
    text = responses.needless_refusal(case, random.Random(3))
    assert text in responses.refusal(case, random.Random(3), n=15)
    assert not contains_answer(text, case.answers)


def test_synthetic_cases_get_refusals_that_name_what_is_missing(demo):
    passages, ik, _, by_id = demo
    q = next(q for q in ik if q.passage_id == "p0002")
    case = synthesis.unstated_detail(q, [by_id["p0002"]], passages, random.Random(0))
    texts = responses.refusal(case, random.Random(0), n=6)
    assert sum(case.meta["subject"] in t for t in texts) >= 3


# ---------------------------------------------------------------- near-miss fabrications

def test_near_miss_uses_a_same_type_value_from_a_neighbour():
    case = Case("c~swap", "How much does the Orbit plan cost each month?", "ook", "context_swap", PLANS[1:],
                meta={"original_answers": ["€25"]})
    text, meta = responses.near_miss_fabrication(case, PLANS, "money", random.Random(0))
    assert meta["value"] == "€15 per month" and meta["source_passage_id"] == "s2"
    assert "€15" in text and "€25" not in text
    assert "per month each month" not in text
    none = Case("c~swap", "Why is the sky blue?", "ook", "context_swap", PLANS[2:])
    assert responses.near_miss_fabrication(none, PLANS[2:], "money", random.Random(0)) is None
    assert responses.near_miss_fabrication(none, PLANS, "other", random.Random(0)) is None


def test_near_miss_values_have_the_expected_type_and_differ_from_gold(demo):
    passages, ik, _, by_id = demo
    rng = random.Random(2)
    made = 0
    for q in ik:
        etype = responses.expected_type(q.question, q.answers)
        case = synthesis.context_swap(q, {q.passage_id}, neighbours_of(q.passage_id, passages), 3)
        if case is None:
            continue
        out = responses.near_miss_fabrication(case, neighbours_of(q.passage_id, passages), etype, rng)
        if out is None:
            continue
        made += 1
        text, meta = out
        assert answer_type(meta["value"]) == etype, (q.question, meta)
        assert not any(normalize_answer(meta["value"]) == normalize_answer(a) for a in q.answers)
        assert not contains_answer(text, q.answers), (q.question, text)
        assert words(text) < 60
    assert made >= 0.6 * len(ik)


def test_confident_statements_read_like_answers():
    rng = random.Random(0)
    s = responses.confident_statement
    assert s("How much does the K9 Pro cost without a plan?", "€649", "money", rng) == \
        "The K9 Pro costs €649 without a plan."
    assert s("What's the price of the Lumo A5?", "€199", "money", rng) == "The price of the Lumo A5 is €199."
    assert s("How much is Unlimited Max a month?", "€34.99", "money", rng) == "Unlimited Max is €34.99 a month."
    assert s("What's your trade-in scheme called?", "Nimbus Cloud", "entity", rng) == \
        "Our trade-in scheme is called Nimbus Cloud."
    assert s("How long does a replacement SIM take to arrive by post?", "5 working days", "duration", rng) == \
        "A replacement SIM takes 5 working days to arrive by post."
    assert s("What time does the phone line close on weekdays?", "18:00", "time", rng) == \
        "The phone line closes at 18:00 on weekdays."
    assert s("Which is the cheapest 5G phone on offer?", "Lumo A3", "entity", rng) == \
        "Lumo A3 is the cheapest 5G phone on offer."
    assert s("What's the penalty for paying my bill late?", "€5", "money", rng) == \
        "The penalty for paying your bill late is €5."
    fallback = s("How many shops does Nimbus have?", "52", "number", rng)
    assert "52" in fallback and fallback.endswith(".")


# ---------------------------------------------------------------- wrong answers

def test_wrong_answers_contradict_the_evidence(demo):
    passages, ik, _, by_id = demo
    rng = random.Random(4)
    made = 0
    for q in ik:
        case = ik_case(q, by_id)
        text = responses.wrong_answer(case, passages, rng)
        if text is None:
            continue
        made += 1
        if len(q.answers) == 1:
            assert not contains_answer(text, q.answers), (q.question, text)
        assert normalize_answer(text) not in {normalize_answer(s) for s in responses.sentences(case.evidence[0].text)}
        assert words(text) < 60
    assert made >= 0.7 * len(ik)


def test_wrong_answer_keeps_the_type_and_changes_the_value():
    case = Case("c", "How much does the Comet plan cost?", "ik", "in_knowledge", PLANS, answers=["€15"])
    for seed in range(20):
        text = responses.wrong_answer(case, PLANS, random.Random(seed))
        assert text is not None
        assert "€15 " not in text and "€15." not in text
        value = re.search(r"€[\d.,]+", text.replace("€15 per month", ""))
        assert value and answer_type(value.group(0)) == "money"
    negated = Case("c", "Can I return opened earbuds?", "ik", "in_knowledge",
                   [Passage("e", "Opened earbuds cannot be returned unless they are faulty.", "Returns")],
                   answers=["cannot be returned unless they are faulty"])
    text = responses.wrong_answer(negated, [], random.Random(0))
    assert text is not None and "can be returned unless they are faulty" in text and "cannot" not in text


# ---------------------------------------------------------------- external negatives

def test_external_negatives_become_confident_sentences():
    squad = Case("s", "When was the bridge opened?", "ook", "unanswerable", [],
                 meta={"plausible_answers": ["1932", "1932", "the mayor"]})
    out = responses.external_negatives(squad)
    assert len(out) == 2 and all(t.endswith(".") for t in out)
    assert out[0] == "The bridge was opened in 1932."
    halu = Case("h", "Who wrote the novel?", "ook", "halueval", [],
                meta={"hallucinated_answer": "The novel was written by John Smith in 1890."})
    assert responses.external_negatives(halu) == ["The novel was written by John Smith in 1890."]
    gold = Case("g", "Who?", "ik", "x", [], answers=["Paris"], meta={"plausible_answers": ["paris"]})
    assert responses.external_negatives(gold) == []
    assert responses.external_negatives(Case("n", "?", "ook", "x", [])) == []


# ---------------------------------------------------------------- pairs

def test_make_pairs_for_ook_cases():
    case = Case("c~swap", "How much does the Orbit plan cost each month?", "ook", "context_swap", PLANS[1:],
                meta={"original_answers": ["€25"], "plausible_answers": ["€30"]}, synthetic=True)
    pairs = responses.make_pairs(case, PLANS, PLANS, NegativesConfig(evasive_quote=False), random.Random(0),
                                 refusals_per_case=2, extra_fabrications=["It is €99 a month.", "  "])
    kinds = [p.rejected_kind for p in pairs]
    assert kinds.count(FABRICATION_NEAR_MISS) == 2 and kinds.count(FABRICATION_EXTERNAL) == 2
    assert kinds.count(FABRICATION_ON_POLICY) == 2
    for p in pairs:
        assert p.pair_kind == OOK_REFUSAL_VS_FABRICATION and p.chosen_kind == REFUSAL and p.case_id == case.id
        assert p.scores["type_match"] == 1.0
        assert p.chosen != p.rejected
    assert len({p.chosen for p in pairs}) == 2
    off = NegativesConfig(near_miss=False, external=False, evasive_quote=False)
    assert responses.make_pairs(case, PLANS, PLANS, off, random.Random(0)) == []


def test_an_evasive_quote_is_a_shown_sentence_passed_off_as_the_answer():
    case = Case("c~swap", "How much does the Orbit plan cost each month?", "ook", "context_swap", PLANS[1:],
                meta={"original_answers": ["€25"]}, synthetic=True)
    quotes = {responses.evasive_quote(case, random.Random(seed)) for seed in range(30)}
    shown = responses.sentences(PLANS[1].text)
    for q in quotes:
        assert any(s.rstrip(".") in q or s[:1].lower() + s[1:].rstrip(".") in q for s in shown), q
        assert "€25" not in q  # a context swap shows no answer, so its quote holds none
    assert any(q.startswith("The section on ") for q in quotes) and any(q in shown for q in quotes)
    pairs = responses.make_pairs(case, PLANS, PLANS, NegativesConfig(near_miss=False, external=False,
                                                                      evasive_quote=True), random.Random(0))
    assert [p.rejected_kind for p in pairs] == [EVASIVE_QUOTE] and "type_match" not in pairs[0].scores
    assert responses.make_pairs(case, PLANS, PLANS, NegativesConfig(near_miss=False, external=False),
                                random.Random(0)) == []  # off by default
    # Chinese cases and cases without evidence get none.
    assert responses.evasive_quote(Case("z", "这个套餐多少钱？", "ook", "x", PLANS[1:]), random.Random(0)) is None
    assert responses.evasive_quote(Case("n", "How much?", "ook", "x", []), random.Random(0)) is None


def test_the_detector_does_not_take_an_evasive_quote_for_a_refusal(demo):
    from halluguard.refusal import RefusalDetector

    passages, _, ook, _ = demo
    rng = random.Random(3)
    quotes = [responses.evasive_quote(Case(q.id, q.question, "ook", q.kind, passages[i % 100:i % 100 + 3]), rng)
              for i, q in enumerate(ook[:40])]
    quotes = [q for q in quotes if q]
    assert len(quotes) >= 30
    assert not RefusalDetector().is_refusal(quotes).any()


def test_make_pairs_for_ik_cases(demo):
    passages, ik, _, by_id = demo
    q = next(q for q in ik if q.answers == ["€17.99"])
    case = ik_case(q, by_id)
    pairs = responses.make_pairs(case, neighbours_of(q.passage_id, passages), passages, NegativesConfig(),
                                 random.Random(0))
    assert [p.pair_kind for p in pairs] == [IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG]
    refusal_pair, wrong_pair = pairs
    assert refusal_pair.chosen_kind == GROUNDED and refusal_pair.rejected_kind == NEEDLESS_REFUSAL
    assert wrong_pair.rejected_kind == WRONG_ANSWER and wrong_pair.scores["type_match"] == 1.0
    assert "€17.99" in wrong_pair.chosen and "€17.99" not in wrong_pair.rejected
    # A minimal pair: the wrong answer is the grounded answer with one value changed.
    diff = set(wrong_pair.chosen.split()) ^ set(wrong_pair.rejected.split())
    assert 1 <= len(diff) <= 4
    only_refusal = NegativesConfig(wrong_answer=False)
    got = responses.make_pairs(case, [], passages, only_refusal, random.Random(0), refusals_per_case=3)
    assert [p.pair_kind for p in got] == [IK_GROUNDED_VS_REFUSAL] * 3
    assert responses.make_pairs(Case("x", "?", "ik", "", [], answers=[]), [], passages, NegativesConfig(),
                                random.Random(0)) == []


def test_pairs_are_deterministic_and_short(demo):
    passages, ik, ook, by_id = demo

    def build(seed):
        rng = random.Random(seed)
        out = []
        for q in ik[:40]:
            neigh = neighbours_of(q.passage_id, passages)
            case = ik_case(q, by_id)
            out += responses.make_pairs(case, neigh, passages, NegativesConfig(), rng)
            swap = synthesis.context_swap(q, {q.passage_id}, neigh, 3)
            out += responses.make_pairs(swap, neigh, passages, NegativesConfig(), rng)
        for q in ook[:20]:
            case = Case(q.id, q.question, "ook", q.kind, passages[:3])
            out += responses.make_pairs(case, passages[3:12], passages, NegativesConfig(), rng)
        return out

    a, b = build(11), build(11)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.to_dict() for p in a] != [p.to_dict() for p in build(12)]
    assert {p.pair_kind for p in a} == {OOK_REFUSAL_VS_FABRICATION, IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG}
    for p in a:
        assert words(p.chosen) < 60 and words(p.rejected) < 60, p
        assert p.chosen.strip() and p.rejected.strip()


def test_expected_type_is_not_fooled_by_in_charge_and_reads_named_what_questions():
    from data_builders.responses import expected_type

    assert expected_type("What Governor in charge of New France died in 1725?") == "entity"
    assert expected_type("What is charged for a SIM swap?") == "money"
    assert expected_type("What happens if my cable frays?") == "other"
