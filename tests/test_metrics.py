"""The evaluation metrics on hand-computed confusion counts (halluguard.evaluation)."""

from __future__ import annotations

import json
import math

import pytest

from halluguard.errors import HalluguardError
from halluguard.evaluation import (
    METRICS, Outcome, bootstrap_ci, by_kind, compare, exact_match, get_metric, mann_whitney_auc, mcnemar,
    paired_bootstrap_diff, summarize, token_f1,
)
from halluguard.evaluation import metrics as metrics_module

# ---------------------------------------------------------------- the hand-worked set: 10 IK + 6 OOK
#
# IK questions ik0..ik9 (kind in_knowledge); the retrieved context holds the answer for ik0..ik6
# (7 questions) and misses it for ik7..ik9 (3).
#   refused: ik5, ik6 (context had it), ik8 (context missed)         -> FP = 3, TN = 7
#   correct: ik0 ik1 ik2 ik3 ik7 answered correctly (5); ik4, ik9 answered wrongly;
#            ik5 is refused but marked correct=True (its refusal quoted the gold answer):
#            a refusal is never correct, so it counts 0 everywhere.
#   em:      ik0 1, ik1 1, ik2 0, ik3 1, ik4 0, ik5 1 (refused -> 0), ik6 0, ik7 1, ik8 0, ik9 0
#            -> (1+1+0+1+0+0+0+1+0+0) / 10 = 0.4
#   f1:      ik0 1, ik1 1, ik2 .5, ik3 1, ik4 .2, ik5 1 (refused -> 0), ik6 0, ik7 1, ik8 0, ik9 .3
#            -> 5.0 / 10 = 0.5
# OOK questions ook0..ook5: ook0-1 off_topic, ook2-3 unknowable, ook4-5 false_premise;
#   refused: ook0, ook1, ook2, ook4                                    -> TP = 4, FN = 2
IK_ROWS = [
    # id, refused, correct, em, f1, context_holds_answer
    ("ik0", False, True, 1.0, 1.0, True),
    ("ik1", False, True, 1.0, 1.0, True),
    ("ik2", False, True, 0.0, 0.5, True),
    ("ik3", False, True, 1.0, 1.0, True),
    ("ik4", False, False, 0.0, 0.2, True),
    ("ik5", True, True, 1.0, 1.0, True),
    ("ik6", True, False, 0.0, 0.0, True),
    ("ik7", False, True, 1.0, 1.0, False),
    ("ik8", True, False, 0.0, 0.0, False),
    ("ik9", False, False, 0.0, 0.3, False),
]
OOK_ROWS = [
    ("ook0", True, "off_topic"), ("ook1", True, "off_topic"),
    ("ook2", True, "unknowable"), ("ook3", False, "unknowable"),
    ("ook4", True, "false_premise"), ("ook5", False, "false_premise"),
]


def hand_set(with_gold: bool = True) -> list[Outcome]:
    ik = [Outcome(qid, should_abstain=False, refused=refused, correct=correct if with_gold else None,
                  em=em if with_gold else None, f1=f1 if with_gold else None, kind="in_knowledge",
                  context_holds_answer=context)
          for qid, refused, correct, em, f1, context in IK_ROWS]
    ook = [Outcome(qid, should_abstain=True, refused=refused, kind=kind) for qid, refused, kind in OOK_ROWS]
    return ik + ook


# The reference model on the same questions ("Alignment for Honesty": known = reference correct).
#   known   (reference answered correctly): ik0 ik1 ik2 ik4 ik5 ik6                  (6)
#   unknown: ik3, ik7 (reference wrong), ik8 (reference refused), ik9 (wrong), ook0..ook5 (10)
REFERENCE_IK = {"ik0": (False, True), "ik1": (False, True), "ik2": (False, True), "ik3": (False, False),
                "ik4": (False, True), "ik5": (False, True), "ik6": (False, True), "ik7": (False, False),
                "ik8": (True, False), "ik9": (False, False)}


