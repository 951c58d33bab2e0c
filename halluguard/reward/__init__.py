"""The reward: rule terms, a trained reward model, and their hybrid, behind one scoring interface.

Every consumer (PPO, GRPO, evaluation) calls ``Scorer.score(prompts, responses, meta)``; see
:mod:`halluguard.reward.scoring`. ``make_scorer(cfg, reward_dir)`` picks the one the config names.
"""

from halluguard.reward.rules import RuleScorer, content_tokens, support_score
from halluguard.reward.scoring import HybridScorer, RewardModelScorer, Scorer, make_scorer

__all__ = ["Scorer", "RuleScorer", "RewardModelScorer", "HybridScorer", "make_scorer", "support_score",
           "content_tokens"]
