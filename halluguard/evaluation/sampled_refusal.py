"""Each held-out question's refusal probability, from k sampled answers, and its paired change before -> after.

A greedy answer is one draw per question. A question whose refusal probability moves from 0.40 to 0.48 reads
the same before and after, and a greedy answer that flips may be a near tie that tipped. PPO optimises the
sampled distribution (its rollouts sample at ``ppo.temperature``), so that is where its change shows
first: its batch refusal rates can rise while the greedy held-out rates stay flat, and only this measure
says whether the change carries over to new questions or stays on the prompts PPO trained on.

With ``eval.sampled.samples = k > 0`` every policy answers every question k times at
``eval.sampled.temperature``. The shared detector judges each answer, and a question's refusal rate is the
fraction judged refusals. A gated model's rate is 1 where the gate fires and its policy's rate elsewhere.

Per model, the mean rate in each group:
* ``ook``: should abstain (sampled abstention recall);
* ``ik_context_has_answer``: in knowledge, with the gold answer in the retrieved context (sampled
  over-refusal, the same questions as the greedy ``over_refusal_context_has_answer``);
* ``ik``: every in-knowledge question.

Per comparison (the same before -> after pairs as the greedy comparisons), each group gets:
* the mean per-question change;
* its 95% percentile interval from a paired bootstrap over questions (Efron & Tibshirani 1993);
* a two-sided p-value from a paired sign-flip permutation test on the per-question differences (Fisher 1935;
  Good, "Permutation, Parametric and Bootstrap Tests of Hypotheses", 2005). It uses random sign flips, and
  the observed statistic counts among them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.eval")

GROUPS = ("ook", "ik_context_has_answer", "ik")
GROUP_TITLES = {"ook": "OOK refusal", "ik_context_has_answer": "over-refusal (ctx has answer)", "ik": "IK refusal"}
# Which way is better for each group's rate: refusing OOK questions is right, refusing IK ones is not.
BETTER = {"ook": "higher", "ik_context_has_answer": "lower", "ik": "lower"}


@dataclass(frozen=True)
class SampledSettings:
    samples: int = 8
    temperature: float = 1.0
    top_k: int = 50
    max_new_tokens: int = 48
    batch_size: int = 8
    seed: int = 0
    permutations: int = 10000
    bootstrap: int = 1000

    @classmethod
    def from_config(cls, ecfg) -> SampledSettings:
        s = ecfg.sampled
        return cls(samples=int(s.samples), temperature=float(s.temperature), top_k=int(s.top_k),
                   max_new_tokens=int(s.max_new_tokens),
                   batch_size=int(ecfg.batch_size), seed=int(ecfg.seed), permutations=int(s.permutations),
                   bootstrap=max(1, int(ecfg.bootstrap)))


# ---------------------------------------------------------------- sampling

def sampled_answers(source, cfg, questions: Sequence, settings: SampledSettings, device: str,
                    desc: str = "sampled") -> list[list[str]]:
    """``settings.samples`` answers to each question, in question order (the model is freed afterwards).

    The k answers of a prompt are its k copies in one batch: with oneDNN products the prompt is computed once
    and its KV cache shared (:func:`halluguard.generation.generate`, ``copies``)."""
    from halluguard.evaluation.models import load_model
    from halluguard.evaluation.runner import free_memory
    from halluguard.generation import generate
    from halluguard.prompting import render_prompt

    k = settings.samples
    model, tokenizer = load_model(source, cfg, device)
    try:
        prompts = [render_prompt(tokenizer, q.messages_with_system(source.system)) for q in questions]
        texts = generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                         batch_size=settings.batch_size, progress=True, desc=desc, temperature=settings.temperature,
                         top_k=settings.top_k, seed=settings.seed, copies=k)
    finally:
        del model
        free_memory()
    return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]


def refusal_rates(detector, answers: Sequence[Sequence[str]]) -> np.ndarray:
    """The fraction of each question's answers that the detector calls a refusal."""
    sizes = {len(group) for group in answers}
    if len(sizes) > 1 or 0 in sizes:
        raise HalluguardError(f"every question needs the same, non-zero number of sampled answers; got sizes "
                              f"{sorted(sizes)}")
    if not answers:
        return np.zeros(0)
    flat = [a for group in answers for a in group]
    refused = np.asarray(detector.is_refusal(flat), dtype=np.float64)
    return refused.reshape(len(answers), -1).mean(axis=1)


def gated_rates(policy_rates: np.ndarray, gate_fires: Sequence[bool]) -> np.ndarray:
    """The gate in front of a policy: refusal for certain where the gate fires, the policy's rate elsewhere."""
    return np.where(np.asarray(gate_fires, dtype=bool), 1.0, policy_rates)