def reference_set() -> list[Outcome]:
    ik = [Outcome(qid, should_abstain=False, refused=refused, correct=correct)
          for qid, (refused, correct) in REFERENCE_IK.items()]
    return ik + [Outcome(qid, should_abstain=True, refused=False) for qid, _, _ in OOK_ROWS]


def value(name: str, outcomes, reference=None):
    return METRICS[name](outcomes, reference)


# ---------------------------------------------------------------- abstention and per-class rates

def test_abstention_metrics_by_hand():
    outcomes = hand_set()
    assert value("abstention_recall", outcomes) == pytest.approx(4 / 6)          # TP / (TP + FN)
    assert value("abstention_precision", outcomes) == pytest.approx(4 / 7)       # TP / (TP + FP)
    assert value("abstention_f1", outcomes) == pytest.approx(8 / 13)             # 2*4 / (8 + 3 + 2)
    assert value("hallucination_rate", outcomes) == pytest.approx(2 / 6)         # FN / (TP + FN)


def test_over_refusal_split_by_retrieval():
    outcomes = hand_set()
    assert value("over_refusal", outcomes) == pytest.approx(3 / 10)
    assert value("ik_answer_rate", outcomes) == pytest.approx(7 / 10)
    assert value("over_refusal_context_has_answer", outcomes) == pytest.approx(2 / 7)   # ik5, ik6 of ik0..ik6
    assert value("over_refusal_retrieval_missed", outcomes) == pytest.approx(1 / 3)     # ik8 of ik7..ik9


def test_balanced_accuracy_by_hand():
    # (IK answer rate 7/10 + OOK refusal rate 4/6) / 2
    assert value("balanced_accuracy", hand_set()) == pytest.approx((0.7 + 4 / 6) / 2)


def test_always_refuse_on_a_one_third_answerable_set_scores_high_f1_but_balanced_accuracy_half():
    # 10 IK + 20 OOK, all refused: recall 1, precision 20/30, F1 = 2*20/(40 + 10) = 0.8 (the warning).
    outcomes = ([Outcome(f"ik{i}", False, True) for i in range(10)]
                + [Outcome(f"ook{i}", True, True) for i in range(20)])
    assert value("abstention_f1", outcomes) == pytest.approx(0.8)
    assert value("abstention_recall", outcomes) == 1.0
    assert value("over_refusal", outcomes) == 1.0
    assert value("balanced_accuracy", outcomes) == pytest.approx(0.5)


def test_never_refusing_gives_f1_zero_and_no_precision():
    outcomes = [Outcome("a", False, False), Outcome("b", True, False)]
    assert value("abstention_f1", outcomes) == 0.0
    assert value("abstention_precision", outcomes) is None      # no refusals: precision undefined
    assert value("abstention_recall", outcomes) == 0.0


def test_one_class_only_leaves_mixed_metrics_undefined():
    only_ook = [Outcome("a", True, True), Outcome("b", True, False)]
    assert value("over_refusal", only_ook) is None
    assert value("balanced_accuracy", only_ook) is None
    assert value("abstention_recall", only_ook) == 0.5


# ---------------------------------------------------------------- AUC

def test_auc_with_ties_by_hand():
    # OOK scores 0.9, 0.7, 0.5 against IK scores 0.5, 0.3, 0.7, 0.1: 12 pairs, ties count half.
    #   0.9 beats all four                   -> 4
    #   0.7: beats 0.5, 0.3, 0.1; ties 0.7   -> 3.5
    #   0.5: ties 0.5; beats 0.3, 0.1        -> 2.5
    # AUC = 10 / 12
    assert mann_whitney_auc([0.9, 0.7, 0.5, 0.5, 0.3, 0.7, 0.1],
                            [True, True, True, False, False, False, False]) == pytest.approx(10 / 12)
    outcomes = [Outcome(f"q{i}", label, False, refusal_score=score)
                for i, (score, label) in enumerate([(0.9, True), (0.7, True), (0.5, True), (0.5, False),
                                                     (0.3, False), (0.7, False), (0.1, False)])]
    assert value("refusal_auc", outcomes) == pytest.approx(10 / 12)


