"""PPO's result chosen on validation questions (``ppo.select.by=validation``), not by the KL budget alone.

The KL budget says when PPO must stop; it does not say which checkpoint before the stop is the best policy.
Measured on the demo build (README, "along the checkpoints"): from one saved checkpoint to the next, held-out
OOK refusal and over-refusal moved together by up to 0.2, and in the run on fitted prompts the best held-out
balanced accuracy was at step 8 of 20. The last checkpoint within the budget is then one draw of a noisy walk.

With ``ppo.select.by=validation``:

1. :func:`split_validation` sets a share of the build's held-out questions aside (by seed, stratified by label,
   whole question groups so that a question and its synthetic variants stay on one side);
2. every saved checkpoint within the budget, step 0 (the reference itself) included, answers them
   (:func:`score_checkpoints`): greedily, or ``ppo.select.samples`` times at the rollout temperature;
3. the highest balanced accuracy (the mean of the OOK refusal rate and the IK answer rate) wins; ties go to
   the earliest step, the one nearest the reference (:func:`choose_step`). Step 0 winning means PPO did not
   improve the boundary on questions it never saw, and the result is then the reference's policy.
   With ``ppo.select.rule=significant`` only checkpoints whose gain over step 0 has a 95% paired bootstrap
   interval above zero may win: a gain the split cannot tell from noise keeps the reference. On the fifth GPU
   run's 68 validation questions the checkpoints differed by about the split's noise, and the best-scoring one
   did no better on the test questions than the budget's choice: ``best`` alone chases that noise.

The evaluation leaves the validation questions out for every model (:func:`validation_case_ids`), so the
before -> after it reports is on questions the choice never saw.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.ppo")

SELECT_METRIC = "balanced_accuracy"


@dataclass
class CheckpointScore:
    """One checkpoint's answers to the validation questions, summarised."""

    step: int
    balanced_accuracy: float
    ook_refusal: float                 # share (or mean sampled rate) of OOK questions refused
    over_refusal: float | None         # the same on IK questions whose context holds the answer
    ik_refusal: float                  # the same on every IK question
    kl: float | None = None            # the step's batch KL, from metrics.jsonl
    gain: float | None = None          # balanced accuracy minus step 0's (the reference's)
    gain_ci: list[float] | None = None  # its 95% paired bootstrap interval over the validation questions

    def to_dict(self) -> dict:
        def rounded(v):
            return round(v, 4) if isinstance(v, float) else [rounded(x) for x in v] if isinstance(v, list) else v
        return {k: rounded(v) for k, v in self.__dict__.items()}


@dataclass
class Selection:
    """What :func:`select_checkpoint` chose and why; ``to_dict`` goes into the PPO manifest."""

    chosen_step: int
    budget_step: int                   # the last checkpoint within the KL budget (the choice without validation)
    scores: list[CheckpointScore]
    validation: dict                   # n, by_label, fraction, seed, samples, case_ids
    rule: str = "best"                 # ppo.select.rule: how the chosen step was picked from the scores
    seconds: float = 0.0
    answers: dict[int, list[list[str]]] = field(default_factory=dict)  # step -> each question's answers
    rates: dict[int, list[float]] = field(default_factory=dict)        # step -> each question's refusal rate

    @property
    def chosen(self) -> CheckpointScore:
        return next(s for s in self.scores if s.step == self.chosen_step)

    def to_dict(self) -> dict:
        return {"by": "validation", "metric": SELECT_METRIC, "rule": self.rule, "chosen_step": self.chosen_step,
                "budget_step": self.budget_step, "seconds": round(self.seconds, 2),
                "scores": [s.to_dict() for s in self.scores], "validation": self.validation}


# ---------------------------------------------------------------- the split