def group_masks(questions: Sequence) -> dict[str, np.ndarray]:
    """Boolean masks over the questions for each of :data:`GROUPS`."""
    abstain = np.array([bool(q.should_abstain) for q in questions], dtype=bool)
    holds = np.array([q.evidence_holds_answer is True for q in questions], dtype=bool)
    return {"ook": abstain, "ik_context_has_answer": ~abstain & holds, "ik": ~abstain}


# ---------------------------------------------------------------- statistics

def group_means(rates: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per group: the number of questions and their mean refusal rate (None for an empty group)."""
    return {g: {"n": int(m.sum()), "mean": round(float(rates[m].mean()), 4) if m.any() else None}
            for g, m in masks.items()}


def sign_flip_p_value(diffs: np.ndarray, permutations: int = 10000, seed: int = 0) -> float | None:
    """Two-sided p-value of "the mean paired difference is zero": under that hypothesis each difference is
    as likely to carry either sign, so the observed |mean| is ranked among the |means| of random sign flips
    (the observed assignment counted as one of them, so p >= 1 / (permutations + 1)). None when empty."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size == 0:
        return None
    if permutations <= 0:
        raise HalluguardError(f"permutations must be positive, got {permutations}")
    observed = abs(diffs.mean())
    if not np.any(diffs):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, diffs.size))
    flipped = np.abs(signs @ diffs) / diffs.size
    # A tolerance so that a flip whose mean equals the observed one in exact arithmetic is not lost to rounding.
    extreme = int(np.sum(flipped >= observed - 1e-12))
    return (extreme + 1) / (permutations + 1)


def paired_bootstrap_mean_ci(diffs: np.ndarray, n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile interval of the mean difference, resampling questions with replacement."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(n_boot, diffs.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return round(float(low), 4), round(float(high), 4)


def questions_for_power(diffs: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """How many questions a paired test needs to find a mean change like this one, at two-sided level ``alpha``
    with probability ``power``, if each question's change is drawn like these: the normal-approximation sample
    size for a mean paired difference, ``((z(1 - alpha/2) + z(power)) * sd / |mean|) ** 2`` rounded up (Chow,
    Shao & Wang, *Sample Size Calculations in Clinical Research*, 2008, sec. 3.1). None when the mean change is
    0 or there are fewer than 2 questions. A planning figure: the mean and sd are themselves estimates."""
    from statistics import NormalDist

    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size < 2 or diffs.mean() == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, int(np.ceil((z * diffs.std(ddof=1) / abs(diffs.mean())) ** 2)))


def paired_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray, settings: SampledSettings) -> dict:
    """before and after means on ``mask``'s questions, the mean change, its interval and its p-value."""
    diffs = after[mask] - before[mask]
    empty = diffs.size == 0
    return {"n": int(diffs.size),
            "before": None if empty else round(float(before[mask].mean()), 4),
            "after": None if empty else round(float(after[mask].mean()), 4),
            "diff": None if empty else round(float(diffs.mean()), 4),
            "ci": paired_bootstrap_mean_ci(diffs, settings.bootstrap, settings.seed),
            "p_value": sign_flip_p_value(diffs, settings.permutations, settings.seed),
            "questions_up": int(np.sum(diffs > 0)), "questions_down": int(np.sum(diffs < 0)),
            "questions_for_80pct_power": questions_for_power(diffs)}


def change_direction(group: str, diff: float | None) -> str:
    """``better``, ``worse`` or ``same`` for a group's mean change."""
    if diff is None or diff == 0:
        return "same"
    return "better" if (diff > 0) == (BETTER[group] == "higher") else "worse"


# ---------------------------------------------------------------- the eval section