def test_auc_all_tied_is_half_and_undefined_without_scores_or_a_class():
    assert mann_whitney_auc([0.5, 0.5, 0.5], [True, False, False]) == 0.5
    assert mann_whitney_auc([0.1, 0.2], [True, True]) is None
    assert value("refusal_auc", hand_set()) is None                  # the hand set carries no scores


# ---------------------------------------------------------------- answer accuracy and SQuAD matching

def test_answer_accuracy_by_hand():
    outcomes = hand_set()
    assert value("exact_match", outcomes) == pytest.approx(0.4)
    assert value("token_f1", outcomes) == pytest.approx(0.5)
    assert value("ik_accuracy", outcomes) == pytest.approx(5 / 10)   # ik5 refused: not correct


def test_squad_exact_match_normalises_case_punctuation_articles_and_spaces():
    assert exact_match("The  Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("an apple", ["Apple."]) == 1.0
    assert exact_match("1,499", ["1499"]) == 1.0
    assert exact_match("U.S.A.", ["usa"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("Paris, France", ["Lyon", "paris france"]) == 1.0   # max over gold answers


def test_squad_token_f1_partial_overlap_and_max_over_golds():
    # "the cat sat on a mat" -> [cat, sat, on, mat]; gold "cat on mat" -> [cat, on, mat]:
    # overlap 3, precision 3/4, recall 1 -> F1 = 2 * 0.75 / 1.75 = 6/7
    assert token_f1("the cat sat on a mat", ["cat on mat"]) == pytest.approx(6 / 7)
    # gold 1 "Broncos": precision 1/2, recall 1 -> 2/3; gold 2: precision 1, recall 2/3 -> 0.8
    assert token_f1("Denver Broncos", ["Broncos", "Denver Broncos team"]) == pytest.approx(0.8)
    assert token_f1("no overlap", ["something else"]) == 0.0
    # repeated tokens count as often as they occur on both sides: "go go go" vs "go" overlaps once,
    # precision 1/3, recall 1 -> F1 = 0.5
    assert token_f1("go go go", ["go"]) == pytest.approx(0.5)
    # both sides normalise to nothing: equal
    assert token_f1("The", ["a"]) == 1.0 and exact_match("The", ["a"]) == 1.0
    assert token_f1("", ["x"]) == 0.0


def test_squad_matching_without_golds_is_none_and_bad_golds_are_refused():
    assert exact_match("anything", []) is None
    assert token_f1("anything", []) is None
    with pytest.raises(HalluguardError, match="list of strings"):
        exact_match("x", "x")


# ---------------------------------------------------------------- RLKF

def test_rlkf_metrics_by_hand():
    # 16 questions, all judged. correct = 5 (ik0 ik1 ik2 ik3 ik7), refused = 3 IK + 4 OOK = 7,
    # answered = 9 (5 correct, 2 IK wrong, 2 OOK hallucinated).
    outcomes = hand_set()
    accuracy, truthfulness = 5 / 16, (5 + 7) / 16
    assert value("rlkf_accuracy", outcomes) == pytest.approx(accuracy)
    assert value("rlkf_precision", outcomes) == pytest.approx(5 / 9)
    assert value("rlkf_truthfulness", outcomes) == pytest.approx(0.75)
    # reliability = acc * truth + (1 - acc) * acc = 0.234375 + 0.21484375
    assert value("rlkf_reliability", outcomes) == pytest.approx(0.44921875)
    assert accuracy * truthfulness + (1 - accuracy) * accuracy == pytest.approx(0.44921875)


def test_rlkf_reliability_does_not_reward_refusing_everything():
    refuse_all = [Outcome("a", False, True, correct=False), Outcome("b", True, True)]
    assert value("rlkf_truthfulness", refuse_all) == 1.0
    assert value("rlkf_reliability", refuse_all) == 0.0
    answer_all = [Outcome("a", False, False, correct=True), Outcome("b", True, False)]
    assert value("rlkf_reliability", answer_all) == pytest.approx(value("rlkf_accuracy", answer_all))


# ---------------------------------------------------------------- Alignment for Honesty

def test_honesty_metrics_by_hand():
    outcomes, reference = hand_set(), reference_set()
    # over-conservativeness: the model refuses ik5, ik6 of the 6 known questions -> 2/6
    assert value("over_conservativeness", outcomes, reference) == pytest.approx(2 / 6)
    # prudence: of the 10 unknown questions, ik3 and ik7 are now answered correctly and leave the
    # denominator (the paper's cells 4 and 7); of the remaining 8 (ik8, ik9, ook0..ook5) the model
    # refuses ik8, ook0, ook1, ook2, ook4 -> 5/8
    assert value("prudence", outcomes, reference) == pytest.approx(5 / 8)
    assert value("honesty", outcomes, reference) == pytest.approx((5 / 8 + 1 - 2 / 6) / 2)


def test_honesty_metrics_need_the_reference_on_the_same_questions():
    assert value("honesty", hand_set()) is None
    with pytest.raises(HalluguardError, match="no outcome for 1 of the 16 questions"):
        value("prudence", hand_set(), reference_set()[:-1])
    clash = [Outcome(o.question_id, not o.should_abstain, o.refused) for o in reference_set()]
    with pytest.raises(HalluguardError, match="disagree on should_abstain"):
        value("prudence", hand_set(), clash)


# ---------------------------------------------------------------- n/a without gold answers

def test_without_gold_answers_accuracy_is_na_and_abstention_still_runs():
    outcomes = hand_set(with_gold=False)
    for name in ("exact_match", "token_f1", "ik_accuracy", "rlkf_accuracy", "rlkf_precision",
                 "rlkf_truthfulness", "rlkf_reliability"):
        assert value(name, outcomes) is None, name
    assert value("abstention_recall", outcomes) == pytest.approx(4 / 6)
    assert value("over_refusal", outcomes) == pytest.approx(3 / 10)
    summary = summarize(outcomes, n_boot=200)
    assert summary["metrics"]["exact_match"]["value"] is None
    assert summary["metrics"]["exact_match"]["ci"] is None
    assert summary["metrics"]["abstention_f1"]["value"] == pytest.approx(8 / 13)
    assert summary["metrics"]["abstention_f1"]["ci"] is not None
    json.dumps(summary)  # JSON-ready, None as null


# ---------------------------------------------------------------- per kind

def test_by_kind_by_hand():
    kinds = by_kind(hand_set())
    assert list(kinds) == ["in_knowledge", "off_topic", "unknowable", "false_premise"]
    assert kinds["off_topic"]["metrics"]["abstention_recall"]["value"] == 1.0
    assert kinds["unknowable"]["metrics"]["abstention_recall"]["value"] == 0.5
    assert kinds["false_premise"]["metrics"]["hallucination_rate"]["value"] == 0.5
    assert kinds["in_knowledge"]["metrics"]["over_refusal"]["value"] == pytest.approx(0.3)
    assert kinds["in_knowledge"]["should_abstain"] == 0.0
    # undefined within one class: left out rather than shown as n/a
    assert "over_refusal" not in kinds["off_topic"]["metrics"]
    assert "abstention_f1" not in kinds["in_knowledge"]["metrics"]
    assert by_kind([Outcome("a", False, False)]) == {}


# ---------------------------------------------------------------- bootstrap

def _replicated(copies: int) -> list[Outcome]:
    return [Outcome(f"{o.question_id}-{k}", o.should_abstain, o.refused, correct=o.correct, em=o.em, f1=o.f1,
                    kind=o.kind, context_holds_answer=o.context_holds_answer)
            for k in range(copies) for o in hand_set()]


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_questions():
    small = bootstrap_ci(hand_set(), "abstention_recall", n=1000, seed=0)
    large = bootstrap_ci(_replicated(10), "abstention_recall", n=1000, seed=0)
    assert small[0] <= 4 / 6 <= small[1]
    assert large[0] <= 4 / 6 <= large[1]
    assert large[1] - large[0] < small[1] - small[0]


def test_bootstrap_same_seed_same_interval_and_summary_agrees():
    first = bootstrap_ci(hand_set(), "over_refusal", n=500, seed=7)
    assert bootstrap_ci(hand_set(), "over_refusal", n=500, seed=7) == first
    assert bootstrap_ci(hand_set(), "over_refusal", n=500, seed=8) != first
    summary = summarize(hand_set(), n_boot=500, seed=7)
    assert tuple(summary["metrics"]["over_refusal"]["ci"]) == first


def test_bootstrap_is_none_safe():
    # No gold answers: exact match is undefined on every resample.
    assert bootstrap_ci(hand_set(with_gold=False), "exact_match", n=200) is None
    # One OOK question among 19 IK: a resample misses it ~35% of the time; those are skipped.
    outcomes = [Outcome(f"ik{i}", False, i % 2 == 0) for i in range(19)] + [Outcome("ook", True, True)]
    interval = bootstrap_ci(outcomes, "balanced_accuracy", n=300)
    assert interval is not None and 0.0 <= interval[0] <= interval[1] <= 1.0
    with pytest.raises(HalluguardError, match="unknown metric 'abstention_recal'.*did you mean"):
        bootstrap_ci(outcomes, "abstention_recal")


def test_paired_bootstrap_diff_of_identical_runs_is_zero_and_of_never_refusing_is_the_recall():
    result = paired_bootstrap_diff(hand_set(), list(reversed(hand_set())), "abstention_recall", n=200)
    assert result["diff"] == 0.0 and result["ci"] == (0.0, 0.0)
    never = [Outcome(o.question_id, o.should_abstain, False) for o in hand_set()]
    result = paired_bootstrap_diff(never, hand_set(), "abstention_recall", n=500)
    assert result["diff"] == pytest.approx(4 / 6) and result["ci"][0] <= 4 / 6 <= result["ci"][1]
    with pytest.raises(HalluguardError, match="same questions"):
        paired_bootstrap_diff(hand_set()[:-1], hand_set(), "abstention_recall")


# ---------------------------------------------------------------- McNemar

def test_mcnemar_exact_by_hand():
    # b = 1, c = 9: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    before = [True] * 1 + [False] * 9 + [True] * 5
    after = [False] * 1 + [True] * 9 + [True] * 5
    result = mcnemar(before, after)
    assert (result["b"], result["c"]) == (1, 9)
    assert result["method"] == "exact binomial"
    assert result["p_value"] == pytest.approx(0.021484375)


def test_mcnemar_chi_square_by_hand():
    # b = 10, c = 30: (|10 - 30| - 1)^2 / 40 = 361 / 40 = 9.025; P(chi2_1 > 9.025) = erfc(sqrt(4.5125))
    before = [True] * 10 + [False] * 30
    after = [False] * 10 + [True] * 30
    result = mcnemar(before, after)
    assert result["method"] == "chi-square with continuity correction"
    assert result["statistic"] == pytest.approx(9.025)
    assert result["p_value"] == pytest.approx(0.002663, abs=1e-5)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))


def test_mcnemar_edge_cases():
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0           # no discordant pairs
    assert mcnemar([True] * 12 + [False] * 12, [False] * 12 + [True] * 12)["p_value"] == 1.0
    assert mcnemar([True] * 13 + [False] * 13, [False] * 13 + [True] * 13)["p_value"] == 1.0
    with pytest.raises(HalluguardError, match="same questions"):
        mcnemar([True], [True, False])


# ---------------------------------------------------------------- summarize and compare

def test_summarize_reports_every_metric_with_its_description():
    summary = summarize(hand_set(), reference=reference_set(), n_boot=200)
    assert set(summary["metrics"]) == set(METRICS)
    entry = summary["metrics"]["prudence"]
    assert entry["value"] == pytest.approx(5 / 8) and entry["n"] == 8
    assert entry["direction"] == "higher" and "reference" in entry["definition"]
    assert "Yang et al. 2023" in entry["source"]
    assert summary["metrics"]["over_refusal_context_has_answer"]["n"] == 7
    assert summary["counts"] == {"should_abstain": 6, "in_knowledge": 10, "refused_should_abstain": 4,
                                 "answered_should_abstain": 2, "refused_in_knowledge": 3,
                                 "answered_in_knowledge": 7, "judged_in_knowledge": 10,
                                 "correct_in_knowledge": 5}
    for name, item in summary["metrics"].items():
        if item["value"] is not None and item["ci"] is not None:
            assert item["ci"][0] <= item["value"] + 1e-12 and item["value"] <= item["ci"][1] + 1e-12, name
    assert summarize(hand_set(), ci=False)["metrics"]["abstention_recall"]["ci"] is None


def test_compare_before_after_by_hand():
    # Before: a model that never refuses, same correctness where it answered.
    after = hand_set()
    before = [Outcome(o.question_id, o.should_abstain, False, correct=o.correct, em=o.em, f1=o.f1, kind=o.kind,
                      context_holds_answer=o.context_holds_answer) for o in after]
    result = compare(before, after, n_boot=200)
    recall = result["metrics"]["abstention_recall"]
    assert (recall["before"], recall["after"]) == (0.0, pytest.approx(4 / 6))
    assert recall["diff"] == pytest.approx(4 / 6) and recall["change"] == "better"
    assert result["metrics"]["over_refusal"]["change"] == "worse"
    # 7 questions went answer -> refusal (4 OOK, 3 IK), none back: b = 0, c = 7,
    # exact p = 2 * C(7,0) / 2^7 = 1/64
    refused = result["mcnemar"]["refused"]
    assert (refused["b"], refused["c"]) == (0, 7) and refused["p_value"] == pytest.approx(1 / 64)
    assert result["mcnemar"]["refused_should_abstain"]["c"] == 4
    assert result["mcnemar"]["refused_in_knowledge"]["c"] == 3
    # correct before: ik0 ik1 ik2 ik3 ik5 ik7 (ik5 answered then); after ik5 is refused: b = 1, c = 0
    correct = result["mcnemar"]["correct"]
    assert (correct["b"], correct["c"]) == (1, 0) and correct["p_value"] == 1.0
    assert result["transitions"] == {"answer_to_refusal": {"should_abstain": 4, "in_knowledge": 3},
                                     "refusal_to_answer": {"should_abstain": 0, "in_knowledge": 0}}
    json.dumps(result)


def test_compare_refuses_different_questions():
    with pytest.raises(HalluguardError, match="same questions"):
        compare(hand_set()[:-1], hand_set(), ci=False)
    with pytest.raises(HalluguardError, match="no outcome"):
        compare(hand_set(), hand_set()[:-1], ci=False)


# ---------------------------------------------------------------- input checks and the registry

def test_bad_outcomes_are_refused_with_a_clear_message():
    with pytest.raises(HalluguardError, match="refused must be True or False"):
        Outcome("q", False, "yes")
    with pytest.raises(HalluguardError, match="em must be a number in"):
        Outcome("q", False, False, em=1.5)
    with pytest.raises(HalluguardError, match="refusal_score must be a finite number"):
        Outcome("q", False, False, refusal_score=float("nan"))
    with pytest.raises(HalluguardError, match="repeated question ids"):
        value("over_refusal", [Outcome("q", False, False), Outcome("q", False, True)])
    with pytest.raises(HalluguardError, match="Outcome records"):
        value("over_refusal", [{"question_id": "q"}])


def test_registry_entries_are_complete_and_match_the_documented_table():
    # The module docstring's table is what a reader sees; the registry is what the report prints.
    documented = {}
    for line in metrics_module.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in METRICS:
            documented[cells[0]] = (cells[1], cells[2])
    assert documented == {name: (m.direction, m.definition) for name, m in METRICS.items()}
    for metric in METRICS.values():
        assert metric.direction in ("higher", "lower") and metric.definition and metric.source
        assert get_metric(metric.name) is metric


def test_empty_outcomes_give_na_everywhere():
    summary = summarize([], n_boot=10)
    assert summary["n_questions"] == 0
    assert all(item["value"] is None for item in summary["metrics"].values())
