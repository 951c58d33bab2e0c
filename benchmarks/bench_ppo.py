"""Time per PPO step on CPU, split by phase, and peak memory (issue #5, performance).

Default (``--model tiny``): a 2-layer random model, seconds in all - a check that the timing runs.
``--model smollm2``: the embedded SmolLM2-135M with PPO's LoRA adapter, 8 prompts of ~295 tokens (the
demo knowledge base rendered by the project's prompt builder: question + 3 passages of its section),
48 new tokens, the default ``ppo`` config (2 epochs x 2 minibatches of 4), the rule reward with the
MiniLM refusal detector. Phases, each the median over the measured steps (after ``--warmup`` steps):
generation (KV-cached sampling), scoring, the policy forward (log-probs + values, one pass), the
reference forward (adapter off, one pass), the update (all epochs and minibatches, forward + backward).
Peak memory is the process's peak RSS.

For comparison (issue #5, measured on this machine, not by this script): trl 1.12.0's experimental
PPOTrainer with a LoRA policy, full value and reward models, 4 PPO epochs, 8 prompts of ~240 tokens and
32 new tokens took 132 s a step and 14.7 GB peak. ``--epochs 4 --new-tokens 32`` runs our loop in that
configuration.

Usage: python benchmarks/bench_ppo.py [--model tiny|smollm2] [--steps 3] [--warmup 1] [--batch 8] [--mini 4]
       [--epochs 2] [--new-tokens 48] [--top-layers N] [--threads 0] [--out benchmarks/out/ppo_<model>.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("generate", "score", "policy_forward", "ref_forward", "update", "step")
TRL_112 = {"seconds_per_step": 132.0, "peak_gb": 14.7, "config": "4 epochs, 8 prompts ~240 tokens, 32 new tokens"}


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["stage=ppo", *overrides])
    GlobalHydra.instance().clear()
    return validate(cfg)


def demo_prompts(cfg, count: int, seed: int = 0):
    """``count`` demo-KB questions (half out-of-knowledge) with 3 passages of their section, as the build shows them."""
    from data_builders.sources.jsonl import load_files
    from halluguard.config import package_data
    from halluguard.prompting import build_messages

    passages, questions = load_files(Path(package_data("demo_kb/passages.jsonl")),
                                     Path(package_data("demo_kb/questions.jsonl")))
    by_id = {p.id: p for p in passages}
    rng = random.Random(seed)
    picked = rng.sample([q for q in questions if q.label == "ik" and q.passage_id in by_id], count // 2)
    picked += rng.sample([q for q in questions if q.label == "ook"], count - count // 2)
    messages, meta = [], []
    for q in picked:
        gold = by_id.get(q.passage_id)
        shown = ([gold] if gold else []) + rng.sample([p for p in passages if p is not gold], 3)
        shown = shown[: int(cfg.prompt.passages)]
        messages.append(build_messages(q.question, shown, cfg.prompt))
        meta.append({"label": q.label, "evidence": "\n".join(p.text for p in shown), "answers": list(q.answers)})
    return messages, meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--steps", type=int, default=3, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="steps run first and not counted")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mini", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--top-layers", type=int, default=-1,
                        help="LoRA only in the last N blocks (0 = all; default: ppo.lora.top_layers, 1 on tiny)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import torch

    from halluguard.config import resolve_cache_dir
    from halluguard.models import resolve_policy_source
    from halluguard.ppo.policy import load_start_policy
    from halluguard.ppo.prompts import build_prompt_set
    from halluguard.ppo.trainer import PpoTrainer
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder
    from halluguard.reward.rules import RuleScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    overrides = [f"ppo.steps={args.steps + args.warmup}", f"ppo.batch_size={args.batch}",
                 f"ppo.mini_batch_size={args.mini}", f"ppo.ppo_epochs={args.epochs}",
                 f"ppo.max_new_tokens={args.new_tokens}",
                 "ppo.probe_prompts=0", "ppo.resume=false", f"ppo.save_every={args.steps + args.warmup}",
                 "ppo.kl.budget=1000", "ppo.start=base", f"paths.runs={tmp}"]
    if args.top_layers >= 0 or args.model == "tiny":  # the tiny model has 2 blocks
        overrides.append(f"ppo.lora.top_layers={args.top_layers if args.top_layers >= 0 else 1}")
    if args.model == "tiny":
        from halluguard.tiny import make_tiny_policy

        overrides += [f"model.name_or_path={make_tiny_policy(tmp / 'tiny')}", "prompt.passages=1",
                      "prompt.max_passage_chars=200"]
    cfg = compose(overrides)
    source = resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    loaded = time.perf_counter()
    policy, tokenizer = load_start_policy(source, cfg.model, cfg.ppo.lora, seed=0)
    load_s = time.perf_counter() - loaded
    messages, meta = demo_prompts(cfg, args.batch * (args.steps + args.warmup + 1))
    prompts = build_prompt_set(messages, meta, tokenizer, max_prompt_length=4096)
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
    scorer = RuleScorer(cfg.reward.rules, detector)
    trainer = PpoTrainer(policy, tokenizer, scorer, prompts, cfg.ppo, tmp / "work", seed=0, detector=detector,
                         progress=False)
    result = trainer.train()

    measured = [r for r in result.rows if "time_update" in r][args.warmup:]
    median = {k: round(statistics.median(r[f"time_{k}"] for r in measured), 3) for k in PHASES}
    peak_gb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)
    prompt_tokens = statistics.mean(len(t) for t in prompts.token_ids)
    report = {
        "model": args.model, "source": source, "threads": torch.get_num_threads(),
        "batch": args.batch, "mini_batch": args.mini, "epochs": args.epochs, "max_new_tokens": args.new_tokens,
        "lora_top_layers": int(cfg.ppo.lora.top_layers), "frozen_trunk_blocks": trainer.unwrapped.trunk_layers, "mean_prompt_tokens": round(prompt_tokens, 1),
        "mean_response_tokens": round(statistics.mean(r["response_length"] for r in measured), 1),
        "measured_steps": len(measured), "seconds_by_phase_median": median, "peak_rss_gb": peak_gb,
        "model_load_s": round(load_s, 2),
    }
    print(f"\nPPO step on {args.model} ({source}), {torch.get_num_threads()} threads: {args.batch} prompts of "
          f"~{prompt_tokens:.0f} tokens, {args.new_tokens} new tokens (mean {report['mean_response_tokens']} "
          f"generated), {args.epochs} epochs x {args.batch // args.mini} minibatches, LoRA top_layers="
          f"{cfg.ppo.lora.top_layers} (frozen trunk: {trainer.unwrapped.trunk_layers} blocks run once per rollout)")
    print(f"median of {len(measured)} steps after {args.warmup} warm-up:")
    for phase in PHASES:
        share = median[phase] / median["step"] if median["step"] else 0.0
        print(f"   {phase:<15} {median[phase]:8.3f} s   {share:6.1%}")
    print(f"peak RSS {peak_gb} GB (target < 6 GB for the 135M model)")
    if args.model == "smollm2":
        print(f"for reference, trl 1.12.0 PPOTrainer as measured in issue #5 ({TRL_112['config']}): "
              f"{TRL_112['seconds_per_step']} s/step, {TRL_112['peak_gb']} GB; not re-measured here, so the ratio "
              f"{median['step'] / TRL_112['seconds_per_step']:.3f} is indicative only")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "out" / f"ppo_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