def split_validation(questions: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """``(validation, rest)``: about ``fraction`` of each label's questions, whole groups at a time.

    Groups (``q.group``, else ``q.question_id``) are shuffled by ``seed``, those holding the rarer label first,
    and taken in turn while no label passes its target (``round(fraction * n_label)``, at least 1); both sides keep the
    questions' original order.
    """
    if not 0 < fraction < 1:
        raise HalluguardError(f"ppo.select.validation_fraction must be in (0, 1), got {fraction}")
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(q.group or q.question_id, []).append(i)
    totals = _label_counts(questions, range(len(questions)))
    target = {label: max(1, round(fraction * n)) for label, n in totals.items()}  # the score needs both labels
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    # groups holding the rarer label go first: filled in plain shuffled order, groups of the common label alone
    # can take its share while the groups that also hold the rare one are still to come, and then none fits
    rare = min(totals, key=lambda label: (totals[label], label))
    keys.sort(key=lambda key: rare not in _label_counts(questions, groups[key]))
    taken: dict[str, int] = {label: 0 for label in totals}
    chosen: set[int] = set()
    for key in keys:
        counts = _label_counts(questions, groups[key])
        if all(taken[label] + n <= target[label] for label, n in counts.items()):
            chosen.update(groups[key])
            for label, n in counts.items():
                taken[label] += n
    short = sorted(label for label in totals if not taken[label])  # the score needs both labels
    if short:
        raise HalluguardError(f"the validation split of {len(questions)} held-out questions has no "
                              f"{'/'.join(short)} questions at ppo.select.validation_fraction={fraction}: "
                              "raise it, or build more held-out questions (builder.split.heldout_fraction)")
    validation = [q for i, q in enumerate(questions) if i in chosen]
    rest = [q for i, q in enumerate(questions) if i not in chosen]
    gone = sorted(set(totals) - {q.label for q in rest})
    if gone:
        log.warning("the validation split took every held-out %s question: the evaluation will have none left",
                    "/".join(gone))
    return validation, rest


def _label_counts(questions: Sequence, indices) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in indices:
        counts[questions[i].label] = counts.get(questions[i].label, 0) + 1
    return counts


def validation_case_ids(ppo_manifest) -> list[str]:
    """The held-out case ids a finished PPO run chose its checkpoint on (empty when it chose by the budget)."""
    selection = (ppo_manifest.metrics or {}).get("selection") or {}
    return list((selection.get("validation") or {}).get("case_ids") or [])


# ---------------------------------------------------------------- scoring and choosing

def score_answers(step: int, questions: Sequence, refusal_rates: np.ndarray, kl: float | None = None) -> CheckpointScore:
    """A checkpoint's score from each question's refusal rate (0/1 greedy, a share when sampled)."""
    rates = np.asarray(refusal_rates, dtype=np.float64)
    if len(rates) != len(questions):
        raise HalluguardError(f"{len(rates)} refusal rates for {len(questions)} validation questions")
    ook = np.array([q.should_abstain for q in questions], dtype=bool)
    holds = np.array([q.evidence_holds_answer is True for q in questions], dtype=bool)
    if not ook.any() or ook.all():
        raise HalluguardError("the validation questions need both IK and OOK questions to score the boundary")
    ook_refusal = float(rates[ook].mean())
    ik_refusal = float(rates[~ook].mean())
    over = float(rates[~ook & holds].mean()) if (~ook & holds).any() else None
    return CheckpointScore(step=step, balanced_accuracy=(ook_refusal + 1.0 - ik_refusal) / 2, ook_refusal=ook_refusal,
                           over_refusal=over, ik_refusal=ik_refusal, kl=kl)


SELECT_RULES = ("best", "significant")


def choose_step(scores: Sequence[CheckpointScore], rule: str = "best") -> int:
    """The highest balanced accuracy; on a tie the earliest step (the least KL spent for it).

    ``rule="significant"``: only the first score (step 0, the start) and the checkpoints whose gain interval lies
    above zero compete, so a gain within the split's noise keeps the start."""
    if rule not in SELECT_RULES:
        raise HalluguardError(f"ppo.select.rule must be one of {', '.join(SELECT_RULES)}, got {rule!r}")
    if not scores:
        raise HalluguardError("no checkpoint was scored on the validation questions")
    if rule == "significant":
        scores = [scores[0], *(s for s in scores[1:] if s.gain_ci is not None and s.gain_ci[0] > 0)]
    best = max(s.balanced_accuracy for s in scores)
    return min(s.step for s in scores if s.balanced_accuracy >= best - 1e-12)


def candidate_steps(saved: Sequence[int], budget_step: int) -> list[int]:
    """The saved checkpoints a validation choice may pick: every one up to the budget's choice."""
    steps = sorted(s for s in saved if s <= budget_step)
    if not steps:
        raise HalluguardError(f"no saved checkpoint at or before step {budget_step} to choose from")
    return steps


def gain_interval(rates: np.ndarray, start: np.ndarray, ook: np.ndarray, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> list[float]:
    """95% interval of the balanced-accuracy gain over step 0 from a paired bootstrap over questions, resampled
    within each label (the split fixes how many of each there are; Efron & Tibshirani 1993). The gain is
    (change in OOK refusal - change in IK refusal) / 2, so each question enters by its own change."""
    diff = np.asarray(rates, dtype=np.float64) - np.asarray(start, dtype=np.float64)
    d_ook, d_ik = diff[ook], diff[~ook]
    rng = np.random.default_rng(seed)
    boot_ook = d_ook[rng.integers(0, len(d_ook), (n_boot, len(d_ook)))].mean(axis=1)
    boot_ik = d_ik[rng.integers(0, len(d_ik), (n_boot, len(d_ik)))].mean(axis=1)
    gains = (boot_ook - boot_ik) / 2
    return [float(np.quantile(gains, alpha / 2)), float(np.quantile(gains, 1 - alpha / 2))]


def select_checkpoint(saved: Sequence[int], budget_step: int, questions: Sequence,
                      answers_of: Callable[[int], tuple[np.ndarray, list[list[str]]]],
                      kl_of: Callable[[int], float | None], validation: dict, seed: int = 0,
                      rule: str = "best") -> Selection:
    """Score every candidate checkpoint from ``answers_of(step)`` (each question's refusal rate and answers),
    with its gain over the first candidate (step 0) and that gain's bootstrap interval, and choose one by
    ``rule`` (:func:`choose_step`)."""
    started = time.perf_counter()
    ook = np.array([q.should_abstain for q in questions], dtype=bool)
    scores, rates, answers = [], {}, {}
    for step in candidate_steps(saved, budget_step):
        step_rates, step_answers = answers_of(step)
        rates[step], answers[step] = np.asarray(step_rates, dtype=np.float64), step_answers
        score = score_answers(step, questions, rates[step], kl_of(step))
        first = scores[0] if scores else score
        score.gain = score.balanced_accuracy - first.balanced_accuracy
        score.gain_ci = gain_interval(rates[step], rates[first.step], ook, seed=seed) if scores else None
        scores.append(score)
    return Selection(chosen_step=choose_step(scores, rule), budget_step=budget_step, scores=scores,
                     validation=validation, rule=rule, seconds=time.perf_counter() - started, answers=answers,
                     rates={k: v.tolist() for k, v in rates.items()})


def policy_refusal_rates(cfg, source, questions: Sequence, detector, device: str,
                         desc: str) -> tuple[np.ndarray, list[list[str]]]:
    """Each validation question's refusal rate under one checkpoint, and its answers: greedy (one answer, rate 0
    or 1), or the share of ``ppo.select.samples`` answers sampled at ``ppo.temperature`` called refusals."""
    from halluguard.evaluation.runner import GenerationSettings, answer_with_policy
    from halluguard.evaluation.sampled_refusal import SampledSettings, refusal_rates, sampled_answers

    s = cfg.ppo.select
    if int(s.samples) > 0:
        settings = SampledSettings(samples=int(s.samples), temperature=float(cfg.ppo.temperature),
                                   top_k=int(cfg.eval.sampled.top_k),
                                   max_new_tokens=int(s.max_new_tokens), batch_size=int(cfg.eval.batch_size),
                                   seed=int(s.seed))
        answers = sampled_answers(source, cfg, questions, settings, device, desc=desc)
        return refusal_rates(detector, answers), answers
    settings = GenerationSettings(batch_size=int(cfg.eval.batch_size), max_new_tokens=int(s.max_new_tokens),
                                  greedy=True, seed=int(s.seed))
    answers = answer_with_policy(source, cfg, questions, settings, device, desc=desc)
    return np.asarray(detector.is_refusal(answers), dtype=np.float64), [[a] for a in answers]


def validation_rows(questions: Sequence, selection: Selection) -> list[dict]:
    """``validation.jsonl``: each validation question with every checkpoint's refusal rate and answers, to read
    what the choice was made on (and to re-derive it)."""
    return [{"case_id": q.case_id, "label": q.label, "kind": q.kind, "question": q.question,
             "evidence_holds_answer": q.evidence_holds_answer,
             "steps": {str(step): {"refusal_rate": selection.rates[step][i], "answers": selection.answers[step][i]}
                       for step in selection.rates}}
            for i, q in enumerate(questions)]


def validation_questions(cfg, build) -> tuple[list, dict]:
    """The validation split of the build's held-out questions and its description for the manifest."""
    from collections import Counter

    from halluguard.evaluation.heldout import load_heldout

    s = cfg.ppo.select
    questions, _ = split_validation(load_heldout(build.output_path("heldout")), float(s.validation_fraction),
                                    int(s.seed))
    info = {"n": len(questions), "by_label": dict(Counter(q.label for q in questions)),
            "fraction": float(s.validation_fraction), "seed": int(s.seed), "samples": int(s.samples),
            "case_ids": [q.case_id for q in questions]}
    return questions, info


def run_selection(cfg, validation: tuple[list, dict], checkpoints: Path, saved: Sequence[int], budget_step: int,
                  start: str, detector, device: str, rows: Sequence[dict]) -> tuple[Selection, list[dict]]:
    """``ppo.select.by=validation`` after training: score each candidate checkpoint's adapter on ``start`` on the
    split :func:`validation_questions` made; returns the selection and the rows of ``validation.jsonl``."""
    from halluguard.evaluation.models import PolicySource

    questions, info = validation
    kl = {r["step"]: r.get("kl") for r in rows}
    how = f"{cfg.ppo.select.samples} samples each" if int(cfg.ppo.select.samples) else "greedy"
    print(f"choosing PPO's result on {info['n']} validation questions ({info['by_label']}, {how}) among the "
          f"checkpoints up to step {budget_step}")

    def answers(step: int) -> tuple[np.ndarray, list[list[str]]]:
        source = PolicySource(base=start, adapter=str(checkpoints / f"step-{step}" / "adapter"))
        return policy_refusal_rates(cfg, source, questions, detector, device, desc=f"validation step {step}")

    selection = select_checkpoint(saved, budget_step, questions, answers, kl.get, info, seed=int(cfg.ppo.select.seed),
                                  rule=str(cfg.ppo.select.rule))
    print(format_selection(selection))
    return selection, validation_rows(questions, selection)


def gain_text(score: CheckpointScore) -> str:
    """``+0.051 [-0.012, +0.110]``, or ``-`` for the start itself."""
    return format_gain(score.gain, score.gain_ci)


def format_gain(gain: float | None, ci: Sequence[float] | None) -> str:
    """A gain over step 0 with its interval, from a score or its manifest dict; ``-`` without an interval."""
    if ci is None or gain is None:
        return "-"
    return f"{gain:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def format_selection(selection: Selection) -> str:
    """The per-checkpoint table a person reads, the chosen row marked, and whether the choice beats noise."""
    lines = [f"{'step':>5}{'KL':>8}{'bal. acc.':>11}{'vs step 0 [95% CI]':>28}{'OOK refusal':>13}{'over-refusal':>14}"]
    for s in selection.scores:
        kl = "n/a" if s.kl is None else f"{s.kl:.3f}"
        over = "n/a" if s.over_refusal is None else f"{s.over_refusal:.3f}"
        mark = "  <- result" if s.step == selection.chosen_step else (
            "  (last within budget)" if s.step == selection.budget_step else "")
        lines.append(f"{s.step:>5}{kl:>8}{s.balanced_accuracy:>11.3f}{gain_text(s):>28}{s.ook_refusal:>13.3f}"
                     f"{over:>14}{mark}")
    lines.append(noise_verdict(selection))
    return "\n".join(lines)


def noise_verdict(selection: Selection) -> str:
    """One sentence: does the chosen checkpoint's gain over step 0 stand out of the validation split's noise?"""
    chosen = selection.chosen
    if chosen.gain_ci is None and selection.rule == "significant":
        best = max(selection.scores, key=lambda s: s.balanced_accuracy)
        if best.step != chosen.step:
            return (f"the result is step 0, the reference: the best checkpoint on validation, step {best.step} "
                    f"({gain_text(best)}), does not stand out of the split's noise (ppo.select.rule=significant)")
    if chosen.gain_ci is None:
        return "the result is step 0, the reference: no checkpoint scored higher on the validation questions"
    if chosen.gain_ci[0] > 0:
        return (f"step {chosen.step}'s gain over step 0 on validation, {gain_text(chosen)}, excludes zero")
    return (f"step {chosen.step}'s gain over step 0 on validation, {gain_text(chosen)}, includes zero: within what "
            f"{selection.validation.get('n', 'these')} questions can tell apart")