def run_sampled(cfg, results: dict, questions: Sequence, detector, comparisons: dict,
                device: str = "cpu") -> tuple[dict, dict[str, dict]]:
    """``results.json``'s ``sampled`` section, and each sampled model's answers and rates (for sampled.jsonl).

    ``results``: name -> ModelResult of the greedy pass; ``comparisons``: the greedy comparisons (their
    before -> after pairs are reused). Policies are sampled once each; gated models reuse their policy's
    rates. A model that cannot be sampled is reported with its reason; the others still run.
    """
    from halluguard.evaluation.models import resolve_source

    settings = SampledSettings.from_config(cfg.eval)
    masks = group_masks(questions)
    per_model: dict[str, dict] = {}
    section_models: dict[str, dict] = {}
    sampled_policies: dict[str, dict] = {}
    for name, result in results.items():
        spec = result.spec
        if not result.ok or spec.kind not in ("policy", "gated"):
            continue
        policy = spec.name if spec.kind == "policy" else spec.policy
        if policy not in sampled_policies:
            start = time.perf_counter()
            try:
                source = resolve_source(cfg, policy)
                answers = sampled_answers(source, cfg, questions, settings, device, desc=f"sampled {policy}")
                sampled_policies[policy] = {"answers": answers, "rates": refusal_rates(detector, answers),
                                            "seconds": round(time.perf_counter() - start, 3)}
            except Exception as exc:  # a model that fails here already has its greedy results
                log.exception("sampling %s failed", policy)
                sampled_policies[policy] = {"error": f"{type(exc).__name__}: {exc}"}
        found = sampled_policies[policy]
        if "error" in found:
            section_models[name] = {"status": "failed", "reason": found["error"]}
            continue
        rates = found["rates"] if spec.kind == "policy" else gated_rates(found["rates"], result.gate_refused)
        per_model[name] = {"rates": rates, "answers": found["answers"] if spec.kind == "policy" else None}
        section_models[name] = {"status": "ok", "seconds": found["seconds"] if spec.kind == "policy" else None,
                                "groups": group_means(rates, masks)}
    section_comparisons = {}
    for after, comp in comparisons.items():
        before = comp["before"]
        if after in per_model and before in per_model:
            b, a = per_model[before]["rates"], per_model[after]["rates"]
            groups = {g: paired_change(b, a, m, settings) for g, m in masks.items()}
            for g, entry in groups.items():
                entry["change"] = change_direction(g, entry["diff"])
            section_comparisons[after] = {"before": before, "after": after, "groups": groups}
    section = {"status": "ok", "settings": asdict(settings), "groups": list(GROUPS),
               "better": dict(BETTER), "models": section_models, "comparisons": section_comparisons}
    return section, per_model


def sampled_rows(questions: Sequence, per_model: dict[str, dict]):
    """One sampled.jsonl line per question: its labels and each model's refusal rate (and answers)."""
    for i, q in enumerate(questions):
        row = {"case_id": q.case_id, "label": q.label, "kind": q.kind,
               "evidence_holds_answer": q.evidence_holds_answer, "models": {}}
        for name, found in per_model.items():
            entry = {"refusal_rate": round(float(found["rates"][i]), 4)}
            if found["answers"] is not None:
                entry["answers"] = found["answers"][i]
            row["models"][name] = entry
        yield row


def format_sampled(section: dict) -> str:
    """The console/report table: mean sampled refusal rate per model and group, then each paired change."""
    s = section["settings"]
    from halluguard.generation import GENERATE_DEFAULT_TOP_K

    top_k = s.get("top_k", GENERATE_DEFAULT_TOP_K)  # results.json written before the key: generate's default
    lines = [f"sampled refusal rate ({s['samples']} answers per question at temperature {s['temperature']}, "
             f"{'top-k ' + str(top_k) if top_k else 'every token'}, "
             f"{s['max_new_tokens']} new tokens; mean over questions):"]
    header = f"  {'model':<14}" + "".join(f"{GROUP_TITLES[g]:>32}" for g in GROUPS)
    lines.append(header)
    for name, entry in section["models"].items():
        if entry["status"] != "ok":
            lines.append(f"  {name:<14}  {entry['status']}: {entry['reason']}")
            continue
        cells = "".join(f"{_mean_cell(entry['groups'][g]):>32}" for g in GROUPS)
        lines.append(f"  {name:<14}{cells}")
    for after, comp in section["comparisons"].items():
        parts = []
        for g in GROUPS:
            c = comp["groups"][g]
            if c["diff"] is None:
                continue
            ci = f" [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if c["ci"] else ""
            parts.append(f"{GROUP_TITLES[g]} {c['diff']:+.3f}{ci} p={c['p_value']:.3g} ({c['change']})")
        lines.append(f"  {comp['before']} -> {after}: " + "; ".join(parts))
    return "\n".join(lines)


def _mean_cell(group: dict) -> str:
    return "n/a" if group["mean"] is None else f"{group['mean']:.3f} (n={group['n']})"


# ---------------------------------------------------------------- across eval runs (benchmarks/compare_evals.py)

def sampled_file(path) -> Path:
    """``path`` itself when it is a file, else the ``sampled.jsonl`` of an eval folder (or its run folder)."""
    from halluguard.evaluation.across_runs import samples_file

    return samples_file(path, "sampled.jsonl", how="run `halluguard eval eval.sampled.samples=8` for it; ")


