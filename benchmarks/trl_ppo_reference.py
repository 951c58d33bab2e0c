"""Seconds per step of trl 1.12.0's experimental PPOTrainer, for bench_ppo.py's comparison (issue #5).

Runs ONLY in its own virtual environment (trl 1.12 pins other versions than the project's), never imports
halluguard, and prints one JSON line last on stdout. Set-up, TRL's usual one: a LoRA policy (r=16, alpha=32 on
q/k/v/o, the reference is the policy with its adapter off), and a value and a reward model that are full
AutoModelForSequenceClassification copies of the same checkpoint. float32 and no gradient checkpointing, as
in our loop (TRL defaults to bf16 and checkpointing).

    python3 -m venv /tmp/trl112
    /tmp/trl112/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/trl112-constraints.txt
    /tmp/trl112/bin/pip install -c /tmp/trl112-constraints.txt trl==1.12.0 peft accelerate datasets

Usage: /tmp/trl112/bin/python benchmarks/trl_ppo_reference.py --model FOLDER --prompts prompts.jsonl
       [--per-device-train-batch-size 8] [--num-mini-batches 2] [--num-ppo-epochs 2] [--response-length 48]
       [--warmup 1] [--steps 3] [--pad-token "<|endoftext|>"] [--threads 0]

prompts.jsonl: one object a line, {"prompt": "<chat-rendered string>"} or {"messages": [...]} (rendered here
with the model's chat template, generation prompt added).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

# Nothing may reach the hub: the model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def peak_rss_gb() -> float:
    """This process's peak RSS. ru_maxrss alone would not do: it survives execve, so started from bench_ppo.py
    it reports at least bench_ppo's own peak. /proc's VmHWM belongs to this program's memory alone."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    return round(peak_kb / 1024 ** 2, 2)


def read_prompts(path: str, tokenizer) -> list[list[int]]:
    ids = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            text = row["prompt"] if "prompt" in row else tokenizer.apply_chat_template(
                row["messages"], tokenize=False, add_generation_prompt=True)
            # The rendered string already holds the template's special tokens.
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local folder with the checkpoint and its tokenizer")
    parser.add_argument("--prompts", required=True, help="JSONL of rendered prompts or chat messages")
    parser.add_argument("--per-device-train-batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--num-mini-batches", type=int, default=2)
    parser.add_argument("--num-ppo-epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=48, help="new tokens")
    parser.add_argument("--warmup", type=int, default=1, help="steps run first and not counted")
    parser.add_argument("--steps", type=int, default=3, help="measured steps")
    parser.add_argument("--pad-token", default="", help="pad token (must differ from eos; default: the tokenizer's)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.pad_token:
        tokenizer.pad_token = args.pad_token
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # TRL masks every pad id out of attention and cuts responses at the first pad: eos as pad would hide eos.
        sys.exit(f"pad token {tokenizer.pad_token!r} is missing or equals eos; pass --pad-token")
    tokenizer.padding_side = "left"  # TRL's generate() reads left-padded queries

    ids = read_prompts(args.prompts, tokenizer)
    batch = args.per_device_train_batch_size
    if len(ids) < batch:
        sys.exit(f"{len(ids)} prompts but {batch} a step: the dataloader drops incomplete batches")
    total_steps = args.warmup + args.steps

    def load(cls, **kwargs):
        model = cls.from_pretrained(args.model, dtype=torch.float32, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    torch.manual_seed(args.seed)
    policy = load(AutoModelForCausalLM)
    value_model = load(AutoModelForSequenceClassification, num_labels=1)
    reward_model = load(AutoModelForSequenceClassification, num_labels=1)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")

    out_dir = tempfile.mkdtemp(prefix="trl-ppo-")
    config = PPOConfig(
        output_dir=out_dir, report_to="none", save_strategy="no", disable_tqdm=True, seed=args.seed,
        bf16=False, gradient_checkpointing=False, learning_rate=args.learning_rate,
        # per_device_train_batch_size prompts a rollout, split in num_mini_batches for the update, one optimizer
        # step each (gradient_accumulation_steps=1 keeps TRL's micro-batch equal to the minibatch).
        per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_mini_batches=args.num_mini_batches, num_ppo_epochs=args.num_ppo_epochs,
        local_rollout_forward_batch_size=batch, total_episodes=batch * total_steps,
        response_length=args.response_length, stop_token="eos", temperature=args.temperature,
        num_sample_generations=0,
    )
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, value_model=value_model,
                         train_dataset=Dataset.from_dict({"input_ids": ids}), peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # keep stdout for the result line

    class StepTimer(TrainerCallback):
        """Wall time between step ends: rollout, scoring, GAE and every PPO epoch of one batch."""

        def __init__(self):
            self.seconds, self.last = [], 0.0

        def on_train_begin(self, *_, **__):
            self.last = time.perf_counter()

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            self.seconds.append(round(now - self.last, 4))
            self.last = now

    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    shutil.rmtree(out_dir, ignore_errors=True)

    measured = timer.seconds[args.warmup:]
    print(json.dumps({
        "trl_version": trl.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seconds_per_step": round(statistics.median(measured), 4) if measured else None,
        "step_seconds": timer.seconds,
        "peak_rss_gb": peak_rss_gb(),
        "config": {
            "model": args.model, "prompts": len(ids), "mean_prompt_tokens": round(statistics.mean(map(len, ids)), 1),
            "per_device_train_batch_size": batch, "num_mini_batches": args.num_mini_batches,
            "num_ppo_epochs": args.num_ppo_epochs, "response_length": args.response_length, "stop_token": "eos",
            "temperature": args.temperature, "warmup": args.warmup, "steps": args.steps,
            "threads": torch.get_num_threads(), "lora": {"r": 16, "alpha": 32, "targets": "q,k,v,o", "layers": "all"},
            "value_and_reward_models": "full AutoModelForSequenceClassification copies", "dtype": "float32",
            "gradient_checkpointing": False,
        },
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
