"""The reward on each trained model's own held-out answers: does what PPO maximises agree with the evaluation?

``halluguard reward`` judges the reward model on the build's pairs, but a trained policy writes a
different distribution. On the demo, PPO learned to quote a passage ("The section on X says: ...") on
questions it should refuse; the builders never wrote such an answer for an out-of-knowledge prompt,
and the reward model scored those quotes as high as grounded answers. Scoring what each trained model
actually said, split by label and by whether it refused, makes that visible:

* ``ook_gap``: mean score of answered minus refused out-of-knowledge questions. Above zero, the score
  prefers answering a question that should be refused: a policy can raise its reward by fabricating.
* ``ik_gap``: the same on in-knowledge questions (should be above zero: answering is right there).
* ``drift``: the mean of the two gaps (PPO's batches are half IK, half OOK with ``ppo.balance_labels``):
  what a policy that cannot tell the classes apart gains, per question, by answering instead of refusing.
  Above zero, such a policy drifts towards answering everything; the OOK gap must outweigh the IK gap
  for the reward to pull it the other way.
* ``zero_drift_answer_ook``: the ``reward.rules.answer_ook`` at which that drift would be zero on these
  answers (raising the penalty by d lowers every answered OOK question's score by d, the drift by d / 2).
  A measured suggestion for the next run, not a guarantee: the policy's answers move with the reward.

Reported for the reward model alone (normalised as PPO sees it), the rule terms, and the hybrid
(``reward.rm_weight`` x rm + rules), which is what ``reward.scorer=hybrid`` gives PPO. Every answer is
scored on the build's held-out prompt (the prompt-only baseline's own system message is not used).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.eval")

# Models optimised against the reward or trained to make it: the reference and prompt-only never saw it.
AUDITED = ("sft", "ppo", "dpo", "grpo")
PARTS = ("rm", "rules", "hybrid")


def audited_models(results: dict) -> list[str]:
    """Trained policies that answered, in evaluation order."""
    return [name for name, r in results.items() if name in AUDITED and r.ok and r.answers]


def score_answers(scorers: tuple, questions: Sequence, answers: Sequence[str], passages: dict[str, str],
                  rm_weight: float) -> dict[str, np.ndarray]:
    """rm (normalised), rules and hybrid score of each answer to its question's held-out prompt."""
    rm, rules = scorers
    prompts = [q.messages for q in questions]
    meta = [{"label": q.label, "answers": list(q.answers),
             "evidence": "\n".join(passages.get(pid, "") for pid in q.evidence_ids)} for q in questions]
    rule_scores = rules.score(prompts, answers, meta).numpy().astype(np.float64)
    rm_scores = rm.score(prompts, answers).numpy().astype(np.float64)
    return {"rm": rm_scores, "rules": rule_scores, "hybrid": rule_scores + rm_weight * rm_scores}


def summarise(scores: dict[str, np.ndarray], labels: Sequence[str], refused: Sequence[bool]) -> dict:
    """Per label: n and mean score of refused and answered questions; the answered-minus-refused gaps."""
    labels, refused = np.asarray(labels), np.asarray(refused, dtype=bool)
    out: dict = {}
    for label in ("ik", "ook"):
        groups = {}
        for name, mask in (("refused", (labels == label) & refused), ("answered", (labels == label) & ~refused)):
            groups[name] = {"n": int(mask.sum()),
                            **{part: (round(float(scores[part][mask].mean()), 4) if mask.any() else None)
                               for part in PARTS}}
        groups["gap"] = {part: (round(groups["answered"][part] - groups["refused"][part], 4)
                                if groups["answered"][part] is not None and groups["refused"][part] is not None
                                else None) for part in PARTS}
        out[label] = groups
    out["drift"] = {part: (round((out["ik"]["gap"][part] + out["ook"]["gap"][part]) / 2, 4)
                           if out["ik"]["gap"][part] is not None and out["ook"]["gap"][part] is not None else None)
                    for part in PARTS}
    return out


def zero_drift_answer_ook(summary: dict, answer_ook: float, ndigits: int | None = 2) -> float | None:
    """``reward.rules.answer_ook`` that would make the hybrid drift zero on these answers (see the module doc);
    rounded for reading, or exact with ``ndigits=None`` (``ppo.balance_reward`` uses the value)."""
    drift = summary.get("drift", {}).get("hybrid")
    if drift is None:
        return None
    value = float(answer_ook) + 2 * drift
    return value if ndigits is None else round(value, ndigits)


def with_suggestion(models: dict, answer_ook: float) -> dict:
    for summary in models.values():
        summary["zero_drift_answer_ook"] = zero_drift_answer_ook(summary, answer_ook)
    return models


def warnings_for(models: dict) -> list[str]:
    """Plain sentences for the console and the report when the reward prefers answering OOK questions."""
    found = []
    for name, summary in models.items():
        gap = summary["ook"]["gap"]
        if gap["hybrid"] is not None and gap["hybrid"] > 0:
            found.append(f"{name}: the reward PPO optimises scores its answered OOK questions {gap['hybrid']:+.2f} above "
                         "its refused ones: answering out-of-knowledge questions raises the reward")
        elif gap["rm"] is not None and gap["rm"] > 0:
            found.append(f"{name}: the reward model alone scores its answered OOK questions {gap['rm']:+.2f} above its "
                         "refused ones; only the rule terms hold the OOK boundary (reward.rules)")
        drift = summary.get("drift", {}).get("hybrid")
        if drift is not None and drift > 0:
            found.append(f"{name}: answering instead of refusing gains {drift:+.2f} per question on a half-IK, half-OOK "
                         "batch: a policy that cannot tell the classes apart drifts towards answering everything")
    return found