def rates_from_sampled(path, model: str) -> dict[str, tuple[bool, bool | None, float]]:
    """case_id -> (should abstain, context holds the answer, refusal rate) of ``model`` in an eval's sampled.jsonl."""
    from halluguard.evaluation.across_runs import model_rows

    path = sampled_file(path)
    out = {}
    for number, row, entry in model_rows(path, model, "a sampled.jsonl", "sampled rates", keys=("label", "case_id")):
        rate = entry.get("refusal_rate") if isinstance(entry, dict) else None
        if row["label"] not in ("ik", "ook") or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise HalluguardError(f"{path}:{number}: label must be ik/ook and models.{model}.refusal_rate a "
                                  f"number in [0, 1]")
        out[str(row["case_id"])] = (row["label"] == "ook", row.get("evidence_holds_answer"), float(rate))
    return out


def mean_rates(runs: dict[str, dict]) -> dict[str, tuple[bool, bool | None, float]]:
    """The runs' per-question rates averaged (e.g. over PPO seeds): the method's expected rate on each question,
    which a paired test against the baseline then judges without betting on one seed. Same questions required."""
    if not runs:
        raise HalluguardError("no runs to average")
    names = list(runs)
    first = runs[names[0]]
    for name in names[1:]:
        if set(runs[name]) != set(first):
            raise HalluguardError(f"runs {names[0]!r} and {name!r} were sampled on other questions: they cannot be "
                                  "averaged question by question")
    return {c: (first[c][0], first[c][1], float(np.mean([runs[n][c][2] for n in names]))) for c in first}


def compare_sampled_runs(baseline: dict, runs: dict[str, dict], settings: SampledSettings | None = None) -> dict:
    """Each run's sampled rates against the baseline's on the same questions: :func:`paired_change` per group.

    ``baseline`` and each run: :func:`rates_from_sampled` output. A run on other questions is an error.
    """
    settings = settings or SampledSettings()
    cases = sorted(baseline)
    questions = [SimpleNamespace(should_abstain=baseline[c][0], evidence_holds_answer=baseline[c][1]) for c in cases]
    masks = group_masks(questions)
    before = np.array([baseline[c][2] for c in cases])
    out = {"n_questions": len(cases), "baseline": group_means(before, masks), "runs": {}}
    for name, rates in runs.items():
        if set(rates) != set(baseline):
            missing, extra = len(set(baseline) - set(rates)), len(set(rates) - set(baseline))
            raise HalluguardError(f"run {name!r} was sampled on other questions than the baseline ({missing} of the "
                                  f"baseline's missing, {extra} not in it)")
        after = np.array([rates[c][2] for c in cases])
        groups = {g: paired_change(before, after, m, settings) for g, m in masks.items()}
        for g, entry in groups.items():
            entry["change"] = change_direction(g, entry["diff"])
        out["runs"][name] = groups
    return out


def format_sampled_runs(result: dict, baseline_name: str = "baseline", what: str = "sampled refusal rate") -> str:
    """The cross-run comparison as text: each group's mean per run and its change with the permutation p, the
    changes' 95% intervals, and the questions 80% power would need. ``what`` names the rate in the title."""
    width = max([len(baseline_name), *map(len, result["runs"]), 8])
    lines = [f"{what}, mean over the same {result['n_questions']} questions "
             f"(change from {baseline_name}, sign-flip permutation p)",
             f"{'run':<{width}}" + "".join(f"{GROUP_TITLES[g]:>34}" for g in GROUPS),
             f"{baseline_name:<{width}}" + "".join(f"{_mean_cell(result['baseline'][g]):>34}" for g in GROUPS)]
    for name, groups in result["runs"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{_change_cell(groups[g]):>34}" for g in GROUPS))
    lines += ["", "95% interval of each change (paired bootstrap over questions)"]
    for name, groups in result["runs"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{_interval_cell(groups[g]):>34}" for g in GROUPS))
    lines += ["", "questions per group for 80% power at p < 0.05, for a change like this one (normal approximation "
                  "from each question's change; now: how many there are)"]
    for name, groups in result["runs"].items():
        lines.append(f"{name:<{width}}" + "".join(
            f"{_power_cell(groups[g]):>34}" for g in GROUPS))
    return "\n".join(lines)


def _interval_cell(change: dict) -> str:
    ci = change.get("ci")
    return "n/a" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _power_cell(change: dict) -> str:
    needed = change.get("questions_for_80pct_power")
    return "n/a" if needed is None else f"{needed} (now {change['n']})"


def _change_cell(change: dict) -> str:
    if change["diff"] is None:
        return "n/a"
    return f"{change['after']:.3f} ({change['diff']:+.3f}, p={change['p_value']:.2g})"
