"""Sampling responses: left-padded prompts, KV-cached ``generate``, responses that end at the first eos.

A response is its sampled tokens up to and including the first eos (or all ``max_new_tokens`` when
none came). ``generate`` pads finished rows with the pad token; those positions are outside the
response mask and outside every loss. The attention mask of a response comes from that eos position,
never from comparing token ids with the pad id: a policy may sample the pad token as a real token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from halluguard.generation import left_pad  # noqa: F401 (the one left-padding; callers import it from here too)


@dataclass
class Rollout:
    """One batch of prompts and sampled responses (one row per response)."""

    query_ids: torch.Tensor      # (B, P) prompt tokens, left-padded
    query_mask: torch.Tensor     # (B, P) 1 on prompt tokens
    response_ids: torch.Tensor   # (B, R) sampled tokens; pad after the first eos
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first eos
    texts: list[str] = field(default_factory=list)          # decoded responses, special tokens dropped
    prompt_index: list[int] = field(default_factory=list)   # rows of the prompt set
    trunk_hidden: torch.Tensor | None = None             # (B, P + R, H) output of the frozen blocks
    column_offset: int = 0                                   # prompt columns cut on the left by select()

    @property
    def batch_size(self) -> int:
        return self.query_ids.shape[0]

    @property
    def response_start(self) -> int:
        return self.query_ids.shape[1]

    @property
    def response_width(self) -> int:
        return self.response_ids.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)

    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt + response ids and the attention mask over them, ``(B, P + R)``."""
        ids = torch.cat([self.query_ids, self.response_ids], dim=1)
        mask = torch.cat([self.query_mask, self.response_mask.to(self.query_mask.dtype)], dim=1)
        return ids, mask

    def select(self, rows: Sequence[int]) -> Rollout:
        """The given rows, with the columns that are padding in all of them cut off (less to compute).

        Prompt columns are cut on the left, response columns on the right: response token ``t`` stays at
        index ``t``, so per-token tensors of the whole batch line up with ``[rows, :response_width]``.
        """
        index = torch.as_tensor(list(rows), device=self.query_ids.device)
        q_ids, q_mask = self.query_ids[index], self.query_mask[index]
        r_ids, r_mask = self.response_ids[index], self.response_mask[index]
        used = q_mask.sum(0).nonzero()
        first = int(used[0]) if len(used) else q_mask.shape[1] - 1
        width = max(1, int(r_mask.sum(1).max()))
        trunk = None
        if self.trunk_hidden is not None:
            trunk = self.trunk_hidden[index][:, first: self.response_start + width]
        return Rollout(q_ids[:, first:], q_mask[:, first:], r_ids[:, :width], r_mask[:, :width],
                       [self.texts[i] for i in rows] if self.texts else [],
                       [self.prompt_index[i] for i in rows] if self.prompt_index else [], trunk, first)


def mask_through_first_eos(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on every token up to and including the first eos of each row (all tokens when there is none)."""
    is_eos = response_ids == eos_id
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # eos tokens strictly before t
    return (eos_before == 0).float()


def generation_config(tokenizer, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                      greedy: bool = False):
    """Exactly the sampling PPO's log-probs assume: softmax(logits / T), no top-k, no repetition penalty."""
    from transformers import GenerationConfig

    sampling = ({"do_sample": False} if greedy else
                {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0})
    return GenerationConfig(max_new_tokens=int(max_new_tokens), pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, use_cache=True, **sampling)


@torch.no_grad()
def sample_responses(lm, tokenizer, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                     temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                     prompt_index: Sequence[int] = ()) -> Rollout:
    """Generate one response per prompt (sampled, or greedy for the probes) with the KV cache.

    Randomness comes from torch's global generator: the trainer seeds it per step.
    """
    device = next(lm.parameters()).device
    query_ids, query_mask = left_pad(prompt_ids, tokenizer.pad_token_id, device)
    config = generation_config(tokenizer, max_new_tokens, temperature, top_p, greedy)
    out = lm.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=config)
    response_ids = out[:, query_ids.shape[1]:]
    if response_ids.shape[1] == 0:  # cannot happen with max_new_tokens >= 1; keep shapes valid anyway
        response_ids = torch.full((len(prompt_ids), 1), tokenizer.eos_token_id, device=device)
    response_mask = mask_through_first_eos(response_ids, tokenizer.eos_token_id)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    texts = [tokenizer.decode(row[: int(n)], skip_special_tokens=True).strip()
             for row, n in zip(response_ids.tolist(), response_mask.sum(1).tolist())]
    return Rollout(query_ids, query_mask, response_ids, response_mask, texts, list(prompt_index))
