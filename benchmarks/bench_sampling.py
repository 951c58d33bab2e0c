"""Sampled answers, as ``halluguard eval`` (``eval.sampled.samples``) and ``ppo.select.samples`` draw them: the
project's sampling loop against ``model.generate``, on the embedded SmolLM2-135M-Instruct (float32).

For ``--copies`` k, each of ``--prompts`` demo prompts (rendered as the project renders them, RAG mode, about
110-260 tokens) is answered k times, ``--new-tokens`` at most, at ``--temperature``, in batches of ``--batch``
rows, seeded:

* ``model.generate``: ``halluguard.generation.generate_ids(..., matmul="aten")``, which hands the k copies of a
  prompt to ``model.generate`` side by side (what sampled evaluation did before; the prompt is computed k times);
* ``halluguard``: the default path on a CPU, the project's decoding loop with oneDNN products, each prompt
  computed once and its KV cache repeated for the k copies, finished rows leaving the batch.

Both draw from the same distribution (transformers' temperature, top-k 50 and top-p warpers), not the same random
stream, so the answers differ; what should agree is their statistics: printed are the mean answer length and the
share of answers that ended with eos on each path. Each path is timed ``--repeats`` times after a warm-up call;
the ratio compares medians taken in the same run.

Usage: python benchmarks/bench_sampling.py [--copies 4] [--prompts 16] [--new-tokens 48] [--batch 16]
       [--temperature 1.0] [--repeats 1] [--threads 0] [--out benchmarks/out/sampling.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="answers per prompt (eval.sampled.samples)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16, help="rows per batch, copies included (eval.batch_size)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sampling.json"))
    args = parser.parse_args(argv)
    for key in ("copies", "prompts", "new_tokens", "batch", "repeats"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive")

    from bench_generation import demo_prompts, load_average, load_embedded

    from halluguard.generation import generate_ids, resolve_matmul

    run = load_embedded(args.threads)
    model, tokenizer, load_before, machine = run.model, run.tokenizer, run.load_before, run.machine
    if resolve_matmul(model) != "onednn":
        print("oneDNN products are not available here: the project's path would be model.generate itself")
        return 1
    prompts = demo_prompts(tokenizer, args.prompts)
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    print(f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads; load {load_before}\n"
          f"{args.prompts} prompts ({prompt_tokens / args.prompts:.0f} tokens on average) x {args.copies} answers, "
          f"{args.new_tokens} new tokens at most, temperature {args.temperature}, batches of {args.batch} rows",
          flush=True)

    def sample(matmul: str | None, seed: int):
        return generate_ids(model, tokenizer, prompts, max_new_tokens=args.new_tokens, batch_size=args.batch,
                            temperature=args.temperature, seed=seed, matmul=matmul, copies=args.copies)

    paths = {}
    for name, matmul in (("model.generate", "aten"), ("halluguard", None)):
        generate_ids(model, tokenizer, prompts[:1], max_new_tokens=2, batch_size=args.batch, temperature=1.0,
                     seed=0, matmul=matmul, copies=2)  # warm-up (and oneDNN's packing, once per model)
        seconds, rows = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            rows = sample(matmul, seed=repeat)
            seconds.append(time.perf_counter() - start)
        eos = tokenizer.eos_token_id
        new_tokens = sum(len(r) for r in rows)
        paths[name] = {"seconds": round(statistics.median(seconds), 2), "answers": len(rows),
                       "new_tokens": new_tokens,
                       "new_tokens_per_s": round(new_tokens / statistics.median(seconds), 1),
                       "answers_per_s": round(len(rows) / statistics.median(seconds), 2),
                       "mean_answer_tokens": round(new_tokens / len(rows), 1),
                       "share_ended_by_eos": round(sum(bool(r) and r[-1] == eos for r in rows) / len(rows), 3)}
        p = paths[name]
        print(f"  {name:15} {p['seconds']:8.2f} s  {p['answers_per_s']:6.2f} answers/s  {p['new_tokens_per_s']:7.1f} "
              f"new tokens/s  mean answer {p['mean_answer_tokens']} tokens, {p['share_ended_by_eos']:.1%} ended by eos",
              flush=True)
    speedup = round(paths["model.generate"]["seconds"] / paths["halluguard"]["seconds"], 2)
    print(f"  speed-up {speedup}x (model.generate time / halluguard time, same run)")
    report = {"benchmark": "sampling", "started_utc": run.started_utc,
              "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "load_average_before": load_before, "load_average_after": load_average(),
              "model": run.model_name, "prompts": args.prompts,
              "mean_prompt_tokens": round(prompt_tokens / args.prompts, 1), "copies": args.copies,
              "max_new_tokens": args.new_tokens, "batch_rows": args.batch, "temperature": args.temperature,
              "repeats": args.repeats, "paths": paths, "speedup": speedup}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
