"""Per-token rewards and generalised advantage estimation (Schulman et al. 2016) over response tokens.

The episode is one response: action ``t`` is its ``t``-th token, the state before it is the prompt plus
the tokens so far. Rewards (Ziegler et al. 2019): ``-beta * kl_t`` at every token, plus the scorer's
score at the last token (the eos, or the last sampled token when ``max_new_tokens`` cut the response).
"""

from __future__ import annotations

import torch


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last response token, ``(B,)`` (0 for an empty row)."""
    return (mask.sum(1).long() - 1).clamp(min=0)


def kl_penalised_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``(B, T)`` rewards: ``-beta * kl`` per response token, plus ``scores`` ``(B,)`` at each row's last token."""
    rewards = -beta * kl * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, both ``(B, T)``, zero where ``mask`` is 0.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``, where the
    step after the last response token is terminal (``V = 0``, ``A = 0``). Returns are ``A_t + V_t``,
    the value target (the lambda-return).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        alive = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * alive * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return advantages, returns
