"""Answer types and the out-of-knowledge case synthesis (context swap, entity swap, unstated detail,
false premise), on hand-made passages and on the demo knowledge base."""

from __future__ import annotations

import random
import re

import pytest

from data_builders import responses, synthesis
from data_builders.answer_types import (answer_type, contains_answer, extract_values, normalize_answer,
                                        numeric_core, unit_of)
from data_builders.records import Case
from halluguard.config import RetrieverConfig, SynthesisConfig
from halluguard.kb import Passage, Question


@pytest.fixture(scope="module")
def demo(demo_kb):
    passages, questions = demo_kb
    by_id = {p.id: p for p in passages}
    ik = [q for q in questions if q.label == "ik"]
    return passages, ik, by_id


def kb_text(passages) -> str:
    return "\n".join(f"{p.title}\n{p.text}" for p in passages)


SMALL = [
    Passage("s1", "The Orbit plan costs €25 per month and includes 40 GB of data.", "Orbit plan", "plans"),
    Passage("s2", "The Comet plan costs €15 per month and includes 10 GB of data.", "Comet plan", "plans"),
    Passage("s3", "Refunds are paid within 14 days to the original card.", "Refunds", "refunds"),
    Passage("s4", "Roaming outside the EU costs €6 per day with a day pass.", "Roaming", "roaming"),
    Passage("s5", "Customers who leave pay €25 per month until the end of the term.", "Leaving", "contracts"),
]


# ---------------------------------------------------------------- answer types

@pytest.mark.parametrize("answer, expected", [
    ("€9.99", "money"), ("€0.79 per minute", "money"), ("up to €30", "money"), ("$1.2 billion", "money"),
    ("15%", "percent"), ("8% a year", "percent"),
    ("14 days", "duration"), ("2 working days", "duration"), ("within 48 hours", "duration"),
    ("12-month", "duration"), ("five years", "duration"),
    ("14:00", "time"), ("between 00:00 and 05:00", "time"), ("7pm", "time"),
    ("30 June 2024", "date"), ("1 April", "date"), ("1975", "date"), ("every March", "date"), ("3rd", "date"),
    ("46", "number"), ("60 GB", "number"), ("three", "number"), ("up to 3 accessories", "number"),
    ("10,000 mAh", "number"), ("over 100", "number"),
    ("0800 646 2900", "phone"), ("*5051#", "phone"),
    ("Kestrel K9 Pro", "entity"), ("Helix Telecom", "entity"), ("Zone 3", "entity"), ("Cirra", "entity"),
    ("Denver Broncos", "entity"), ("English, French, Spanish and Polish", "entity"),
    ("residential care", "other"), ("cannot be returned unless they are faulty", "other"),
    ("nimbusmobile.example/terms", "other"), ("", "other"),
])
def test_answer_type_on_sample_answers(answer, expected):
    assert answer_type(answer) == expected


def test_every_demo_answer_gets_a_type(demo):
    _, ik, _ = demo
    types = {answer_type(a) for q in ik for a in q.answers}
    assert {"money", "duration", "number", "entity", "percent", "time", "date", "phone", "other"} <= types


def test_extract_values_in_order_unique_and_typed():
    text = ("Go Weekly costs €3.49 for 7 days, Go Monthly costs €12 for 30 days, and a second Go Weekly "
            "costs €3.49 again. Calls cost €0.09 per minute; 15 GB of data; call 0800 646 2900 from 08:00.")
    assert extract_values(text, "money") == ["€3.49", "€12", "€0.09 per minute"]
    assert extract_values(text, "duration") == ["7 days", "30 days"]
    assert extract_values(text, "phone") == ["0800 646 2900"]
    assert extract_values(text, "time") == ["08:00"]
    assert "15 GB" in extract_values(text, "number")
    assert "Go Weekly" in extract_values(text, "entity")
    # A number inside a name or a money amount is not a separate number.
    assert extract_values("Nimbus Flex 20 costs €17.99 per month.", "number") == []
    assert extract_values(text, "other") == []
    with pytest.raises(ValueError):
        extract_values(text, "colour")


