"""Held-out evaluation of a scorer on preference pairs: does it put chosen above rejected?

* pairwise accuracy per pair kind (chosen score strictly above rejected score), for the reward model
  and, on the same pairs, the rule-only scorer (ties count as failures; their rate is reported);
* score distributions per response class (``chosen_kind`` / ``rejected_kind``) as a PNG;
* the share of OOK fabrications scoring above the median OOK refusal (the reward-hacking predictor);
* scoring throughput (responses/s).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from halluguard.errors import HalluguardError

OOK_KIND = "ook_refusal_vs_fabrication"


def _assistant(side) -> str:
    if isinstance(side, list):
        return "".join(str(m.get("content") or "") for m in side if m.get("role") == "assistant")
    return "" if side is None else str(side)


def pair_meta(rows: Sequence[dict], passages: dict[str, str], answers: dict[str, list[str]]) -> list[dict]:
    """The scoring ``meta`` of each pair row: label, evidence text (from evidence_ids), gold answers (by case_id)."""
    out = []
    for r in rows:
        evidence = "\n".join(passages.get(pid, "") for pid in (r.get("evidence_ids") or []))
        out.append({"label": r["label"], "evidence": evidence, "answers": list(answers.get(r.get("case_id"), []))})
    return out


def load_build_context(build_dir: Path, manifest) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Passage texts by id and gold answers by case id, from the build's recorded outputs."""
    from datasets import load_from_disk

    passages = {}
    index = manifest.output_path("index")
    with open(index / "passages.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                p = json.loads(line)
                passages[p["id"]] = p.get("text", "")
    answers: dict[str, list[str]] = {}
    for name in ("ppo_prompts", "heldout"):
        if name in manifest.outputs:
            ds = load_from_disk(str(manifest.output_path(name)))
            for cid, ans in zip(ds["case_id"], ds["answers"]):
                answers[cid] = list(ans or [])
    return passages, answers


def _accuracy(chosen: np.ndarray, rejected: np.ndarray, kinds: Sequence[str]) -> dict:
    by: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(kinds):
        by[k].append(i)
    out = {}
    for k, idx in sorted(by.items()):
        c, r = chosen[idx], rejected[idx]
        out[k] = {"n": len(idx), "accuracy": round(float((c > r).mean()), 4), "ties": round(float((c == r).mean()), 4),
                  "mean_margin": round(float((c - r).mean()), 4)}
    if kinds:
        out["all"] = {"n": len(kinds), "accuracy": round(float((chosen > rejected).mean()), 4),
                      "ties": round(float((chosen == rejected).mean()), 4),
                      "mean_margin": round(float((chosen - rejected).mean()), 4)}
    return out


def evaluate_pairs(rows: Sequence[dict], meta: Sequence[dict], rm_scorer, rule_scorer,
                   png: Optional[Path] = None, rm_weight: float = 1.0) -> dict:
    """Score every pair's chosen and rejected response with both scorers; return the metrics dict.

    ``hybrid`` is ``rm_weight * RM + rule terms`` from the same two score vectors (what
    ``reward.scorer=hybrid`` would give), so all three columns are on the same pairs.
    """
    rows = list(rows)
    if not rows:
        raise HalluguardError("no held-out pairs to evaluate the reward model on; lower builder.split.heldout_fraction "
                              "only if it is 0, or build from a larger knowledge base")
    prompts = [list(r["prompt"]) for r in rows]
    chosen = [_assistant(r["chosen"]) for r in rows]
    rejected = [_assistant(r["rejected"]) for r in rows]
    kinds = [r["kind"] for r in rows]
    n = len(rows)
    all_prompts, all_resp, all_meta = prompts * 2, chosen + rejected, list(meta) * 2

    result: dict = {"pairs": n}
    if rm_scorer is not None:
        start = time.perf_counter()
        rm = rm_scorer.score(all_prompts, all_resp, all_meta).numpy().astype(np.float64)
        secs = time.perf_counter() - start
        result["rm"] = _accuracy(rm[:n], rm[n:], kinds)
        result["throughput_responses_per_s"] = round(2 * n / secs, 2) if secs > 0 else None
        result["rm_truncated_responses"] = int(getattr(rm_scorer, "stats", {}).get("truncated", 0))
        classes = _by_class(rm, rows)
        result["score_by_class"] = {k: _describe(v) for k, v in classes.items()}
        ook = [i for i, k in enumerate(kinds) if k == OOK_KIND]
        if ook:
            median_refusal = float(np.median(rm[:n][ook]))
            result["ook_fabrication_above_median_refusal"] = round(float((rm[n:][ook] > median_refusal).mean()), 4)
        else:
            result["ook_fabrication_above_median_refusal"] = None
        if png is not None:
            plot_distributions(classes, png)
    start = time.perf_counter()
    rules = rule_scorer.score(all_prompts, all_resp, all_meta).numpy().astype(np.float64)
    result["rules"] = _accuracy(rules[:n], rules[n:], kinds)
    result["rules_throughput_responses_per_s"] = round(2 * n / max(time.perf_counter() - start, 1e-9), 2)
    if rm_scorer is not None:
        hybrid = rm_weight * rm + rules
        result["hybrid"] = _accuracy(hybrid[:n], hybrid[n:], kinds)
        result["hybrid_rm_weight"] = rm_weight
    return result


def _by_class(scores: np.ndarray, rows: Sequence[dict]) -> dict[str, np.ndarray]:
    n = len(rows)
    classes: dict[str, list[float]] = defaultdict(list)
    for i, r in enumerate(rows):
        classes[f"{r.get('chosen_kind') or 'chosen'} ({r['label']})"].append(scores[i])
        classes[f"{r.get('rejected_kind') or 'rejected'} ({r['label']})"].append(scores[n + i])
    return {k: np.asarray(v) for k, v in sorted(classes.items())}


def _describe(v: np.ndarray) -> dict:
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "p10": round(float(np.percentile(v, 10)), 4), "p90": round(float(np.percentile(v, 90)), 4)}


