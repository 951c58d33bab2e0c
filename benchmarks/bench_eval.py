"""Evaluation throughput: held-out questions per second with the embedded 135M policy, by batch size.

Target (issue #6): 500 questions with SmolLM2-135M on 2 CPU cores within 15 minutes. For each batch
size this times what ``halluguard eval`` does per policy: generation (greedy, ``--max-new-tokens``)
and refusal classification of the answers, then extrapolates to 500 questions. The model is loaded
once and warmed up before timing (the first passes on a fresh machine are much slower).

The questions are the held-out set of an existing build (``halluguard build`` first); when it holds
fewer than ``--questions``, it is cycled (the script says so): repeated prompts cost the same to
generate as new ones. Timings from a machine shared with other jobs are noisy; compare batch sizes
measured in one run, not across runs.

Usage: python benchmarks/bench_eval.py [--questions 500] [--batch-sizes 1,8,16] [--max-new-tokens 64]
       [--exp demo] [--runs runs] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

TARGET_QUESTIONS, TARGET_S = 500, 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--exp", default="demo")
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    from omegaconf import OmegaConf

    from halluguard.artifacts import Manifest
    from halluguard.config import RootConfig, resolve_cache_dir
    from halluguard.evaluation.heldout import load_heldout
    from halluguard.evaluation.models import PolicySource, load_model
    from halluguard.generation import generate
    from halluguard.models import resolve_policy_source
    from halluguard.prompting import render_prompt
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder

    cfg = OmegaConf.structured(RootConfig)
    build = Manifest.load(Path(args.runs).expanduser().resolve() / args.exp / "build")
    heldout = load_heldout(build.output_path("heldout"))
    questions = list(itertools.islice(itertools.cycle(heldout), args.questions))
    if len(heldout) < args.questions:
        print(f"the held-out set of '{args.exp}' has {len(heldout)} questions: cycled to {args.questions}")

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    source = PolicySource(base=resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg)))
    t0 = time.perf_counter()
    model, tokenizer = load_model(source, cfg, device)
    load_s = time.perf_counter() - t0
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
    prompts = [render_prompt(tokenizer, q.messages) for q in questions]
    detector.score(generate(model, tokenizer, prompts[:2], max_new_tokens=8, batch_size=2))  # warm-up

    rows = []
    for batch_size in batch_sizes:
        t0 = time.perf_counter()
        answers = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                           progress=True, desc=f"batch {batch_size}")
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        detector.is_refusal(answers)
        classify_s = time.perf_counter() - t0
        total = generate_s + classify_s
        rate = len(prompts) / total
        rows.append({"batch_size": batch_size, "questions": len(prompts), "generate_s": round(generate_s, 2),
                     "classify_s": round(classify_s, 2), "questions_per_s": round(rate, 3),
                     "extrapolated_500_s": round(TARGET_QUESTIONS / rate, 1)})

    print(f"\ndevice {device}; model load {load_s:.1f} s; {len(prompts)} questions, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"{'batch':>6}{'questions/s':>13}{'generate s':>12}{'classify s':>12}{'500 questions':>15}{'target':>9}")
    for r in rows:
        verdict = "meets" if r["extrapolated_500_s"] <= TARGET_S else "misses"
        print(f"{r['batch_size']:>6}{r['questions_per_s']:>13.3f}{r['generate_s']:>12.1f}{r['classify_s']:>12.1f}"
              f"{r['extrapolated_500_s'] / 60:>13.1f} m{verdict:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "load_s": load_s, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
