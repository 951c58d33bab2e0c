from omegaconf import OmegaConf

from data_builders.probe import AMBIGUOUS, IK, OOK, agreement, probe_question
from halluguard.config import ProbeConfig
from halluguard.kb import Passage, Question
from halluguard.retrieval import Hit

CFG = OmegaConf.structured(ProbeConfig)  # ook < 0.30, ik >= 0.55 with gap >= 0.05
P1 = Passage(id="p1", text="Refunds are paid within 14 days to the original card.")
P2 = Passage(id="p2", text="The Orbit plan costs 25 euros a month.")


def hits(*scores, passages=(P1, P2)):
    return [Hit(p, s, i) for i, (p, s) in enumerate(zip(passages, scores))]


def q(label=None, answers=(), kind=""):
    return Question(id="q", question="?", label=label, answers=list(answers), kind=kind)


def test_low_similarity_is_ook_even_with_a_dataset_label_missing():
    r = probe_question(q(), hits(0.2, 0.1), CFG)
    assert (r.probe_label, r.label, r.top1, r.gap) == (OOK, OOK, 0.2, 0.1)


def test_gold_answer_in_evidence_is_ik():
    r = probe_question(q("ik", ["14 days"]), hits(0.5, 0.45), CFG)
    assert r.gold_in_evidence is True and r.probe_label == IK and r.label == IK


def test_gold_answer_missing_from_evidence_is_gray_zone_even_for_dataset_ik():
    r = probe_question(q("ik", ["30 days"]), hits(0.7, 0.4), CFG)
    assert r.gold_in_evidence is False and r.probe_label == AMBIGUOUS and r.label == AMBIGUOUS


def test_no_gold_answer_uses_similarity_and_gap():
    assert probe_question(q(), hits(0.7, 0.5), CFG).probe_label == IK
    assert probe_question(q(), hits(0.7, 0.68), CFG).probe_label == AMBIGUOUS  # two half-matches
    assert probe_question(q(), hits(0.45, 0.2), CFG).probe_label == AMBIGUOUS  # between thresholds


def test_dataset_ook_label_is_kept_for_training_whatever_retrieval_says():
    r = probe_question(q("ook"), hits(0.8, 0.3), CFG)
    assert r.probe_label == IK and r.label == OOK


def test_no_hits_closed_book():
    r = probe_question(q("ook"), [], CFG)
    assert r.probe_label == AMBIGUOUS and r.label == OOK and r.top1 == 0.0


def test_agreement_counts_against_hand_computed_values():
    qs = [q("ik", ["14 days"], "in_knowledge"), q("ik", ["25 euros"], "in_knowledge"), q("ook", kind="off_topic"),
          q("ook", kind="uncovered"), q(None)]
    rs = [probe_question(qs[0], hits(0.6, 0.3), CFG),   # ik -> ik
          probe_question(qs[1], hits(0.2, 0.1), CFG),   # ik -> ook (wrong)
          probe_question(qs[2], hits(0.1, 0.0), CFG),   # ook -> ook
          probe_question(qs[3], hits(0.7, 0.4), CFG),   # ook -> ik (wrong)
          probe_question(qs[4], hits(0.7, 0.4), CFG)]   # unlabelled: not counted
    a = agreement(qs, rs)
    assert a["n"] == 4 and a["coverage"] == 1.0 and a["accuracy_decided"] == 0.5
    assert a["ook_precision"] == 0.5 and a["ook_recall"] == 0.5
    assert a["confusion"] == {"ik": {"ik": 1, "ook": 1}, "ook": {"ook": 1, "ik": 1}}
    assert agreement([q(None)], rs[:1]) is None
