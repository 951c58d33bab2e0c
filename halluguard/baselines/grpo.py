"""GRPO baseline: TRL ``GRPOTrainer`` with a LoRA adapter and the project's scorer as reward (``ppo.algo=grpo``).

TRL 1.16 defaults to ``beta=0`` (no KL to the reference); here ``ppo.grpo.beta`` must be > 0, and the
reference is the start model (the adapter disabled). Each step samples ``ppo.grpo.num_generations``
completions for each of ``ppo.batch_size`` prompts and takes one optimiser step on them (gradients
accumulated over one prompt's group at a time, to bound memory).

The scorer sees what PPO's does: ``score(prompts, responses, meta)`` with the meta of each completion's
own prompt. TRL repeats and shuffles prompts, so each dataset row carries its index into ``meta``
(``row_index``, a column TRL passes through to reward functions).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.grpo")


def scorer_reward(scorer, meta: Sequence[dict]):
    """A TRL reward function that calls ``scorer.score`` with each completion's prompt meta."""
    from halluguard.sft import assistant_text

    def halluguard_scorer(prompts, completions, row_index, **_):
        responses = [assistant_text(c) if isinstance(c, list) else str(c) for c in completions]
        metas = [meta[int(i)] for i in row_index]
        scores = scorer.score([list(p) for p in prompts], responses, metas)
        return [float(s) for s in scores]

    return halluguard_scorer


def check_settings(ppo_cfg, prompts: Sequence, meta: Sequence) -> None:
    g = ppo_cfg.grpo
    if not g.beta > 0:
        raise HalluguardError(f"ppo.grpo.beta must be > 0, got {g.beta}: without the KL term GRPO drifts from the "
                              "reference unchecked (TRL's default of 0 is never used here)")
    if g.num_generations < 2:
        raise HalluguardError(f"ppo.grpo.num_generations must be >= 2 (GRPO compares completions within a group), "
                              f"got {g.num_generations}")
    if len(prompts) != len(meta):
        raise HalluguardError(f"GRPO got {len(prompts)} prompts but {len(meta)} meta entries; they must be parallel")
    if not prompts:
        raise HalluguardError("GRPO got no prompts; check the build's ppo_prompts")


def train_grpo(policy_source: str, model_cfg, ppo_cfg, prompts: Sequence[list[dict]], scorer,
               meta: Sequence[dict], out_dir: Path, seed: int) -> dict:
    """Train a LoRA adapter with GRPO from ``policy_source``; save it to ``out_dir/adapter``; return a summary."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from halluguard.baselines import run_summary, save_adapter
    from halluguard.lora import lora_config
    from halluguard.prompting import render_prompt
    from halluguard.sft import load_policy_for_training, resolve_use_cpu, show_progress_bar

    check_settings(ppo_cfg, prompts, meta)
    g = ppo_cfg.grpo
    model, tokenizer = load_policy_for_training(policy_source, model_cfg)
    lengths = [len(tokenizer(render_prompt(tokenizer, list(p)), add_special_tokens=False)["input_ids"])
               for p in prompts]
    if max(lengths) > ppo_cfg.max_prompt_length:
        raise HalluguardError(f"{sum(n > ppo_cfg.max_prompt_length for n in lengths)} GRPO prompts are longer than "
                              f"ppo.max_prompt_length={ppo_cfg.max_prompt_length} tokens (longest {max(lengths)}); "
                              "raise it or show fewer passages (prompt.passages)")
    dataset = Dataset.from_list([{"prompt": list(p), "row_index": i} for i, p in enumerate(prompts)])
    peft_config = lora_config(ppo_cfg.lora, "CAUSAL_LM", model, key="ppo.lora")
    with tempfile.TemporaryDirectory(prefix="hg-grpo-") as scratch:
        args = GRPOConfig(
            output_dir=scratch, use_cpu=resolve_use_cpu(ppo_cfg.use_cpu), bf16=False, fp16=False, seed=seed,
            beta=float(g.beta), num_generations=int(g.num_generations),
            # One rollout of batch_size prompts x num_generations completions per optimiser step, its gradient
            # accumulated one group at a time: SFT peaked at 12 GB for 8 sequences of ~340 tokens (135M model,
            # every layer trained), so 32 at once would not fit a small machine.
            per_device_train_batch_size=int(g.num_generations), gradient_accumulation_steps=int(ppo_cfg.batch_size),
            max_completion_length=int(ppo_cfg.max_new_tokens), temperature=float(ppo_cfg.temperature),
            top_p=float(ppo_cfg.top_p), max_steps=int(g.max_steps), learning_rate=float(g.learning_rate),
            max_grad_norm=float(ppo_cfg.max_grad_norm), logging_steps=1, save_strategy="no", report_to=[],
            disable_tqdm=not show_progress_bar(), activation_checkpointing=False, dataloader_num_workers=0,
            remove_unused_columns=False,  # row_index must reach the reward function
        )
        trainer = GRPOTrainer(model=model, reward_funcs=scorer_reward(scorer, meta), args=args,
                              train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    save_adapter(trainer, tokenizer, Path(out_dir))
    return {**run_summary(trainer, result, seconds),
            "prompts": {"seen": len(prompts), "longest_tokens": max(lengths)}}
