"""The pair and question filters: exact counts on hand-made data, inputs never changed."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest

from data_builders import filters
from data_builders.filters import FilterReport, summarize
from data_builders.records import (
    FABRICATION_EXTERNAL,
    FABRICATION_NEAR_MISS,
    GROUNDED,
    IK_GROUNDED_VS_REFUSAL,
    IK_GROUNDED_VS_WRONG,
    NEEDLESS_REFUSAL,
    OOK_REFUSAL_VS_FABRICATION,
    REFUSAL,
    WRONG_ANSWER,
    Case,
    Pair,
    ProbeResult,
)
from halluguard.errors import HalluguardError

REFUSAL_WORDS = ("i don't know", "cannot answer", "not in the provided", "no information")


class FakeDetector:
    """Keyword detector with the RefusalDetector interface; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = []
        for t in texts:
            low = t.lower()
            if low.startswith("maybe"):
                out.append(0.5)  # hedged: in between
            else:
                out.append(0.95 if any(w in low for w in REFUSAL_WORDS) else 0.05)
        return np.array(out, dtype=float)

    def is_refusal(self, texts: list[str]) -> np.ndarray:
        return self.score(texts) >= 0.5


def pair(case_id, kind, chosen, rejected, chosen_kind=None, rejected_kind=None, **scores) -> Pair:
    defaults = {OOK_REFUSAL_VS_FABRICATION: (REFUSAL, FABRICATION_NEAR_MISS),
                IK_GROUNDED_VS_REFUSAL: (GROUNDED, NEEDLESS_REFUSAL),
                IK_GROUNDED_VS_WRONG: (GROUNDED, WRONG_ANSWER)}[kind]
    return Pair(case_id=case_id, pair_kind=kind, chosen=chosen, rejected=rejected,
                chosen_kind=chosen_kind or defaults[0], rejected_kind=rejected_kind or defaults[1],
                scores=dict(scores))


def case(id, label, kind="in_knowledge", source="", group="g", synthetic=False) -> Case:
    return Case(id=id, question=f"question {id}", label=label, kind=kind, evidence=[],
                source_question_id=source, group=group, synthetic=synthetic)


@pytest.fixture
def mixed_pairs() -> list[Pair]:
    return [
        # OOK: good refusal vs fabrication -> kept by every detector filter
        pair("o1", OOK_REFUSAL_VS_FABRICATION, "I don't know; the passages do not say.", "It costs 12 euros."),
        # OOK: the "fabrication" is a refusal -> refusal_in_negative
        pair("o2", OOK_REFUSAL_VS_FABRICATION, "I cannot answer that from the passages.",
             "There is no information about that."),
        # OOK: the chosen "refusal" is not recognised -> positive_not_refusal
        pair("o3", OOK_REFUSAL_VS_FABRICATION, "Please ask the shop.", "It opened in 1998."),
        # IK grounded vs needless refusal -> kept
        pair("i1", IK_GROUNDED_VS_REFUSAL, "Refunds take 14 days.", "I don't know."),
        # IK grounded answer that reads as a refusal -> positive_not_refusal
        pair("i2", IK_GROUNDED_VS_REFUSAL, "That is not in the provided text, but 14 days.", "I cannot answer."),
        # IK grounded vs wrong -> kept
        pair("i3", IK_GROUNDED_VS_WRONG, "It costs 25 euros.", "It costs 35 euros."),
        # IK wrong answer that is a refusal -> refusal_in_negative
        pair("i4", IK_GROUNDED_VS_WRONG, "It costs 25 euros.", "I cannot answer that."),
    ]


# ---------------------------------------------------------------- questions

def test_gray_zone_on_cases_and_probe_results():
    cases = [case("a", "ik"), case("b", "ambiguous", kind="uncovered"), case("c", "ook", kind="off_topic"),
             case("d", "ambiguous", kind="uncovered")]
    before = list(cases)
    kept, counts = filters.gray_zone(cases)
    assert [c.id for c in kept] == ["a", "c"]
    assert counts["seen"] == 4 and counts["dropped"] == 2
    assert counts["dropped_by_kind"] == {"uncovered": 2}
    assert cases == before

    probes = [ProbeResult("q1", [], [], 0.2, 0.0, None, "ook", "ook", ""),
              ProbeResult("q2", [], [], 0.4, 0.0, None, "ambiguous", "ambiguous", "")]
    kept, counts = filters.gray_zone(probes)
    assert [p.question_id for p in kept] == ["q1"]
    assert counts["dropped"] == 1 and counts["dropped_by_probe_label"] == {"ambiguous": 1}


