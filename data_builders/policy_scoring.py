"""What the reference model itself says about candidate responses.

* :func:`sample_fabrications` - on-policy negatives: the answers this model really gives to an
  out-of-knowledge prompt (kept only when the refusal detector says they are not refusals).
* :func:`mean_token_nll` - how implausible the model finds a response after the prompt (mean
  negative log-likelihood per response token). A negative far above the model's own outputs is
  "too fake": the policy would never produce it, so preferring against it teaches nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from halluguard.generation import generate


def sample_fabrications(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48,
                        temperature: float = 0.8, batch_size: int = 8, seed: int = 0) -> list[str]:
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    temperature=temperature, seed=seed, progress=True, desc="on-policy samples")


def mean_token_nll(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                   batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Mean NLL (nats per token) of each response given its prompt; the eos after it is counted."""
    import torch

    device = next(model.parameters()).device
    rows = []
    for prompt, response in zip(prompts, responses):
        p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        r_ids = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append((p_ids, r_ids))
    out = np.empty(len(rows), dtype=np.float64)
    for start in tqdm(range(0, len(rows), batch_size), desc="scoring NLL", disable=not progress, leave=False):
        batch = rows[start:start + batch_size]
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, r) in enumerate(batch):  # right padding: positions stay 0..n-1 for every row
            ids[i, :len(p) + len(r)] = torch.tensor(p + r)
            mask[i, :len(p) + len(r)] = 1
            target[i, len(p):len(p) + len(r)] = True
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        tmask = target[:, 1:]
        per_row = (nll * tmask).sum(1) / tmask.sum(1).clamp(min=1)
        out[start:start + len(batch)] = per_row.cpu().numpy()
    return out


def sampled_accuracy(model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[Sequence[str]],
                     samples: int = 4, max_new_tokens: int = 32, temperature: float = 0.7, batch_size: int = 8,
                     seed: int = 0) -> list[float]:
    """Share of ``samples`` sampled answers per prompt that contain a gold answer.

    The known/unknown probe of R-Tuning (Zhang et al., 2024) and "Alignment for Honesty" (Yang et al.,
    2023): a question the model answers correctly most of the time is *known* to it.
    """
    from data_builders.answer_types import contains_answer

    repeated = [p for p in prompts for _ in range(samples)]
    outs = generate(model, tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    temperature=temperature, seed=seed, progress=True, desc="model probe")
    return [sum(contains_answer(o, gold) for o in outs[i * samples:(i + 1) * samples]) / samples
            for i, gold in enumerate(answers)]
