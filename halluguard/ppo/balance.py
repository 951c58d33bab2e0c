"""Balance the reward on the reference's own samples before PPO starts (``ppo.balance_reward``).

A policy that cannot yet tell in-knowledge from out-of-knowledge prompts can still raise its reward by
answering more, or by refusing more, whichever the reward pays for on average. That average is the
*drift* of :mod:`halluguard.evaluation.reward_audit`: the mean over the two labels of (mean score of
answered minus mean score of refused responses). Measured here, the reward model scores any answer above
a refusal on both labels, and PPO walked towards answering everything whenever the drift was positive.

Before the first update this module samples the start policy (PPO's adapter is still the identity, so
these are the reference's answers) on a label-balanced set of training prompts, scores them with the
reward PPO will use, and sets ``reward.rules.answer_ook`` to the value at which the drift is zero (raising
the penalty by d lowers every answered OOK score by d, the drift by d / 2). What is left for PPO to gain is
then refusing *where* it should: the boundary, not the overall rate. The value is a measurement on a
sample, not a guarantee: the policy's answers move during training.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from halluguard.errors import HalluguardError
from halluguard.evaluation.reward_audit import summarise, zero_drift_answer_ook

log = logging.getLogger("halluguard.ppo")
_STREAM = 2**31 - 2


@dataclass
class Balance:
    """What ``ppo.balance_reward`` measured and set (stored in the PPO manifest and summary)."""

    answer_ook_before: float
    answer_ook: float
    drift_before: float
    drift_after: float
    prompts: int
    refused: dict  # {"ik": [refused, n], "ook": [refused, n]}

    def to_dict(self) -> dict:
        return asdict(self)


def reward_parts(scorer, prompts, responses, meta) -> tuple[dict[str, np.ndarray], object]:
    """``{rm, rules, hybrid}`` scores of each response and the rule scorer whose ``answer_ook`` balancing sets.
    ``rm`` is already weighted by the hybrid's ``rm_weight`` (zero for ``reward.scorer=rules``)."""
    from halluguard.reward.rules import RuleScorer
    from halluguard.reward.scoring import HybridScorer

    if isinstance(scorer, HybridScorer):
        rules = scorer.rules
        rm = (scorer.rm_weight * _numpy(scorer.rm.score(prompts, responses, meta))
              if scorer.rm is not None and scorer.rm_weight != 0 else np.zeros(len(responses)))
    elif isinstance(scorer, RuleScorer):
        rules, rm = scorer, np.zeros(len(responses))
    else:
        raise HalluguardError("ppo.balance_reward sets reward.rules.answer_ook, which only reward.scorer=hybrid or "
                              f"rules use; this reward is {type(scorer).__name__}: set ppo.balance_reward=false")
    rule_scores = _numpy(rules.score(prompts, responses, meta))
    return {"rm": rm, "rules": rule_scores, "hybrid": rule_scores + rm}, rules


def balanced_answer_ook(parts: dict[str, np.ndarray], labels: Sequence[str], refused: Sequence[bool],
                        answer_ook: float) -> tuple[float, float, float]:
    """(new answer_ook, drift before, drift after) for scored samples; a clear error when a label has no
    refused or no answered sample (the drift is then not measurable)."""
    summary = summarise(parts, labels, refused)
    for label in ("ik", "ook"):
        for side in ("refused", "answered"):
            if summary[label][side]["n"] == 0:
                raise HalluguardError(
                    f"ppo.balance_reward: the start policy {side} none of its {label.upper()} samples "
                    f"({summary[label]['refused']['n'] + summary[label]['answered']['n']} of them), so answering "
                    "and refusing cannot be compared there. Start PPO from an SFT reference that sometimes refuses "
                    "and sometimes answers (ppo.start=sft), raise ppo.balance_prompts, or set ppo.balance_reward=false")
    drift = float(summary["drift"]["hybrid"])
    # answer_ook is a magnitude: when even 0 leaves the reward pulling towards refusal, 0 is the closest it gets.
    new = max(0.0, zero_drift_answer_ook(summary, answer_ook, ndigits=None))
    return new, drift, drift - (new - float(answer_ook)) / 2


def balance_reward(model, tokenizer, scorer, prompts, settings, detector, seed: int) -> Balance:
    """Sample the start policy on ``settings.balance_prompts`` training prompts (half per label), then set the
    scorer's ``answer_ook`` so that its drift on those samples is zero. ``model``: the trainer's
    :class:`~halluguard.ppo.value_head.PolicyWithValue`, before its first update."""
    from halluguard.ppo.trainer import sample_phase, step_seed

    if detector is None:
        raise HalluguardError("ppo.balance_reward needs the refusal detector to tell refusals from answers")
    pools = prompts.label_pools()
    per_label = max(1, int(settings.balance_prompts) // 2)
    # Streams of their own (step numbers PPO never reaches): PPO's own draws stay as without balancing.
    rng = np.random.default_rng(step_seed(seed, _STREAM))
    # A label with fewer prompts than that is sampled again (its responses differ: PPO samples at temperature).
    indices = [int(i) for label in ("ook", "ik") for i in np.resize(rng.permutation(pools[label]), per_label)]
    torch.manual_seed(step_seed(seed, _STREAM + 1))
    texts = []
    for start in range(0, len(indices), int(settings.batch_size)):
        chunk = indices[start:start + int(settings.batch_size)]
        texts += sample_phase(model, tokenizer, prompts, chunk, settings).texts
    messages = [prompts.messages[i] for i in indices]
    meta = [prompts.meta[i] for i in indices]
    labels = [m.get("label") for m in meta]
    parts, rules = reward_parts(scorer, messages, texts, meta)
    refused = [bool(r) for r in detector.is_refusal(texts)]
    before = float(rules.answer_ook)
    new, drift, after = balanced_answer_ook(parts, labels, refused, before)
    rules.answer_ook = new
    counts = {label: [sum(r for r, lab in zip(refused, labels) if lab == label), labels.count(label)]
              for label in ("ik", "ook")}
    log.info("reward balanced on %d reference samples: answer_ook %.3g -> %.3g (drift %+.3f -> %+.3f)",
             len(texts), before, new, drift, after)
    return Balance(answer_ook_before=round(before, 4), answer_ook=round(new, 4), drift_before=round(drift, 4),
                   drift_after=round(after, 4), prompts=len(texts), refused=counts)


def _numpy(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)
