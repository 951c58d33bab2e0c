"""Knowledge probe: is a question in-knowledge (ik), out-of-knowledge (ook), or ambiguous?

From retrieval alone (``probe_label``), using three signals:

* top-1 similarity: below ``ook_max_top1`` nothing in the knowledge base is about the question;
* the gap between the top two hits: one clear source, or several half-matches;
* whether a gold answer appears in the passages the prompt will show, when a gold answer exists.

Rules, in order: top-1 < ``ook_max_top1`` -> ook. A gold answer in the evidence -> ik. A gold
answer that exists but is not in the evidence -> ambiguous (retrieval missed it: refusing is
defensible, answering is possible; either way the pair would be noise). No gold answer: top-1 >=
``ik_min_top1`` with a gap >= ``ik_min_gap`` -> ik, otherwise ambiguous.

The final ``label`` used for training keeps the dataset's own label where it has one, but an ik
question whose gold answer is missing from the evidence becomes ambiguous: in RAG mode the model
cannot answer it from what it is shown. Ambiguous questions are reported and kept out of training.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from data_builders.answer_types import contains_answer
from data_builders.records import ProbeResult
from halluguard.kb import Question
from halluguard.retrieval import Hit

IK, OOK, AMBIGUOUS = "ik", "ook", "ambiguous"
PROBE_LABELS = (IK, OOK, AMBIGUOUS)


def probe_question(question: Question, hits: Sequence[Hit], cfg) -> ProbeResult:
    scores = [h.score for h in hits]
    top1 = scores[0] if scores else 0.0
    gap = top1 - scores[1] if len(scores) > 1 else top1
    evidence_text = "\n".join(h.passage.text for h in hits)
    gold_in = contains_answer(evidence_text, question.answers) if question.answers else None

    if not hits:
        probe, why = AMBIGUOUS, "no retrieval (closed book)"
    elif top1 < cfg.ook_max_top1:
        probe, why = OOK, f"top-1 similarity {top1:.2f} < {cfg.ook_max_top1}"
    elif gold_in is True:
        probe, why = IK, "gold answer in the evidence"
    elif gold_in is False:
        probe, why = AMBIGUOUS, "gold answer not in the evidence (retrieval miss)"
    elif top1 >= cfg.ik_min_top1 and gap >= cfg.ik_min_gap:
        probe, why = IK, f"top-1 {top1:.2f} >= {cfg.ik_min_top1} with gap {gap:.2f}"
    else:
        probe, why = AMBIGUOUS, f"top-1 {top1:.2f} between thresholds or gap {gap:.2f} small"

    label, reason = probe, why
    if question.label == OOK:
        label, reason = OOK, "dataset label"
    elif question.label == IK:
        if gold_in is False:
            label, reason = AMBIGUOUS, "dataset says ik, but the gold answer is not in the evidence"
        else:
            label, reason = IK, "dataset label" + (" (gold answer in the evidence)" if gold_in else "")
    return ProbeResult(question_id=question.id, evidence_ids=[h.passage.id for h in hits],
                       scores=[round(s, 4) for s in scores], top1=round(top1, 4), gap=round(gap, 4),
                       gold_in_evidence=gold_in, probe_label=probe, label=label, reason=reason)


def probe_questions(questions: Sequence[Question], hits: Sequence[Sequence[Hit]], cfg) -> list[ProbeResult]:
    return [probe_question(q, h, cfg) for q, h in zip(questions, hits)]


def agreement(questions: Sequence[Question], results: Sequence[ProbeResult]) -> Optional[dict]:
    """How the retrieval-only probe agrees with the dataset's own ik/ook labels.

    ``accuracy_decided``: share correct among the questions the probe decided (not ambiguous);
    ``coverage``: share it decided; ``ook_recall`` / ``ook_precision``: for the ook class;
    ``confusion``: dataset label -> probe label -> count. None when no question has a label.
    """
    pairs = [(q.label, r.probe_label) for q, r in zip(questions, results) if q.label in (IK, OOK)]
    if not pairs:
        return None
    confusion = {gold: dict(Counter(p for g, p in pairs if g == gold)) for gold in (IK, OOK)}
    decided = [(g, p) for g, p in pairs if p != AMBIGUOUS]
    ook_pred = [g for g, p in pairs if p == OOK]
    ook_gold = [p for g, p in pairs if g == OOK]
    by_kind: dict[str, Counter] = {}
    for q, r in zip(questions, results):
        if q.label in (IK, OOK):
            by_kind.setdefault(q.kind or "unknown", Counter())[r.probe_label] += 1
    return {
        "n": len(pairs),
        "coverage": round(len(decided) / len(pairs), 4),
        "accuracy_decided": round(sum(g == p for g, p in decided) / len(decided), 4) if decided else None,
        "ook_precision": round(sum(g == OOK for g in ook_pred) / len(ook_pred), 4) if ook_pred else None,
        "ook_recall": round(sum(p == OOK for p in ook_gold) / len(ook_gold), 4) if ook_gold else None,
        "confusion": confusion,
        "probe_label_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
    }
