"""DPO baseline: TRL ``DPOTrainer`` with a LoRA adapter on the build's train pairs (``ppo.algo=dpo``).

The reference is the start model itself: with a peft model and no ``ref_model``, DPOTrainer computes
the reference log-probs with the adapter disabled. Pairs that cannot train are left out and counted:
an empty side, chosen identical to rejected, or prompt + a side longer than ``ppo.dpo.max_length``
(TRL would truncate the end of the response, which is the part the preference is about).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.dpo")


def prepare_pairs(rows: Iterable[dict], tokenizer, max_length: int) -> tuple[list[dict], Counter]:
    """TRL conversational rows (prompt, chosen, rejected) that can train, and counts of those left out."""
    from halluguard.sft import assistant_text, tokenize_example

    kept, counts = [], Counter()
    for row in rows:
        counts["seen"] += 1
        chosen, rejected = assistant_text(row.get("chosen")), assistant_text(row.get("rejected"))
        if not chosen.strip() or not rejected.strip():
            counts["skipped_empty_side"] += 1
            continue
        if " ".join(chosen.split()) == " ".join(rejected.split()):
            counts["skipped_identical"] += 1
            continue
        prompt = list(row.get("prompt") or [])
        longest = max(len(tokenize_example(tokenizer, prompt, side)[0]) for side in (chosen, rejected))
        if longest > max_length:
            counts["dropped_too_long"] += 1
            continue
        kept.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    counts["kept"] = len(kept)
    return kept, counts


def train_dpo(policy_source: str, model_cfg, ppo_cfg, train_pairs, out_dir: Path, seed: int) -> dict:
    """Train a LoRA adapter with DPO from ``policy_source``; save it to ``out_dir/adapter``; return a summary."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from halluguard.baselines import run_summary, save_adapter
    from halluguard.lora import lora_config
    from halluguard.sft import load_policy_for_training, resolve_use_cpu, show_progress_bar

    d = ppo_cfg.dpo
    if not d.beta > 0:
        raise HalluguardError(f"ppo.dpo.beta must be > 0 (it is DPO's pull toward the reference), got {d.beta}")
    model, tokenizer = load_policy_for_training(policy_source, model_cfg)
    rows, counts = prepare_pairs(train_pairs, tokenizer, int(d.max_length))
    if not rows:
        raise HalluguardError(f"no trainable pairs left for DPO ({dict(counts)}); check the build's pairs "
                              "or raise ppo.dpo.max_length")
    peft_config = lora_config(ppo_cfg.lora, "CAUSAL_LM", model, key="ppo.lora")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="hg-dpo-") as scratch:
        args = DPOConfig(
            output_dir=scratch, use_cpu=resolve_use_cpu(ppo_cfg.use_cpu), bf16=False, fp16=False, seed=seed,
            # batch_size pairs per optimiser step, accumulated one pair (chosen + rejected) at a time: memory stays
            # that of two sequences, where 8 pairs at once would be 16 (SFT peaked at 12 GB for 8 on the 135M model).
            per_device_train_batch_size=1, gradient_accumulation_steps=int(d.batch_size), beta=float(d.beta),
            num_train_epochs=float(d.epochs), max_steps=int(d.max_steps), learning_rate=float(d.learning_rate),
            max_length=int(d.max_length),
            max_grad_norm=float(ppo_cfg.max_grad_norm), logging_steps=1, save_strategy="no", report_to=[],
            disable_tqdm=not show_progress_bar(), activation_checkpointing=False, dataloader_num_workers=0,
        )
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    save_adapter(trainer, tokenizer, out_dir)
    return {**run_summary(trainer, result, seconds), "pairs": dict(counts)}
