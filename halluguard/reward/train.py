"""Reward-model training with TRL's ``RewardTrainer`` on the build's preference pairs.

The model is a sequence-score head (``AutoModelForSequenceClassification``, ``num_labels=1``) on
the policy's own backbone and tokenizer, so it reads exactly the tokens the policy writes. LoRA
(peft; the score head is trained in full beside the adapter) or full fine-tuning by config, TRL's
reward centering (``center_rewards_coefficient``), and a saved normalisation (mean/std of the
trained model's scores over the train split's chosen and rejected responses) that PPO applies.

Pairs are tokenized here rather than by TRL, so that every pair left out is counted:
an empty side, chosen identical to rejected, or (``overlong=drop``) longer than ``max_length``.
With ``overlong=truncate`` the middle of a long prompt is cut (see ``scoring.encode``), counted too.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from halluguard.artifacts import atomic_write_json
from halluguard.errors import HalluguardError
from halluguard.reward.scoring import INFO, NORMALISATION, RewardModelScorer, encode, keep_first_layers

log = logging.getLogger("halluguard.reward")


@dataclass
class PreparedPairs:
    rows: list[dict]  # {"chosen_ids", "rejected_ids"} plus the source row's index
    counts: Counter = field(default_factory=Counter)


def _text(side) -> str:
    if isinstance(side, list):
        return "".join(str(m.get("content") or "") for m in side if m.get("role") == "assistant")
    return "" if side is None else str(side)


def prepare_pairs(dataset, tokenizer, max_length: int, overlong: str) -> PreparedPairs:
    """Tokenize ``prompt + chosen`` / ``prompt + rejected``; skip and count the pairs that cannot train."""
    out = PreparedPairs(rows=[])
    for i, row in enumerate(dataset):
        out.counts["seen"] += 1
        chosen, rejected = _text(row.get("chosen")), _text(row.get("rejected"))
        if not chosen.strip() or not rejected.strip():
            out.counts["skipped_empty_side"] += 1
            continue
        if " ".join(chosen.split()) == " ".join(rejected.split()):
            out.counts["skipped_identical"] += 1
            continue
        prompt = list(row.get("prompt") or [])
        c_ids, c_status = encode(tokenizer, prompt, chosen, max_length, overlong)
        r_ids, r_status = encode(tokenizer, prompt, rejected, max_length, overlong)
        if c_ids is None or r_ids is None:
            out.counts["dropped_too_long"] += 1
            continue
        if "truncated" in (c_status, r_status):
            out.counts["truncated_prompt"] += 1
        out.rows.append({"chosen_ids": c_ids, "rejected_ids": r_ids, "source": i})
    out.counts["kept"] = len(out.rows)
    return out


def _load_backbone(source: str, model_cfg, finetune: str, keep_layers: int = 0):
    import torch
    from transformers import AutoModelForSequenceClassification

    from halluguard.models import _load_failure, _torch_dtype, configure_padding, load_tokenizer

    tokenizer = load_tokenizer(source, model_cfg)
    dtype = _torch_dtype(model_cfg.dtype)
    if dtype != torch.float32:
        log.warning("reward training on CPU runs in float32 (model.dtype=%s ignored for training)", model_cfg.dtype)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=torch.float32, trust_remote_code=bool(model_cfg.trust_remote_code))
    except (OSError, ValueError) as exc:
        raise HalluguardError(_load_failure("reward backbone", model_cfg.name_or_path, exc)) from None
    keep_first_layers(model, keep_layers)
    configure_padding(model, tokenizer, model_cfg.pad_token)
    return model, tokenizer


def train_reward_model(train_pairs, source: str, model_cfg, reward_cfg, out_dir: Path | None,
                       seed: int = 0) -> dict:
    """Train on ``train_pairs`` (TRL conversational preference rows), save to ``out_dir``; return a summary.

    ``out_dir`` receives ``weights/`` (peft adapter + score head, or the full model, with the tokenizer),
    ``reward_model.json`` (how to load it) and ``normalisation.json`` (mean/std of raw scores on train).

    Under ``accelerate launch`` every process calls this (TRL's trainer shards the pairs and all-reduces
    the gradients); process 0 passes its ``out_dir``, the others None: they train and write nothing. The
    summary of the others lacks the normalisation and the train accuracy (process 0 computes them).
    """
    import torch
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from halluguard.ppo.distributed import deepspeed_zero_stage, write_weights_digest

    t = reward_cfg.train
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    # The score head and the LoRA matrices start random, drawn before TRL seeds anything: seed them here, or
    # two runs with the same seed differ (and so would the processes of one run before DDP's first sync).
    torch.manual_seed(seed)
    model, tokenizer = _load_backbone(source, model_cfg, t.finetune, int(t.keep_layers))
    rows = list(train_pairs)
    if t.max_pairs and len(rows) > t.max_pairs:
        rows = random.Random(seed).sample(rows, t.max_pairs)
    prepared = prepare_pairs(rows, tokenizer, t.max_length, t.overlong)
    if not prepared.rows:
        raise HalluguardError(f"no trainable pairs left for the reward model ({dict(prepared.counts)}); "
                              "check the build's pairs or raise reward.train.max_length")
    dataset = Dataset.from_list([{"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]}
                                 for r in prepared.rows])

    peft_config = None
    if t.finetune == "lora":
        from halluguard.lora import lora_config

        peft_config = lora_config(t.lora, "SEQ_CLS", model, key="reward.train.lora")
    use_cpu = (not torch.cuda.is_available()) if t.use_cpu is None else bool(t.use_cpu)
    with tempfile.TemporaryDirectory(prefix="hg-reward-") as scratch:
        args = TRLRewardConfig(
            output_dir=scratch, use_cpu=use_cpu, bf16=False, fp16=False, seed=seed,
            per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
            num_train_epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.learning_rate,
            weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio, lr_scheduler_type="linear",
            logging_steps=t.logging_steps, save_strategy="no", report_to=[], disable_tqdm=True,
            gradient_checkpointing=False, max_length=None, center_rewards_coefficient=t.center_rewards_coefficient,
            dataloader_num_workers=0, remove_unused_columns=False,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                peft_config=peft_config)
        start = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - start
        history = [h for h in trainer.state.log_history if "loss" in h]
        model = trainer.model
        write_weights_digest("reward", model)
        if deepspeed_zero_stage() == 3:  # untested here (no GPU, no deepspeed)
            # ZeRO-3 leaves each process a slice of every weight: TRL's save gathers one whole copy (every
            # process must call it), and process 0 reloads that copy to save and normalise below.
            gathered = Path(scratch) / "gathered"
            trainer.save_model(str(gathered))
            if out_dir is not None:
                model = _reload_gathered(source, model_cfg, t, gathered)
    summary = {
        "pairs": dict(prepared.counts),
        "overlong_policy": t.overlong,
        "finetune": t.finetune,
        "steps": int(result.global_step),
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / max(1, result.global_step), 4),
        "final_loss": history[-1]["loss"] if history else float(result.training_loss),
        "train_loss": float(result.training_loss),
    }
    if out_dir is None:  # a process other than 0: its shard is trained, process 0 writes
        return summary
    weights = out_dir / "weights"
    model.save_pretrained(str(weights))
    tokenizer.save_pretrained(str(weights))
    atomic_write_json(out_dir / INFO, {"finetune": t.finetune, "base": str(source), "weights": "weights",
                                       "max_length": int(t.max_length), "overlong": t.overlong,
                                       "keep_layers": int(t.keep_layers)})

    # Normalisation: raw scores of the trained model over the train split's chosen + rejected responses.
    if t.finetune == "lora":
        model = model.merge_and_unload()
    scorer = RewardModelScorer(model.to("cpu").float(), tokenizer, max_length=t.max_length,
                               batch_size=reward_cfg.eval_batch_size)
    kept = [rows[r["source"]] for r in prepared.rows]
    if t.norm_pairs and len(kept) > t.norm_pairs:  # a sample is enough for two moments; scoring costs a forward each
        kept = random.Random(seed + 1).sample(kept, t.norm_pairs)
    prompts = [list(r["prompt"]) for r in kept] * 2
    responses = [_text(r["chosen"]) for r in kept] + [_text(r["rejected"]) for r in kept]
    raw = scorer.raw_scores(prompts, responses)
    mean, std = float(raw.mean()), float(raw.std(unbiased=False))
    if not std > 1e-6:
        log.warning("reward model scores have (almost) no spread on train (std %.2e); normalising with std=1", std)
        std = 1.0
    atomic_write_json(out_dir / NORMALISATION, {"mean": mean, "std": std, "n": len(responses),
                                                "computed_on": f"train chosen + rejected of {len(kept)} pairs"})
    n_chosen = len(kept)
    train_acc = float((raw[:n_chosen] > raw[n_chosen:]).float().mean())
    return {
        **summary,
        "train_pairwise_accuracy": round(train_acc, 4),
        "normalisation": {"mean": mean, "std": std},
        "loss_history": [{"step": h.get("step"), "loss": h["loss"]} for h in history],
    }


def _reload_gathered(source: str, model_cfg, t, folder: Path):
    """The trained reward model from the whole copy ``trainer.save_model`` gathered under ZeRO-3."""
    model, _ = _load_backbone(source if t.finetune == "lora" else str(folder), model_cfg, t.finetune,
                              int(t.keep_layers) if t.finetune == "lora" else 0)
    if t.finetune == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    return model


def load_summary(folder: Path) -> dict:
    return json.loads((Path(folder) / NORMALISATION).read_text())
