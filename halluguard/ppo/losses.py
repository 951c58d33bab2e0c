"""PPO's losses on one minibatch of response tokens (Schulman et al. 2017), averaged over real tokens.

* policy: ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))`` with ``ratio = pi(a|s) / pi_old(a|s)``
  (the clipped surrogate, negated to minimise); ``clip_frac`` is the share of tokens where the clipped
  term was the larger one (where clipping took the gradient away);
* value: ``0.5 * max((V - R)^2, (V_clip - R)^2)`` with ``V_clip = V_old + clip(V - V_old, -eps_v, eps_v)``;
* ``approx_kl``: KL(pi_old || pi) by the k3 estimator ``(ratio - 1) - log ratio`` (Schulman 2020), how far
  one update moved the policy;
* entropy of the policy's next-token distribution, for monitoring.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from halluguard.ppo.masked import masked_mean


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> PolicyLoss:
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return PolicyLoss(loss, clip_frac, approx_kl)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float) -> ValueLoss:
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped_err > unclipped_err).to(values.dtype), mask)
    return ValueLoss(loss, clip_frac)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy ``-(p * log p).sum(-1)`` of the next-token distribution, ``(B, T)``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
