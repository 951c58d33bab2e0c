"""The PPO prompt set: chat-rendered, tokenized once, length-checked before training starts.

Which prompts a step uses is a function of ``(seed, step)`` alone (an epoch-wise shuffle of the whole
set), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from halluguard.errors import HalluguardError


@dataclass
class PromptSet:
    messages: list[list[dict]]    # system + user messages (what the scorer reads)
    token_ids: list[list[int]]    # the chat-rendered prompt, tokenized (what the policy reads)
    meta: list[dict]              # scorer meta per prompt: label, evidence, answers
    case_ids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def labels(self) -> list[str]:
        return [m.get("label", "") for m in self.meta]

    def step_indices(self, seed: int, step: int, batch_size: int, rank: int = 0, world: int = 1,
                     balance: bool = False) -> list[int]:
        """The prompts of ``step`` on process ``rank``: consecutive slices of per-epoch shuffles.

        ``balance``: half the batch from the out-of-knowledge prompts and half from the in-knowledge ones,
        each label with its own shuffle, interleaved. A batch then always holds both kinds, so its mean
        reward and its two refusal rates compare from step to step (unbalanced 8-prompt batches swung
        between 1 and 7 OOK prompts, and the batch reward with them)."""
        if not balance:
            return _slice(list(range(len(self))), seed, 0, step, batch_size, rank, world)
        pools = self.label_pools()
        n_ook = batch_size // 2
        ook = _slice(pools["ook"], seed, 1, step, n_ook, rank, world)
        ik = _slice(pools["ik"], seed, 2, step, batch_size - n_ook, rank, world)
        out = [i for pair in zip(ik, ook) for i in pair]
        return out + ik[len(ook):]

    def label_pools(self) -> dict[str, list[int]]:
        """Prompt positions per label; an error when ``balance`` cannot draw both kinds."""
        pools = {label: [i for i, m in enumerate(self.meta) if m.get("label") == label] for label in ("ook", "ik")}
        empty = [label for label, idx in pools.items() if not idx]
        if empty:
            raise HalluguardError(f"ppo.balance_labels=true needs both ik and ook prompts, but the prompt set has "
                                  f"no {' or '.join(empty)} prompt ({len(self)} prompts); set ppo.balance_labels=false")
        return pools

    def probe_indices(self, count: int, seed: int) -> list[int]:
        """``count`` fixed prompts picked by ``seed``, alternating out-of-knowledge and in-knowledge."""
        rng = random.Random(seed)
        by_label = {label: [i for i, m in enumerate(self.meta) if m.get("label") == label] for label in ("ook", "ik")}
        for idx in by_label.values():
            rng.shuffle(idx)
        out: list[int] = []
        while len(out) < min(count, len(self)) and any(by_label.values()):
            for label in ("ook", "ik"):
                if by_label[label] and len(out) < count:
                    out.append(by_label[label].pop(0))
        return out


def _slice(pool: list[int], seed: int, stream: int, step: int, count: int, rank: int, world: int) -> list[int]:
    """``count`` positions of ``pool`` for ``(step, rank)``, walking epoch-wise shuffles of it in order."""
    n = len(pool)
    first = step * count * world + rank * count
    out = []
    for pos in range(first, first + count):
        epoch, i = divmod(pos, n)
        out.append(pool[int(_permutation(seed, stream, epoch, n)[i])])
    return out


@lru_cache(maxsize=16)
def _permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    # stream 0 (the whole set) keeps the seed sequence of runs made before balancing existed
    return np.random.default_rng([seed, epoch] if stream == 0 else [seed, stream, epoch]).permutation(n)


def build_prompt_set(messages: Sequence[list[dict]], meta: Sequence[dict], tokenizer, max_prompt_length: int,
                     max_new_tokens: int = 0, context_window: int | None = None,
                     case_ids: Sequence[str] = (), questions: Sequence[str] = ()) -> PromptSet:
    """Render and tokenize every prompt; refuse, before any training, prompts that cannot fit."""
    from halluguard.prompting import render_prompt

    if not messages:
        raise HalluguardError("the PPO prompt set is empty: the build wrote no ppo_prompts (re-run `halluguard build` "
                              "with questions)")
    if len(meta) != len(messages):
        raise HalluguardError(f"{len(messages)} PPO prompts but {len(meta)} meta entries")
    token_ids = [tokenizer(render_prompt(tokenizer, list(m)), add_special_tokens=False)["input_ids"] for m in messages]
    lengths = [len(t) for t in token_ids]
    too_long = sum(1 for n in lengths if n > max_prompt_length)
    if too_long:
        raise HalluguardError(
            f"{too_long} of {len(lengths)} PPO prompts are longer than ppo.max_prompt_length={max_prompt_length} "
            f"tokens (the longest has {max(lengths)}): raise ppo.max_prompt_length, or show fewer or shorter "
            "passages (prompt.passages, prompt.max_passage_chars) and re-run `halluguard build`")
    if context_window and max(lengths) + max_new_tokens > context_window:
        raise HalluguardError(
            f"the longest PPO prompt ({max(lengths)} tokens) plus ppo.max_new_tokens={max_new_tokens} exceeds the "
            f"model's context window of {context_window} tokens: lower ppo.max_new_tokens or ppo.max_prompt_length "
            "(and shorten the prompts: prompt.passages, prompt.max_passage_chars)")
    return PromptSet([list(m) for m in messages], token_ids, [dict(m) for m in meta],
                     [str(c) for c in case_ids], [str(q) for q in questions])
