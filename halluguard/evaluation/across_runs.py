"""One model from several eval runs against a baseline on the same held-out questions (seeds, variants).

A single PPO run moves a few dozen answers; whether that is the method or the seed only shows across runs.
Each run's answers are read back from its eval's ``samples.jsonl``, paired with the baseline's on the same
questions, and compared with :func:`halluguard.evaluation.summary.compare` (the paired differences and
McNemar's tests the eval itself prints). :func:`across_runs` adds, per metric, the mean, spread and range of
the differences over the runs, and how many runs met the boundary criterion of issue #5: abstention recall
up while over-refusal on IK questions whose context holds the answer does not rise.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from halluguard.errors import HalluguardError
from halluguard.evaluation.outcomes import Outcome
from halluguard.evaluation.summary import compare

KEY_METRICS = ("abstention_recall", "over_refusal_context_has_answer", "balanced_accuracy", "refusal_auc",
               "ik_accuracy")
HEADERS = {"abstention_recall": "OOK refusal", "over_refusal_context_has_answer": "over-refusal",
           "balanced_accuracy": "bal. acc.", "refusal_auc": "AUC", "ik_accuracy": "IK acc."}


def samples_file(path: Path, name: str = "samples.jsonl", how: str = "") -> Path:
    """``path`` itself when it is a file, else the file ``name`` of an eval folder (or of its run folder).
    ``how``: what to run when it is missing, for the error."""
    path = Path(path)
    for candidate in (path, path / name, path / "eval" / name):
        if candidate.is_file():
            return candidate
    raise HalluguardError(f"{path}: no {name} there ({how}give an eval's {name}, its eval folder or its "
                          "experiment folder)")


def eval_rows(path: Path, row_kind: str, keys: Sequence[str] = ("label",)):
    """``(line number, row)`` for each row of an eval's JSON Lines file (``samples.jsonl``, ``sampled.jsonl``). A
    line that is not such a row (``models`` and ``keys`` present) is an error naming ``path:line`` and ``row_kind``."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["models"].keys()
                for key in keys:
                    row[key]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise HalluguardError(f"{path}:{number}: not {row_kind} row ({err})") from err
            yield number, row


def model_rows(path: Path, model: str, row_kind: str, entries: str, keys: Sequence[str] = ("label",)):
    """``(line number, row, model's entry)`` for each row of :func:`eval_rows` that holds ``model``; a file without
    ``model`` is an error naming the models it has."""
    seen, found = set(), False
    for number, row in eval_rows(path, row_kind, keys):
        models = row["models"]
        seen.update(models)
        if model in models:
            found = True
            yield number, row, models[model]
    if not found:
        raise HalluguardError(f"{path}: no {entries} of model {model!r} (models there: {sorted(seen) or 'none'})")


def outcomes_from_samples(path: Path, model: str) -> list[Outcome]:
    """``model``'s outcome on each question of an eval's ``samples.jsonl`` (as the eval computed them)."""
    path = samples_file(path)
    outcomes = []
    for number, row, entry in model_rows(path, model, "an eval sample", "answers"):
        label = row["label"]
        if label not in ("ik", "ook") or not isinstance(entry.get("refused"), bool):
            raise HalluguardError(f"{path}:{number}: label must be ik/ook and models.{model}.refused true/false")
        ook = label == "ook"
        outcomes.append(Outcome(
            question_id=str(row.get("case_id") or row["question_id"]), should_abstain=ook,
            refused=entry["refused"], refusal_score=entry.get("refusal_score"), correct=entry.get("correct"),
            em=entry.get("em"), f1=entry.get("f1"), kind=row.get("kind") or None,
            context_holds_answer=None if ook else row.get("evidence_holds_answer")))
    return outcomes


def greedy_rates(outcomes: Sequence[Outcome]) -> dict[str, tuple[bool, bool | None, float]]:
    """Each question's greedy refusal as a rate of 0 or 1, keyed and shaped as
    :func:`halluguard.evaluation.sampled_refusal.rates_from_sampled`'s: averaged over runs with ``mean_rates``, a
    question's rate is the fraction of the runs that refused it, which the same paired tests then judge."""
    return {o.question_id: (o.should_abstain, o.context_holds_answer, float(o.refused)) for o in outcomes}


