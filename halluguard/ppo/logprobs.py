"""Per-token log-probs of the sampled response tokens, and the rollout's values.

Log-probs are those of the sampling distribution: logits divided by ``ppo.temperature`` (for the
reference too, so the KL compares like with like). The no-grad passes run in chunks of
``ppo.mini_batch_size`` responses, which bounds peak memory at the size the update uses anyway.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from halluguard.ppo.losses import entropy_from_logits
from halluguard.ppo.rollout import Rollout
from halluguard.ppo.value_head import PolicyWithValue


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / T)[token]`` per position, ``(B, R)``."""
    logits = logits / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class PolicyPass(NamedTuple):
    logprobs: torch.Tensor  # (B, R) log pi_old(a_t | s_t)
    values: torch.Tensor    # (B, R) V_old(s_t)
    entropy: torch.Tensor   # (B, R) entropy of pi_old(. | s_t)


def _chunks(rollout: Rollout, size: int):
    for start in range(0, rollout.batch_size, size):
        rows = list(range(start, min(start + size, rollout.batch_size)))
        yield rows, rollout.select(rows)


@torch.no_grad()
def policy_logprobs_and_values(model: PolicyWithValue, rollout: Rollout, temperature: float,
                               chunk_size: int) -> PolicyPass:
    """One forward pass of the current policy: log-probs, values and entropy of every response token.

    Also keeps the frozen trunk's output in ``rollout.trunk_hidden`` (when the model has one), so the
    reference pass and the update start from it instead of recomputing the frozen blocks.
    """
    shape = rollout.response_ids.shape
    out = [torch.zeros(shape, device=rollout.response_ids.device) for _ in range(3)]
    trunk_all = None
    for rows, part in _chunks(rollout, chunk_size):
        ids, mask = part.model_inputs()
        logits, values, trunk = model.rollout_pass(ids, mask, part.response_start, part.response_width)
        width = part.response_width
        out[0][rows, :width] = token_logprobs(logits, part.response_ids, temperature)
        out[1][rows, :width] = values.float()
        out[2][rows, :width] = entropy_from_logits(logits / temperature)
        if trunk is not None:
            if trunk_all is None:
                trunk_all = trunk.new_zeros((rollout.batch_size, rollout.response_start + rollout.response_width,
                                             trunk.shape[-1]))
            trunk_all[rows, part.column_offset: part.column_offset + trunk.shape[1]] = trunk
    rollout.trunk_hidden = trunk_all
    mask = rollout.response_mask
    return PolicyPass(out[0] * mask, out[1] * mask, out[2] * mask)


@torch.no_grad()
def reference_logprobs(model: PolicyWithValue, rollout: Rollout, temperature: float, chunk_size: int) -> torch.Tensor:
    """Log-probs of the response tokens under the reference (PPO's adapter disabled), ``(B, R)``."""
    out = torch.zeros(rollout.response_ids.shape, device=rollout.response_ids.device)
    for rows, part in _chunks(rollout, chunk_size):
        ids, mask = part.model_inputs()
        logits = model.reference_logits(ids, mask, part.response_start, part.response_width, part.trunk_hidden)
        out[rows, :part.response_width] = token_logprobs(logits, part.response_ids, temperature)
    return out * rollout.response_mask