def test_normalize_and_contains_answer():
    assert normalize_answer("  The  Denver Broncos! ") == "denver broncos"
    assert normalize_answer("An apple, a day") == "apple day"
    assert contains_answer("It costs €17.99 per month.", ["€17.99"])
    assert contains_answer("It costs €17.99 per month.", ["17.99"])
    assert not contains_answer("It costs €6.99 per month.", ["€6"])  # token boundaries, not raw substrings
    assert not contains_answer("this free offer", ["is free"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", ["", "  "])
    assert numeric_core("€1,499") == "1499" and unit_of("14 days") == unit_of("7 day") == "day"


# ---------------------------------------------------------------- context swap

def test_context_swap_never_keeps_a_passage_with_the_answer():
    q = Question("q1", "How much is the Orbit plan each month?", "ik", "in_knowledge", ["€25"], "s1")
    case = synthesis.context_swap(q, {"s1"}, SMALL, k=2, group="plans")
    assert case is not None
    ids = [p.id for p in case.evidence]
    assert ids == ["s2", "s3"]  # s1 is gold; s5 also states €25 (checked even though it is not gold)
    assert case.id == "q1~swap" and case.label == "ook" and case.kind == "context_swap" and case.synthetic
    assert case.question == q.question and case.answers == [] and case.source_question_id == "q1"
    assert case.meta["original_answers"] == ["€25"] and case.group == "plans"
    assert synthesis.verify_ook(case, q.answers) == (True, "")


def test_context_swap_uses_what_is_left_and_is_none_when_impossible():
    q = Question("q1", "How much is the Orbit plan each month?", "ik", "in_knowledge", ["€25"], "s1")
    few = synthesis.context_swap(q, {"s1"}, [SMALL[0], SMALL[4], SMALL[3]], k=3)
    assert few is not None and [p.id for p in few.evidence] == ["s4"]
    assert synthesis.context_swap(q, {"s1"}, [SMALL[0], SMALL[4]], k=3) is None
    assert synthesis.context_swap(q, {"s1"}, [], k=1) is None
    no_gold = Question("q2", "Anything?", "ik", "in_knowledge", [], "s1")
    assert synthesis.context_swap(no_gold, set(), SMALL, k=2) is None


def test_context_swap_on_the_whole_demo_kb_is_clean(demo):
    passages, ik, _ = demo
    for q in ik:
        case = synthesis.context_swap(q, {q.passage_id}, passages, k=3)
        assert case is not None, q.id
        for p in case.evidence:
            assert p.id != q.passage_id
            assert not contains_answer(f"{p.title}\n{p.text}", q.answers), (q.id, p.id)


def test_verify_ook_rejects_evidence_that_holds_the_answer():
    case = Case("q~swap", "How much is the Orbit plan?", "ook", "context_swap", [SMALL[4]], synthetic=True)
    ok, why = synthesis.verify_ook(case, ["€25"])
    assert not ok and "s5" in why and "€25" in why


# ---------------------------------------------------------------- entity swap

def test_entity_swap_changes_a_model_number_to_one_the_kb_lacks(demo):
    passages, _, by_id = demo
    q = Question("x", "How much does Nimbus Flex 20 cost each month?", "ik", "in_knowledge", ["€17.99"], "p0002")
    case = synthesis.entity_swap(q, [by_id["p0002"]], passages, random.Random(0), group="plans")
    assert case is not None and case.kind == "entity_swap" and case.label == "ook" and case.synthetic
    assert case.meta["from"] == "Nimbus Flex 20"
    assert re.fullmatch(r"Nimbus Flex \d+", case.meta["to"]) and case.meta["to"] != "Nimbus Flex 20"
    assert case.question == q.question.replace("Nimbus Flex 20", case.meta["to"])
    assert case.meta["to"].lower() not in kb_text(passages).lower()
    assert case.evidence == [by_id["p0002"]] and case.group == "plans"
    assert synthesis.verify_ook(case, q.answers)[0]  # the source answer may stay: it answers another question


def test_entity_swap_results_never_occur_in_the_kb(demo):
    passages, ik, by_id = demo
    text = kb_text(passages).lower()
    made = 0
    for i, q in enumerate(ik):
        case = synthesis.entity_swap(q, [by_id[q.passage_id]], passages, random.Random(i))
        if case is None:
            continue
        made += 1
        new = case.meta["to"]
        assert not re.search(r"(?<![\w])" + re.escape(new.lower()) + r"(?![\w])", text), new
        assert case.question != q.question and new in case.question
    assert made >= 30


def test_entity_swap_without_a_name_and_with_a_lone_name():
    passages = SMALL
    q = Question("q", "How long does a refund take?", "ik", "in_knowledge", ["14 days"], "s3")
    assert synthesis.entity_swap(q, [SMALL[2]], passages, random.Random(0)) is None
    q2 = Question("q", "What is the price of the Starlight Max bundle?", "ik", "", ["€25"], "s1")
    case = synthesis.entity_swap(q2, [SMALL[0]], passages, random.Random(0))
    assert case is not None and case.meta["to"].startswith("Starlight Max ")


def test_entity_swap_leaves_conditions_alone():
    """'more than €700' is a condition another number may still meet: never swapped."""
    q = Question("q", "How much do I pay upfront for a phone that costs more than €700?", "ik", "", ["€99"], None)
    assert synthesis.entity_swap(q, [], SMALL, random.Random(0)) is None


# ---------------------------------------------------------------- unstated detail and false premise

def _device(text_extra: str = "") -> Passage:
    return Passage("d1", "The Orbit X1 is a smartphone with a 6.1-inch screen and a 4,000 mAh battery, sold for "
                   "€399." + text_extra, "Orbit X1", "devices")


@pytest.mark.parametrize("fn", [synthesis.unstated_detail, synthesis.false_premise])
def test_template_edits_never_ask_what_the_evidence_states(demo, fn):
    passages, ik, by_id = demo
    made = 0
    for i, q in enumerate(ik):
        evidence = [by_id[q.passage_id]]
        case = fn(q, evidence, passages, random.Random(i))
        if case is None:
            continue
        made += 1
        assert case.kind == fn.__name__ and case.label == "ook" and case.question.endswith("?")
        for pattern in case.meta["absent"]:
            assert not re.search(r"(?<![\w])" + pattern, f"{evidence[0].title}\n{evidence[0].text}", re.IGNORECASE)
        assert synthesis.verify_ook(case, q.answers) == (True, "")
    assert made >= 0.6 * len(ik)


def test_unstated_detail_rejects_a_passage_that_states_the_detail():
    q = Question("q", "How much is the Orbit X1?", "ik", "in_knowledge", ["€399"], "d1")
    plain = _device()
    case = synthesis.unstated_detail(q, [plain], [plain], random.Random(1))
    assert case is not None and "Orbit X1" in case.question
    # The same case shown with a passage that states the asked detail fails verification ...
    word = next(p for p in case.meta["absent"] if re.fullmatch(r"[a-z ]+", p))
    stating = Passage("d2", f"The Orbit X1 has a {word} that customers like.", "Orbit X1")
    bad = Case(case.id, case.question, "ook", case.kind, [plain, stating], meta=dict(case.meta))
    ok, why = synthesis.verify_ook(bad, q.answers)
    assert not ok and "d2" in why
    # ... and a KB whose passages state every template's detail about the subject yields nothing.
    every = " ".join(p for t in synthesis.UNSTATED_TEMPLATES for p in t.absent if re.fullmatch(r"[a-z ]+", p))
    full = _device(" It " + every + " colour weigh battery.")
    assert synthesis.unstated_detail(q, [full], [full], random.Random(1)) is None


def test_colour_is_never_asked_when_a_kb_passage_about_the_subject_names_colours():
    q = Question("q", "How much is the Orbit X1?", "ik", "in_knowledge", ["€399"], "d1")
    plain = _device()
    cases = Passage("c1", "Orbit X1 cases come in black and sand.", "Cases", "accessories")
    for seed in range(40):
        case = synthesis.unstated_detail(q, [plain], [plain, cases], random.Random(seed))
        assert case is None or "colour" not in case.question.lower()


def test_false_premise_rejects_a_subject_whose_passage_states_it():
    q = Question("q", "How much is the Orbit X1?", "ik", "in_knowledge", ["€399"], "d1")
    plain = _device()
    seen = set()
    for seed in range(30):
        case = synthesis.false_premise(q, [plain], [plain], random.Random(seed))
        assert case is not None
        seen.add(case.meta["template"])
    assert "Why was {s} discontinued last month?" in seen
    stated = _device(" It was discontinued in May and replaced by the Orbit X2.")
    for seed in range(30):
        case = synthesis.false_premise(q, [stated], [stated], random.Random(seed))
        assert case is None or "discontinued" not in case.question


# ---------------------------------------------------------------- the driver

def test_synthesize_is_deterministic_limited_and_puts_the_swap_first(demo):
    passages, ik, by_id = demo
    cfg = SynthesisConfig()

    def run(seed):
        out = []
        for q in ik[:60]:
            ev = [by_id[q.passage_id]]
            out += synthesis.synthesize(q, ev, passages, passages, cfg, 3, random.Random(seed), group="g")
        return out

    a, b = run(7), run(7)
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b]
    by_source: dict[str, list[Case]] = {}
    for c in a:
        by_source.setdefault(c.source_question_id, []).append(c)
        assert c.group == "g" and c.label == "ook" and c.synthetic
    for cases in by_source.values():
        assert len(cases) <= cfg.max_per_question
        assert cases[0].kind == "context_swap"
    none = SynthesisConfig(context_swap=False, entity_swap=False, unstated_detail=False, false_premise=False)
    assert synthesis.synthesize(ik[0], [by_id[ik[0].passage_id]], passages, passages, none, 3, random.Random(0)) == []
    only_swap = SynthesisConfig(entity_swap=False, unstated_detail=False, false_premise=False, max_per_question=5)
    made = synthesis.synthesize(ik[0], [by_id[ik[0].passage_id]], passages, passages, only_swap, 3, random.Random(0))
    assert [c.kind for c in made] == ["context_swap"]


def test_demo_kb_yields_with_real_neighbours(demo, encoder):
    """Over every IK demo question, with retrieval neighbours from the real encoder: how often each
    method makes a verified case, and how often a near-miss fabrication exists."""
    from halluguard.retrieval import KnowledgeIndex

    passages, ik, _ = demo
    index = KnowledgeIndex.build(passages, encoder, RetrieverConfig(), progress=False)
    hits = index.search([q.question for q in ik], encoder, 12)
    rng = random.Random(0)
    counts = {"context_swap": 0, "entity_swap": 0, "unstated_detail": 0, "false_premise": 0, "any_edit": 0,
              "near_miss": 0, "wrong_answer": 0}
    for q, h in zip(ik, hits):
        pool = [x.passage for x in h]
        evidence = pool[:3]
        gold = {p.id for p in evidence if contains_answer(p.text, q.answers)}
        swap = synthesis.context_swap(q, gold, pool, 3)
        if swap is not None and synthesis.verify_ook(swap, q.answers)[0]:
            counts["context_swap"] += 1
            etype = responses.expected_type(q.question, q.answers)
            made = responses.near_miss_fabrication(swap, pool, etype, rng)
            if made is not None:
                counts["near_miss"] += 1
                value = made[1]["value"]
                assert answer_type(value) == etype or etype == "entity"
                assert not any(normalize_answer(value) == normalize_answer(a) for a in q.answers)
        any_edit = False
        for fn in (synthesis.entity_swap, synthesis.unstated_detail, synthesis.false_premise):
            case = fn(q, evidence, passages, rng)
            if case is not None and synthesis.verify_ook(case, q.answers)[0]:
                counts[fn.__name__] += 1
                any_edit = True
        counts["any_edit"] += any_edit
        ik_case = Case(q.id, q.question, "ik", "in_knowledge", evidence, answers=q.answers)
        if gold:
            counts["wrong_answer"] += responses.wrong_answer(ik_case, passages, rng) is not None
    n = len(ik)
    print("\ndemo KB yields over", n, "IK questions:",
          ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in counts.items()))
    assert counts["context_swap"] >= 0.9 * n
    assert counts["any_edit"] >= 0.6 * n
    assert counts["near_miss"] >= 0.7 * n
    assert counts["entity_swap"] >= 0.1 * n
