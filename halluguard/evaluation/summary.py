"""Every metric for one model (:func:`summarize`), per question kind (:func:`by_kind`), and before vs after (:func:`compare`).

The dictionaries are JSON-ready (floats, ints, strings, lists, None); None is "n/a".
"""

from __future__ import annotations

from collections.abc import Sequence

from halluguard.evaluation.metrics import METRICS, Metric
from halluguard.evaluation.outcomes import CORRECT, Outcome, OutcomeTable, build_table, pair_runs
from halluguard.evaluation.stats import bootstrap_intervals, difference, mcnemar


def summarize(outcomes: Sequence[Outcome], reference: Sequence[Outcome] | None = None, ci: bool = True,
              n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """All registered metrics for one model, with bootstrap intervals, and the per-kind breakdown.

    Returns ``{"n_questions", "counts", "has_reference", "bootstrap", "metrics", "by_kind"}`` where
    ``metrics[name]`` is ``{"value", "ci", "n", "direction", "definition", "source", "group"}``
    (``ci`` is ``[low, high]`` or None; ``n`` the number of questions the value is computed over)
    and ``by_kind`` is as :func:`by_kind` returns it. ``reference`` is the reference model's
    outcomes on the same questions, for the honesty metrics (they are n/a without it).
    """
    table = build_table(outcomes, reference)
    values = _metric_values(table, list(METRICS.values()), ci, n_boot, seed, alpha)
    return {
        "n_questions": len(table),
        "counts": _counts(table),
        "has_reference": reference is not None,
        "bootstrap": {"n": n_boot, "seed": seed, "alpha": alpha, "method": "percentile, over questions"}
        if ci else None,
        "metrics": {name: {**entry, **_description(METRICS[name])} for name, entry in values.items()},
        "by_kind": _by_kind(table, ci, n_boot, seed, alpha),
    }


def by_kind(outcomes: Sequence[Outcome], reference: Sequence[Outcome] | None = None, ci: bool = False,
            n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """The per-kind metrics on the questions of each kind, in order of first appearance.

    ``{kind: {"n_questions", "should_abstain", "metrics": {name: {"value", "ci", "n"}}}}``.
    Only metrics that make sense within one class are computed (abstention recall, hallucination
    and over-refusal rates, accuracy, RLKF and honesty metrics; not precision, F1, balanced
    accuracy or AUC), and a metric undefined on a kind (over-refusal on an OOK kind) is left out.
    ``should_abstain`` is the share of the kind's questions labelled should-abstain (1.0 or 0.0
    for a pure kind). Questions without a kind are not grouped; no kinds at all gives ``{}``.
    """
    return _by_kind(build_table(outcomes, reference), ci, n_boot, seed, alpha)


def compare(before: Sequence[Outcome], after: Sequence[Outcome], reference: Sequence[Outcome] | None = None,
            ci: bool = True, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Two models (or one before and after training) on the same questions, paired.

    Returns ``{"n_questions", "metrics", "mcnemar", "transitions"}``:

    - ``metrics[name]``: ``{"before", "after", "diff", "ci", "direction", "change"}`` with
      ``diff = after - before``, ``ci`` its paired bootstrap interval, and ``change`` "better",
      "worse" or "same" by the metric's direction (None when n/a);
    - ``mcnemar``: McNemar's test (see :func:`~halluguard.evaluation.stats.mcnemar`) on
      refused/not refused over all questions (``refused``), the should-abstain ones
      (``refused_should_abstain``) and the IK ones (``refused_in_knowledge``): there ``b`` counts
      refusal -> answer and ``c`` answer -> refusal; and on answered-correctly over the IK
      questions judged in both runs (``correct``: ``b`` lost, ``c`` gained; None when none are judged);
    - ``transitions``: how many questions went answer -> refusal and refusal -> answer, by class.
    """
    before, after = pair_runs(before, after)
    tables = (build_table(before, reference), build_table(after, reference))
    metrics = list(METRICS.values())
    intervals = (bootstrap_intervals(tables, {m.name: _paired_difference(m) for m in metrics},
                                     n=n_boot, seed=seed, alpha=alpha) if ci else {})
    compared = {}
    for metric in metrics:
        old, new = metric.value(tables[0]), metric.value(tables[1])
        diff = difference(old, new)
        compared[metric.name] = {"before": old, "after": new, "diff": diff,
                                 "ci": _as_list(intervals.get(metric.name)),
                                 "direction": metric.direction, "change": _change(diff, metric.direction)}
    return {"n_questions": len(before), "metrics": compared,
            "mcnemar": _mcnemar_tests(before, after), "transitions": _transitions(before, after)}


def _metric_values(table: OutcomeTable, metrics: list[Metric], ci: bool, n_boot: int, seed: int,
                   alpha: float) -> dict[str, dict]:
    intervals = (bootstrap_intervals((table,), {m.name: m.value for m in metrics}, n=n_boot, seed=seed,
                                     alpha=alpha) if ci else {})
    values = {}
    for metric in metrics:
        value, size = metric.compute(table)
        values[metric.name] = {"value": value, "ci": _as_list(intervals.get(metric.name)), "n": size}
    return values


def _by_kind(table: OutcomeTable, ci: bool, n_boot: int, seed: int, alpha: float) -> dict:
    per_kind = [m for m in METRICS.values() if m.per_kind]
    kinds = list(dict.fromkeys(k for k in table.kind if k is not None))
    breakdown = {}
    for kind in kinds:
        subset = table.take(table.kind == kind)
        values = _metric_values(subset, per_kind, ci, n_boot, seed, alpha)
        breakdown[kind] = {
            "n_questions": len(subset),
            "should_abstain": float(subset.should_abstain.mean()),
            "metrics": {name: entry for name, entry in values.items() if entry["value"] is not None},
        }
    return breakdown


def _counts(table: OutcomeTable) -> dict[str, int]:
    """The confusion counts behind the rates, with should-abstain as the positive class."""
    ook, refused = table.should_abstain, table.refused
    return {
        "should_abstain": int(ook.sum()),
        "in_knowledge": int((~ook).sum()),
        "refused_should_abstain": int((ook & refused).sum()),
        "answered_should_abstain": int((ook & ~refused).sum()),
        "refused_in_knowledge": int((~ook & refused).sum()),
        "answered_in_knowledge": int((~ook & ~refused).sum()),
        "judged_in_knowledge": int((~ook & table.judged).sum()),
        "correct_in_knowledge": int((table.verdict == CORRECT).sum()),
    }


def _description(metric: Metric) -> dict[str, str]:
    return {"direction": metric.direction, "definition": metric.definition, "source": metric.source,
            "group": metric.group}


def _paired_difference(metric: Metric):
    return lambda before, after: difference(metric.value(before), metric.value(after))


def _change(diff: float | None, direction: str) -> str | None:
    if diff is None:
        return None
    if diff == 0:
        return "same"
    return "better" if (diff > 0) == (direction == "higher") else "worse"


def _mcnemar_tests(before: list[Outcome], after: list[Outcome]) -> dict:
    pairs = list(zip(before, after, strict=True))

    def refusals(keep) -> dict:
        chosen = [(b, a) for b, a in pairs if keep(b)]
        return mcnemar([b.refused for b, _ in chosen], [a.refused for _, a in chosen])

    judged = [(b, a) for b, a in pairs
              if not b.should_abstain and b.correct is not None and a.correct is not None]
    return {
        "refused": refusals(lambda o: True),
        "refused_should_abstain": refusals(lambda o: o.should_abstain),
        "refused_in_knowledge": refusals(lambda o: not o.should_abstain),
        "correct": mcnemar([b.verdict == CORRECT for b, _ in judged], [a.verdict == CORRECT for _, a in judged])
        if judged else None,
    }


def _transitions(before: list[Outcome], after: list[Outcome]) -> dict[str, dict[str, int]]:
    counts = {"answer_to_refusal": {"should_abstain": 0, "in_knowledge": 0},
              "refusal_to_answer": {"should_abstain": 0, "in_knowledge": 0}}
    for old, new in zip(before, after, strict=True):
        if old.refused == new.refused:
            continue
        change = "answer_to_refusal" if new.refused else "refusal_to_answer"
        counts[change]["should_abstain" if old.should_abstain else "in_knowledge"] += 1
    return counts


def _as_list(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]