def plot_distributions(classes: dict[str, np.ndarray], png: Path) -> None:
    """Box plot of normalised RM scores per response class (matplotlib Agg; the figure is closed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.5 + 0.45 * max(1, len(classes))))
    ax = fig.add_subplot(1, 1, 1)
    names = list(classes)
    ax.boxplot([classes[k] for k in names], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(names) + 1))
    ax.set_yticklabels([f"{k} n={classes[k].size}" for k in names], fontsize=8)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("normalised reward-model score")
    ax.set_title("held-out scores per response class")
    fig.tight_layout()
    fig.savefig(str(png), dpi=100)


# Done-when targets of the reward issue: a reward PPO can trust (see issue #4).
TARGETS = {OOK_KIND: 0.90}
DEFAULT_TARGET = 0.80


def target_for(kind: str) -> Optional[float]:
    return None if kind == "all" else TARGETS.get(kind, DEFAULT_TARGET)


def meets_targets(by_kind: dict) -> bool:
    """Every pair kind at or above its target accuracy."""
    return all(v["accuracy"] >= target_for(k) for k, v in by_kind.items() if k != "all")


def accuracy_table(result: dict) -> str:
    """Markdown table: pair kind | n | target | RM | rules only | hybrid (a check mark where the RM meets the target)."""
    lines = ["| pair kind | n | target | reward model | rules only | hybrid |", "|---|---:|---:|---:|---:|---:|"]
    rm, rules, hybrid = result.get("rm", {}), result.get("rules", {}), result.get("hybrid", {})
    for kind in [k for k in rules if k != "all"] + ["all"]:
        if kind not in rules:
            continue
        target = target_for(kind)

        def cell(table: dict, mark: bool = False) -> str:
            if kind not in table:
                return "-"
            acc = table[kind]["accuracy"]
            ok = " ✓" if mark and target is not None and acc >= target else (" ✗" if mark and target is not None else "")
            return f"{acc:.3f}{ok}"

        lines.append(f"| {kind} | {rules[kind]['n']} | {'-' if target is None else f'{target:.2f}'} | "
                     f"{cell(rm, mark=True)} | {cell(rules)} | {cell(hybrid)} |")
    return "\n".join(lines)
