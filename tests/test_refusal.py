"""The refusal detector: measured on the labelled sets, plus its contract (range, threshold, empties)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import halluguard
from halluguard.errors import HalluguardError
from halluguard.refusal import ABSTENTION_PROTOTYPES, ANSWER_PROTOTYPES, RefusalDetector, lead_of

EVAL_DIR = Path(halluguard.__file__).parent / "data" / "refusal_eval"
CATEGORIES = {  # category -> is it an abstention?
    "refusal": True, "clarification": True, "redirect": True, "policy_phrasing": True,
    "hedged_answer": False, "plain_answer": False, "negated_answer": False, "answer_with_caveat": False,
}
# en_heldout.jsonl: lines 1-81 were written after the first tuning round, lines 82+ after the second.
HELDOUT_BATCH1 = 81


def load(name: str) -> list[dict]:
    with open(EVAL_DIR / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?;:])\s+", text)
    return [" ".join(re.sub(r"[^\w\s']", " ", p.lower()).split()) for p in parts if p.strip()]


def measure(rows: list[dict], predicted: np.ndarray) -> tuple[float, float, dict[str, float], str]:
    truth = np.array([r["refusal"] for r in rows])
    tp = int((predicted & truth).sum())
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    per_cat = {}
    for cat in sorted({r["category"] for r in rows}):
        mask = np.array([r["category"] == cat for r in rows])
        per_cat[cat] = float(np.mean(predicted[mask] == truth[mask]))
    wrong = [f"  [{r['category']}] {r['response']!r}" for r, p, t in zip(rows, predicted, truth) if p != t]
    report = (f"precision={precision:.3f} recall={recall:.3f} (n={len(rows)}, refusals={int(truth.sum())})\n"
              + "\n".join(f"  {c:20s} accuracy={a:.3f}" for c, a in per_cat.items())
              + ("\nmisclassified:\n" + "\n".join(wrong) if wrong else ""))
    return precision, recall, per_cat, report


@pytest.fixture(scope="module")
def detector(encoder):
    return RefusalDetector(encoder)


@pytest.fixture(scope="module")
def labelled():
    return load("en.jsonl")


@pytest.fixture(scope="module")
def heldout():
    return load("en_heldout.jsonl")


@pytest.fixture(scope="module")
def policy_answers():
    return load("en_policy.jsonl")


# ---------------------------------------------------------------- the labelled data itself

@pytest.mark.parametrize("name,minimum", [("en.jsonl", 260), ("en_heldout.jsonl", 60), ("en_policy.jsonl", 80)])
def test_labelled_files_follow_the_schema(name, minimum):
    rows = load(name)
    assert len(rows) >= minimum
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["response"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "response", "refusal", "category"}, r
        assert r["category"] in CATEGORIES, r
        assert r["refusal"] is CATEGORIES[r["category"]], r
        assert r["response"].strip(), r
    if name == "en.jsonl":
        counts = Counter(r["category"] for r in rows)
        for cat in CATEGORIES:
            assert counts[cat] >= (20 if cat == "policy_phrasing" else 30), (cat, counts[cat])


def test_prototypes_and_labelled_sets_share_no_sentence(labelled, heldout, policy_answers):
    proto_sentences = {s for p in ABSTENTION_PROTOTYPES + ANSWER_PROTOTYPES for s in sentences(p)}
    assert 30 <= len(ABSTENTION_PROTOTYPES) <= 60 and 30 <= len(ANSWER_PROTOTYPES) <= 60
    for rows in (labelled, heldout, policy_answers):
        for r in rows:
            shared = proto_sentences & set(sentences(r["response"]))
            assert not shared, (r["id"], shared)
    held = {r["response"] for r in heldout}
    assert not held & {r["response"] for r in labelled}


# ---------------------------------------------------------------- measured quality

def test_precision_and_recall_on_the_labelled_set(detector, labelled):
    predicted = detector.is_refusal([r["response"] for r in labelled])
    precision, recall, _, report = measure(labelled, predicted)
    print("\nen.jsonl:", report)
    assert precision >= 0.95 and recall >= 0.95, report


def test_precision_and_recall_on_the_heldout_set(detector, heldout):
    predicted = detector.is_refusal([r["response"] for r in heldout])
    precision, recall, _, report = measure(heldout, predicted)
    _, _, _, late = measure(heldout[HELDOUT_BATCH1:], predicted[HELDOUT_BATCH1:])
    print("\nen_heldout.jsonl:", report, "\n  of which lines 82+:", late.splitlines()[0])
    assert precision >= 0.90 and recall >= 0.90, report


def test_precision_and_recall_on_a_trained_policys_answers(detector, policy_answers):
    """80 sampled held-out answers of the fifth GPU run's SFT reference and PPO seeds, drawn at random and
    labelled before they were scored (halluguard/data/refusal_eval/README.md): 1.000 / 1.000 when written."""
    predicted = detector.is_refusal([r["response"] for r in policy_answers])
    precision, recall, _, report = measure(policy_answers, predicted)
    print("\nen_policy.jsonl:", report)
    assert precision >= 0.95 and recall >= 0.95, report


def test_patterns_only_detector_catches_every_policy_phrasing(labelled):
    patterns_only = RefusalDetector(encoder=None)
    policy = [r["response"] for r in labelled if r["category"] == "policy_phrasing"]
    flagged = patterns_only.is_refusal(policy)
    missed = [p for p, f in zip(policy, flagged) if not f]
    assert not missed, missed
    # and it does not mistake answers containing a negation for refusals
    negated = [r["response"] for r in labelled if r["category"] == "negated_answer"]
    assert not patterns_only.is_refusal(negated).any()


def test_negated_answers_are_not_refusals(detector, labelled):
    negated = [r["response"] for r in labelled if r["category"] == "negated_answer"]
    negated += ["No, roaming is not charged in the EU.", "You do not need a PIN.",
                "There is no fee for that.", "No."]
    flagged = detector.is_refusal(negated)
    assert not flagged.any(), [n for n, f in zip(negated, flagged) if f]


def test_invented_policy_phrasings_are_refusals(detector):
    invented = ["The question is not known.", "No answer is provided.", "The passages do not mention the fee.",
                "There is no information about roaming in Peru.", "I'm unable to find the warranty length.",
                "It is not stated.", "Not specified in the passages."]
    for det in (detector, RefusalDetector(encoder=None)):
        assert det.is_refusal(invented).all(), [t for t, f in zip(invented, det.is_refusal(invented)) if not f]


def test_an_answer_that_hedges_later_is_an_answer(detector):
    responses = ["Refunds take 14 days. I don't know whether bonus credit is included.",
                 "I think it is 9.99 euros, but check your contract."]
    assert not detector.is_refusal(responses).any()
    assert lead_of(responses[0]) == "Refunds take 14 days."
    assert lead_of("Sorry. I don't have that information.") == "I don't have that information."


# ---------------------------------------------------------------- contract

def test_scores_lie_in_unit_interval_and_flags_shrink_as_threshold_rises(detector, labelled):
    responses = [r["response"] for r in labelled[::4]]
    scores = detector.score(responses)
    assert scores.dtype == np.float64 and scores.shape == (len(responses),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    previous = None
    for t in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0):
        flags = RefusalDetector(encoder=None, threshold=t).is_refusal(responses)  # patterns only: fast
        via_scores = RefusalDetector(encoder=None).score(responses) >= t
        assert np.array_equal(flags, via_scores)
        if previous is not None:
            assert not np.any(flags & ~previous)  # a higher threshold never adds a refusal
        previous = flags
    # the same with the encoder, on its scores
    counts = [int((scores >= t).sum()) for t in np.linspace(0, 1, 11)]
    assert counts == sorted(counts, reverse=True)
    detector_high = RefusalDetector(detector.encoder, threshold=0.9)
    assert np.array_equal(detector_high.is_refusal(responses), scores >= 0.9)


def test_detector_is_deterministic(detector, labelled):
    responses = [r["response"] for r in labelled[:60]]
    first = detector.score(responses)
    assert np.array_equal(first, detector.score(responses))
    assert np.allclose(first, RefusalDetector(detector.encoder).score(responses), rtol=0, atol=1e-6)
    assert np.array_equal(first[::-1], detector.score(responses[::-1]))


def test_empty_inputs(detector):
    for det in (detector, RefusalDetector(encoder=None)):
        assert det.score([]).shape == (0,)
        flags = det.is_refusal([])
        assert flags.shape == (0,) and flags.dtype == bool
        scores = det.score(["", "   ", "I don't know."])
        assert scores[0] == 0.5 and scores[1] == 0.5 and scores[2] > 0.5
        assert det.is_refusal(["", "  "]).tolist() == [False, False]


def test_constructor_and_from_config(encoder):
    with pytest.raises(HalluguardError, match="supported"):
        RefusalDetector(language="de")
    with pytest.raises(HalluguardError):
        RefusalDetector(threshold=1.5)
    assert RefusalDetector.from_config().encoder is None
    assert RefusalDetector.from_config(retriever_cfg=None, encoder=encoder).encoder is encoder
    with pytest.raises(TypeError):
        RefusalDetector().score("a single string")


def test_skipping_decided_responses_keeps_every_verdict(encoder):
    import json as _json
    from pathlib import Path as _Path

    from halluguard.config import package_data
    from halluguard.refusal import RefusalDetector

    rows = [_json.loads(line) for line in _Path(package_data("refusal_eval/en.jsonl")).read_text().splitlines()]
    texts = [r["response"] for r in rows]
    full = RefusalDetector(encoder=encoder).is_refusal(texts)
    fast = RefusalDetector(encoder=encoder, skip_decided=True).is_refusal(texts)
    assert (full == fast).all()


def test_a_refusal_that_names_its_passages_at_length_is_a_refusal():
    """Seen in PPO's held-out answers on the demo: the source is named with its section titles, which put the
    negation more than 40 characters after "passages"; the same opening with a statement stays an answer."""
    from halluguard.refusal import pattern_logit

    refusal = ("The passages on Marketing messages and Cooling-off period for remote purchases don't answer the "
               "question of when the holiday suspension of marketing messages ends.")
    answer = ("The passages on Call and text records say that text message metadata, such as the numbers involved, "
              "is kept for 24 months and then deleted.")
    assert pattern_logit(lead_of(refusal)) > 0
    assert pattern_logit(lead_of(answer)) <= 0


def test_degenerate_output_is_not_a_refusal_even_where_the_prototypes_lean_that_way(detector):
    """A tiny or collapsing policy's byte soup must not earn the refusal reward: MiniLM alone put
    "asdf" at 0.77 and "xk zq" at 0.71 (refusal side) before short leads were left to the prior."""
    junk = ["asdf", "xk zq", "qe", "\x133\ufffd\ufffdqe", "1. 1. 1.1.1.1"]
    assert not detector.is_refusal(junk).any(), dict(zip(junk, detector.score(junk).round(3)))
    # Short leads with an abstention pattern keep their verdict.
    assert detector.is_refusal(["No idea.", "Unknown.", "Which plan?"]).all()


# Misses found reading the fourth and sixth GPU runs' held-out answers (README, "A fourth GPU run"), once strict
# xfails: the prototype term called quote-form answers about requests and data refusals (0.65-0.85), a quoted
# "handles questions about" fired the redirect pattern, and "says nothing about" had no pattern (0.32).
def test_quote_form_answers_are_answers(detector):
    quotes = ["The section on Changing your number says: Number change requests are made in the Account section "
              "of the Nimbus Hub app.",
              "The section on Data breaches says: Breaches are also reported to the national data protection "
              "authority.",
              "The section on Data protection officer says: The data protection officer handles questions about how "
              "personal data is used and oversees Nimbus's compliance with data protection law.",
              "According to the information on Requests from authorities, Nimbus releases customer data to police "
              "or other authorities only when presented with a valid legal order.",
              "Based on the passage on Requests from authorities, Nimbus publishes a transparency report every March."]
    assert not detector.is_refusal(quotes).any(), dict(zip(quotes, detector.score(quotes).round(3)))


def test_a_quote_form_lead_that_declines_stays_a_refusal(detector):
    refusals = ["The section on Changing your number says nothing about the fee you're asking about.",
                "Based on the passages on Faulty devices and Cooling-off period for remote purchases, I can't tell you "
                "the duration you're asking about.",
                "According to the information on Requests from authorities, the number isn't stated.",
                "Based on the passages on Location data and Fair use in Zone 1, they don't state the exact duration "
                "you're asking about.",
                "Based on the passages on Roaming and Billing, it is unclear what the fee is.",
                "Based on the passage on Roaming, I'm afraid that is beyond what I know.",
                "According to the information on Roaming, that detail is missing from what I have."]
    assert detector.is_refusal(refusals).all(), dict(zip(refusals, detector.score(refusals).round(3)))


def test_two_refusals_a_trained_policy_wrote_are_refusals(detector):
    """Found in the fifth GPU run's sampled held-out answers (README, "A fifth GPU run"): a contraction glued to
    the next word, and "no right answer". Answers with the same shapes stay answers."""
    refusals = ["Based on the passages on Long stays abroad and Data roaming cap, I can'ttell you the duration you're "
                "asking about.",
                "Based on the passages on Data Boost add-ons and Scalar 2, no right answer exists."]
    answers = ["The restocking fee doesn'tapply to faulty devices: they are refunded in full.",
               "Based on the passage on Data Boost add-ons, 5 GB costs €5 and 15 GB costs €10."]
    assert detector.is_refusal(refusals).all(), detector.score(refusals)
    assert not detector.is_refusal(answers).any(), detector.score(answers)


def test_refusals_the_sixth_gpu_run_wrote(detector):
    """Called answers before (README, "Building negative samples"); answers of the same shapes stay answers."""
    refusals = ["We don't have the prices for Kestrel K9 Pro and Kestrel Watch S in the passages on Kestrel K9 Pro "
                "and Kestrel Watch S, so any answer would be a guess.",
                "Based on the passages on Requesting a copy of personal data and Data kept after closure, I can't "
                "guess the duration you're asking about.",
                "The information I was given doesn't state whether it applies to customers under 30.",
                "That isn't something I can answer from the passage on Paying for accessories in instalments.",
                "The sections on Lumo A5 and Lumo A3 don't state the SAR value for Lumo A5.",
                "Upgrading to 2-year-protection isn't covered under the material on Nimbus Fix repairs.",
                "No, the time period you're asking about isn't covered in what I have.",
                "There isn't an answer to this, the amount isn't in the passages on Compensation for network outages.",
                "Based on the passages on International Calling 100 add-on and Changing your number, I can't narrow it "
                "down to a specific amount.",
                "We don't have the prices for Kestrel K9 in our current version, so any answer would be a guess."]
    # an answer with a caveat commits first; a negation inside quoted or stated content is not a source's denial
    answers = ["We don't have a store in Zone 3, but you can order online.",
               "I don't have to pay roaming charges in Zone 1: Roam Like Home covers it.",
               "€649: The price you're asking about isn't covered in what I have.",
               "5 working days: the time period for the order on items isn't covered in this information.",
               "Based on the passage on Returns of store purchases, purchases made in a Nimbus Point store are not "
               "covered by the legal cooling-off period.",
               "The section on Returns of store purchases says: Purchases made in a Nimbus Point store are not covered "
               "by the legal cooling-off period.",
               "Based on the section on Refunds, Nimbus doesn't provide refunds for prepaid credit."]
    assert detector.is_refusal(refusals).all(), dict(zip(refusals, detector.score(refusals).round(3)))
    assert not detector.is_refusal(answers).any(), dict(zip(answers, detector.score(answers).round(3)))


# A known miss, strict xfail: the day the detector gets it right this fails and should become a plain test.
@pytest.mark.xfail(strict=True, reason="the source-denial pattern reads the content's 'doesn't provide' as the passage's "
                                       "(0.90); the policy's own denials have the same shape ('..., they don't state')")
def test_known_miss_a_content_negation_after_based_on_the_passage_is_an_answer(detector):
    assert not detector.is_refusal(["Based on the passage on Refunds, Nimbus doesn't provide refunds for prepaid "
                                    "credit."]).any()