def _vectors(spec: dict[str, list[float]], ids: list[str]) -> np.ndarray:
    v = np.array([spec[i] for i in ids], dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_opposite_label_near_duplicates_drops_both_sides():
    cases = [case("q1", "ik"), case("q2", "ook", kind="uncovered"), case("q3", "ik"), case("q4", "ook"),
             case("q5", "ik")]
    vecs = _vectors({"q1": [1, 0, 0], "q2": [1, 0.05, 0], "q3": [0, 1, 0], "q4": [0, 0, 1],
                     "q5": [0.05, 1, 0.0]}, [c.id for c in cases])
    kept, counts = filters.opposite_label_near_duplicates(cases, vecs, threshold=0.95)
    # q1/q2 conflict (ik vs ook); q3/q5 are similar but share a label: not a conflict.
    assert [c.id for c in kept] == ["q3", "q4", "q5"]
    assert counts["conflicts"] == 1 and counts["exempt_pairs"] == 0
    assert counts["dropped"] == 2 and counts["dropped_by_label"] == {"ik": 1, "ook": 1}
    assert counts["examples"][0]["ik"] == "q1" and counts["examples"][0]["ook"] == "q2"
    assert len(cases) == 5


def test_context_swap_of_its_own_source_is_exempt():
    src = case("q1", "ik")
    swap = case("q1#swap", "ook", kind="context_swap", source="q1", synthetic=True)
    # A context swap with the same text but an unrelated IK question still conflicts.
    other_ik = case("q9", "ik")
    other_swap = case("q7#swap", "ook", kind="context_swap", source="q7", synthetic=True)
    # An IK case and a swap sharing the same source id are related too.
    ik_copy = case("q8#ik", "ik", source="q8")
    swap8 = case("q8#swap", "ook", kind="context_swap", source="q8", synthetic=True)
    cases = [src, swap, other_ik, other_swap, ik_copy, swap8]
    vecs = _vectors({"q1": [1, 0, 0], "q1#swap": [1, 0, 0], "q9": [0, 1, 0], "q7#swap": [0, 1, 0],
                     "q8#ik": [0, 0, 1], "q8#swap": [0, 0, 1]}, [c.id for c in cases])
    kept, counts = filters.opposite_label_near_duplicates(cases, vecs, threshold=0.95)
    assert [c.id for c in kept] == ["q1", "q1#swap", "q8#ik", "q8#swap"]
    assert counts["conflicts"] == 3 and counts["exempt_pairs"] == 2 and counts["dropped"] == 2


def test_near_duplicates_disabled_and_shape_checked():
    cases = [case("a", "ik"), case("b", "ook")]
    kept, counts = filters.opposite_label_near_duplicates(cases, np.ones((2, 3)), threshold=None)
    assert len(kept) == 2 and counts["dropped"] == 0
    with pytest.raises(HalluguardError, match="2 cases but 3"):
        filters.opposite_label_near_duplicates(cases, np.ones((3, 3)), threshold=0.9)


def test_near_duplicates_scale_in_blocks():
    rng = np.random.default_rng(0)
    n = 3000
    vecs = rng.normal(size=(n, 32)).astype(np.float32)
    cases = [case(f"q{i}", "ik" if i % 2 else "ook") for i in range(n)]
    vecs[1] = vecs[0]  # one planted conflict
    kept, counts = filters.opposite_label_near_duplicates(cases, vecs, threshold=0.95)
    assert counts["conflicts"] == 1 and counts["dropped"] == 2 and len(kept) == n - 2


# ---------------------------------------------------------------- detector filters

def test_refusal_in_negative(mixed_pairs):
    before = copy.deepcopy(mixed_pairs)
    det = FakeDetector()
    kept, counts = filters.refusal_in_negative(mixed_pairs, det)
    assert [p.case_id for p in kept] == ["o1", "o3", "i1", "i2", "i3"]
    assert counts["seen"] == 7 and counts["checked"] == 5 and counts["dropped"] == 2
    assert counts["dropped_by_pair_kind"] == {IK_GROUNDED_VS_WRONG: 1, OOK_REFUSAL_VS_FABRICATION: 1}
    assert len(det.calls) == 1  # one batched call
    assert mixed_pairs == before


def test_positive_not_refusal(mixed_pairs):
    before = copy.deepcopy(mixed_pairs)
    kept, counts = filters.positive_not_refusal(mixed_pairs, FakeDetector())
    assert [p.case_id for p in kept] == ["o1", "o2", "i1", "i3", "i4"]
    assert counts["dropped"] == 2 and counts["checked"] == 7
    assert counts["dropped_by_pair_kind"] == {IK_GROUNDED_VS_REFUSAL: 1, OOK_REFUSAL_VS_FABRICATION: 1}
    assert mixed_pairs == before


def test_indistinguishable_scores_copies_and_drops_within_margin():
    pairs = [
        pair("o1", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "It costs 12 euros."),  # 0.95 vs 0.05
        pair("o2", OOK_REFUSAL_VS_FABRICATION, "maybe it is unclear", "It costs 12 euros."),  # 0.5 vs 0.05
        pair("o3", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "I cannot answer."),  # 0.95 vs 0.95
        pair("i1", IK_GROUNDED_VS_REFUSAL, "Refunds take 14 days.", "maybe"),  # 0.05 vs 0.5
        pair("i2", IK_GROUNDED_VS_WRONG, "25 euros", "35 euros", nll=2.0),  # not checked
    ]
    before = copy.deepcopy(pairs)
    kept, counts = filters.indistinguishable(pairs, FakeDetector(), margin=0.5)
    assert [p.case_id for p in kept] == ["o1", "i2"]
    assert counts["seen"] == 5 and counts["checked"] == 4 and counts["dropped"] == 3
    assert counts["dropped_by_pair_kind"] == {IK_GROUNDED_VS_REFUSAL: 1, OOK_REFUSAL_VS_FABRICATION: 2}
    assert counts["threshold"] == 0.5
    assert kept[0].scores == {"detector_chosen": 0.95, "detector_rejected": 0.05}
    assert kept[0] is not pairs[0] and pairs == before  # scored copies, inputs untouched
    assert kept[1] is pairs[4]

    kept, counts = filters.indistinguishable(pairs, FakeDetector(), margin=0.0)
    assert [p.case_id for p in kept] == ["o1", "o2", "i1", "i2"]  # only exact ties dropped
    assert counts["dropped"] == 1


def test_detector_length_mismatch_is_an_error():
    class Broken(FakeDetector):
        def is_refusal(self, texts):
            return np.array([True])

    pairs = [pair("o1", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "x"),
             pair("o2", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "y")]
    with pytest.raises(HalluguardError, match="1 flags for 2 texts"):
        filters.refusal_in_negative(pairs, Broken())


def test_empty_inputs_do_not_call_the_detector():
    det = FakeDetector()
    for fn in (filters.refusal_in_negative, filters.positive_not_refusal):
        kept, counts = fn([], det)
        assert kept == [] and counts["seen"] == 0 and counts["dropped"] == 0
    assert filters.indistinguishable([], det, 0.1)[0] == []
    assert det.calls == []


# ---------------------------------------------------------------- precomputed scores

def test_too_fake_nll_counts_unscored():
    pairs = [pair("a", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "x", nll=2.0),
             pair("b", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "y", nll=7.5),
             pair("c", IK_GROUNDED_VS_WRONG, "25", "35"),
             pair("d", IK_GROUNDED_VS_WRONG, "25", "45", nll=6.0),
             pair("e", IK_GROUNDED_VS_WRONG, "25", "55", nll=float("nan"))]
    kept, counts = filters.too_fake_nll(pairs, max_nll=6.0)
    assert [p.case_id for p in kept] == ["a", "c", "d", "e"]
    assert counts["dropped"] == 1 and counts["not_scored"] == 2 and counts["threshold"] == 6.0
    assert counts["dropped_by_rejected_kind"] == {FABRICATION_NEAR_MISS: 1}


def test_off_type():
    pairs = [pair("a", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "3 days", type_match=0.0),
             pair("b", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "12 euros", type_match=1.0),
             pair("c", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "Paris", rejected_kind=FABRICATION_EXTERNAL),
             pair("d", IK_GROUNDED_VS_WRONG, "25 euros", "Tuesday", type_match=0.0),
             pair("e", IK_GROUNDED_VS_REFUSAL, "25 euros", "I don't know.", type_match=0.0)]
    kept, counts = filters.off_type(pairs)
    assert [p.case_id for p in kept] == ["b", "c", "e"]
    assert counts["dropped"] == 2 and counts["not_scored"] == 1
    assert counts["dropped_by_rejected_kind"] == {FABRICATION_NEAR_MISS: 1, WRONG_ANSWER: 1}


# ---------------------------------------------------------------- duplicates

class FakeEncoder:
    """Same text -> same vector; different texts -> near-orthogonal random vectors."""

    def __init__(self, synonyms: dict[str, str] | None = None):
        self.synonyms = synonyms or {}
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = []
        for t in texts:
            t = self.synonyms.get(t, t)
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big"))
            v = rng.normal(size=256)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def test_duplicate_pairs_greedy_keeps_first_of_each_group():
    prompts = {"c1": "How long does a refund take?", "c2": "How long does a refund take?",
               "c3": "What does the Orbit plan cost?"}
    pairs = [pair("c1", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "Three weeks."),
             pair("c1", OOK_REFUSAL_VS_FABRICATION, "I cannot answer.", "Three weeks."),  # dup of 0
             pair("c2", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "3 weeks."),  # dup of 0 via synonym
             pair("c1", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "Ten days."),  # other rejected
             pair("c3", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "Three weeks.")]  # other prompt
    enc = FakeEncoder({"3 weeks.": "Three weeks."})
    kept, counts = filters.duplicate_pairs(pairs, prompts, enc, threshold=0.98)
    assert [(p.case_id, p.rejected) for p in kept] == [("c1", "Three weeks."), ("c1", "Ten days."),
                                                        ("c3", "Three weeks.")]
    assert kept[0] is pairs[0]
    assert counts["dropped"] == 2 and counts["seen"] == 5
    assert counts["dropped_by_pair_kind"] == {OOK_REFUSAL_VS_FABRICATION: 2}

    kept, counts = filters.duplicate_pairs(pairs, prompts, enc, threshold=None)
    assert len(kept) == 5 and counts["dropped"] == 0
    with pytest.raises(HalluguardError, match="no prompt text for case ids c3"):
        filters.duplicate_pairs(pairs, {"c1": "x", "c2": "y"}, enc, threshold=0.98)


def test_duplicate_pairs_with_the_real_encoder(encoder):
    prompts = {"c1": "Passage: Refunds are paid within 14 days.\nQuestion: How long does a refund take?",
               "c2": "Passage: Refunds are paid within 14 days.\nQuestion: How long does a refund take?",
               "c3": "Passage: The Orbit plan costs 25 euros.\nQuestion: How much is the Orbit plan?"}
    pairs = [pair("c1", IK_GROUNDED_VS_WRONG, "14 days.", "Refunds take 30 days."),
             pair("c2", IK_GROUNDED_VS_WRONG, "14 days.", "Refunds take 30 days."),
             pair("c1", IK_GROUNDED_VS_WRONG, "14 days.", "The Orbit plan has no roaming."),
             pair("c3", IK_GROUNDED_VS_WRONG, "25 euros.", "Refunds take 30 days.")]
    kept, counts = filters.duplicate_pairs(pairs, prompts, encoder, threshold=0.98)
    assert counts["dropped"] == 1
    assert [p.case_id for p in kept] == ["c1", "c1", "c3"]


# ---------------------------------------------------------------- reports

def test_reports_and_summary(mixed_pairs):
    kept, c1 = filters.refusal_in_negative(mixed_pairs, FakeDetector())
    kept, c2 = filters.too_fake_nll(kept, max_nll=5.0)
    report = FilterReport.from_counts(c1)
    assert (report.name, report.seen, report.dropped, report.kept) == ("refusal_in_negative", 7, 2, 5)
    assert report.reason and report.threshold is None
    rows = summarize([report, c2])
    assert [r["name"] for r in rows] == ["refusal_in_negative", "too_fake_nll"]
    assert rows[1]["threshold"] == 5.0 and rows[1]["not_scored"] == 5 and rows[1]["dropped"] == 0
    assert rows[0]["dropped_share"] == pytest.approx(2 / 7, abs=1e-4)
    import json

    json.dumps(rows)  # JSON-able