def across_runs(baseline: Sequence[Outcome], runs: dict[str, Sequence[Outcome]], n_boot: int = 1000,
                seed: int = 0) -> dict:
    """Each run compared with ``baseline`` on the same questions, and the spread of the differences.

    Returns ``{"baseline": {metric: value}, "runs": {name: {"metrics", "diff", "mcnemar", "met"}},
    "spread": {metric: {"mean", "sd", "min", "max"}}, "met": k, "n_runs": n, "n_questions": q}`` where
    ``met`` says whether the run raised abstention recall without raising over-refusal (context holds answer).
    """
    if not runs:
        raise HalluguardError("across_runs: give at least one run to compare with the baseline")
    base: dict = {}
    out_runs = {}
    for name, outcomes in runs.items():
        try:
            compared = compare(baseline, outcomes, ci=n_boot > 0, n_boot=max(n_boot, 1), seed=seed)
        except HalluguardError as err:
            raise HalluguardError(f"run {name!r}: {err}") from err
        metrics = compared["metrics"]
        base = {m: metrics[m]["before"] for m in KEY_METRICS}  # the same in every comparison
        recall = metrics["abstention_recall"]["diff"]
        over = metrics["over_refusal_context_has_answer"]["diff"]
        out_runs[name] = {
            "metrics": {m: metrics[m]["after"] for m in KEY_METRICS},
            "diff": {m: {"value": metrics[m]["diff"], "ci": metrics[m]["ci"]} for m in KEY_METRICS},
            "mcnemar": {k: compared["mcnemar"][k] for k in ("refused_should_abstain", "refused_in_knowledge")},
            "met": recall is not None and over is not None and recall > 0 and over <= 0,
        }
    spread = {}
    for metric in KEY_METRICS:
        diffs = [r["diff"][metric]["value"] for r in out_runs.values() if r["diff"][metric]["value"] is not None]
        if diffs:
            spread[metric] = {"mean": statistics.fmean(diffs), "sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
                              "min": min(diffs), "max": max(diffs)}
    return {"n_questions": len(baseline), "baseline": base,
            "runs": out_runs, "spread": spread, "met": sum(r["met"] for r in out_runs.values()),
            "n_runs": len(out_runs)}


def format_across_runs(result: dict, baseline_name: str = "baseline") -> str:
    """The comparison as plain-text tables: values, differences with McNemar p, and their spread."""
    def cell(value, signed=False):
        return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")

    width = max([len(baseline_name), *map(len, result["runs"]), 8])
    head = "".join(f"{HEADERS[m]:>14}" for m in KEY_METRICS)
    lines = [f"{result['n_questions']} questions, the same in every run", f"{'run':<{width}}{head}",
             f"{baseline_name:<{width}}" + "".join(f"{cell(result['baseline'][m]):>14}" for m in KEY_METRICS)]
    for name, run in result["runs"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{cell(run['metrics'][m]):>14}" for m in KEY_METRICS))
    lines += ["", (f"change from {baseline_name} (McNemar p of the refusals: OOK, IK; 'met' = OOK refusal up and "
                   "over-refusal not up)"), f"{'run':<{width}}{head}{'p OOK':>10}{'p IK':>10}{'met':>6}"]
    for name, run in result["runs"].items():
        tests = run["mcnemar"]
        lines.append(f"{name:<{width}}" + "".join(f"{cell(run['diff'][m]['value'], True):>14}" for m in KEY_METRICS)
                     + f"{tests['refused_should_abstain']['p_value']:>10.3g}{tests['refused_in_knowledge']['p_value']:>10.3g}"
                     + f"{'yes' if run['met'] else 'no':>6}")
    if result["n_runs"] > 1:
        spread = result["spread"]
        for stat in ("mean", "sd", "min", "max"):
            lines.append(f"{stat:<{width}}" + "".join(
                f"{cell(spread[m][stat], True) if m in spread else 'n/a':>14}" for m in KEY_METRICS))
    lines.append(f"met the boundary criterion: {result['met']} of {result['n_runs']} runs")
    return "\n".join(lines)
