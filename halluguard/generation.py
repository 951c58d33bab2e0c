"""Batched greedy generation: left padding, batches sorted by length so little compute is spent
on padding, outputs returned in the caller's order."""

from __future__ import annotations

from typing import Any, Sequence

from tqdm.auto import tqdm


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 8, progress: bool = False, desc: str = "generating",
             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> list[str]:
    """Greedy by default; ``temperature > 0`` samples (seeded by ``seed`` for repeatability)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    if tokenizer.padding_side != "left":
        raise ValueError("generation needs left padding (tokenizer.padding_side='left')")
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, **sampling,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = ids[:, enc["input_ids"].shape[1]:]
        for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[i] = text.strip()
    return out