def run_audit(cfg, results: dict, questions: Sequence, build, detector=None) -> dict:
    """``results.json``'s ``reward_audit``: ``{status, reason, scorer, models: {name: summarise()}, warnings}``."""
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir
    from halluguard.reward.evaluate import load_build_context

    names = audited_models(results)
    if not names:
        return {"status": "skipped", "reason": "no trained model (sft, ppo, dpo, grpo) was evaluated"}
    folder = stage_dir(cfg, "reward")
    if not (folder / "manifest.json").is_file():
        return {"status": "skipped", "reason": f"no reward stage output in {folder} (run `halluguard reward`)"}
    try:
        scorers = load_scorers(cfg, Manifest.load(folder), detector)
    except HalluguardError as exc:
        return {"status": "failed", "reason": str(exc)}
    passages, _ = load_build_context(build.path.parent, build)
    labels = [q.label for q in questions]
    configured = float(cfg.reward.rules.answer_ook)
    balanced = ppo_balanced_answer_ook(cfg)
    models = {}
    for name in names:
        result = results[name]
        log.info("reward audit: scoring %s's %d answers", name, len(result.answers))
        # PPO trained against its balanced weight (ppo.balance_reward): audit it against that reward
        answer_ook = balanced if (name == "ppo" and balanced is not None) else configured
        model_scorers = scorers if answer_ook == configured else with_answer_ook(scorers, answer_ook)
        scores = score_answers(model_scorers, questions, result.answers, passages, float(cfg.reward.rm_weight))
        models[name] = summarise(scores, labels, result.refused)
        models[name]["answer_ook"] = answer_ook
        with_suggestion({name: models[name]}, answer_ook)
    return {"status": "ok", "reason": None,
            "scorer": {"reward_model": str(folder / "reward_model"), "rm_weight": float(cfg.reward.rm_weight),
                       "rules": {k: float(v) for k, v in cfg.reward.rules.items()},
                       "ppo_balanced_answer_ook": balanced},
            "models": models, "warnings": warnings_for(models)}


def ppo_balanced_answer_ook(cfg) -> float | None:
    """The ``answer_ook`` PPO set with ``ppo.balance_reward`` (from its manifest), or None."""
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir

    try:
        balance = Manifest.load(stage_dir(cfg, "ppo")).metrics.get("reward_balance")
    except HalluguardError:  # no PPO run (or an unreadable manifest): nothing was balanced
        return None
    return float(balance["answer_ook"]) if balance else None


def with_answer_ook(scorers: tuple, answer_ook: float) -> tuple:
    """The same reward model and detector, with rule terms whose ``answer_ook`` is replaced."""
    import copy

    rm, rules = scorers
    replaced = copy.copy(rules)
    replaced.answer_ook = float(answer_ook)
    return rm, replaced


def load_scorers(cfg, manifest, detector=None) -> tuple:
    """(reward model scorer, on the GPU when there is one; rule scorer) of a finished reward stage. ``detector``:
    the caller's refusal detector (eval's, whose encoder is loaded already), else a new one."""
    import torch

    from halluguard.refusal import RefusalDetector
    from halluguard.reward.rules import RuleScorer
    from halluguard.reward.scoring import RewardModelScorer

    rm = RewardModelScorer.load(manifest.output_path("reward_model", verify=False),
                                batch_size=int(cfg.reward.eval_batch_size),
                                device="cuda" if torch.cuda.is_available() else "cpu")
    detector = detector or RefusalDetector(threshold=float(cfg.reward.refusal_threshold))
    return rm, RuleScorer(cfg.reward.rules, detector)


def format_audit(audit: dict) -> str:
    """The console lines: per model, the mean reward of refused and answered questions of each label."""
    if audit.get("status") != "ok":
        return f"reward audit: {audit.get('status')} ({audit.get('reason')})"
    lines = ["reward audit (the reward on each trained model's own answers; mean rm / hybrid, refused vs answered):",
             f"{'model':<8} {'label':<5} {'refused n':>9} {'rm':>7} {'hybrid':>7} {'answered n':>10} {'rm':>7} "
             f"{'hybrid':>7} {'gap rm':>7} {'gap hyb':>7}"]

    def cell(v):
        return f"{v:+7.2f}" if v is not None else f"{'n/a':>7}"

    for name, summary in audit["models"].items():
        for label in ("ik", "ook"):
            g = summary[label]
            lines.append(f"{name:<8} {label:<5} {g['refused']['n']:>9} {cell(g['refused']['rm'])} "
                         f"{cell(g['refused']['hybrid'])} {g['answered']['n']:>10} {cell(g['answered']['rm'])} "
                         f"{cell(g['answered']['hybrid'])} {cell(g['gap']['rm'])} {cell(g['gap']['hybrid'])}")
    drifts = [f"{name} {summary['drift']['hybrid']:+.2f}" for name, summary in audit["models"].items()
              if summary.get("drift", {}).get("hybrid") is not None]
    if drifts:
        lines.append("drift (hybrid, mean of the IK and OOK gaps; > 0 pulls a policy without a boundary towards "
                     "answering): " + ", ".join(drifts))
    zero = [f"{name} {summary['zero_drift_answer_ook']:g}" for name, summary in audit["models"].items()
            if summary.get("zero_drift_answer_ook") is not None]
    if zero:
        lines.append("reward.rules.answer_ook that would make that drift zero on these answers: " + ", ".join(zero))
    lines += [f"  WARNING {w}" for w in audit.get("warnings", [])]
    return "\n".join(lines)
