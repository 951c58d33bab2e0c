"""Generation speed: the project's generation path against plain ``model.generate``, as a share of the matmul bound.

Issue #8, part 2. One run measures, on the embedded SmolLM2-135M-Instruct (float32):

1. the machine's float32 matmul rate: square ``--matmul-size`` products, median of ``--repeats`` after a warm-up,
   with torch's default CPU product (``torch.matmul``: MKL on x86) and with oneDNN (``torch.ops.mkldnn``, the
   weight packed once, as ``halluguard.generation`` multiplies). The bound of the issue is the first; the second
   is reported beside it because this machine's oneDNN is about twice as fast;
2. for each ``--batch-sizes``: ``halluguard.generation.generate`` (the project's path) and plain ``model.generate``
   (greedy, batches of that size in the caller's order, tokenized per batch, as the issue measured), each the
   median of ``--repeats`` timed runs after one warm-up run: new tokens/s, prefill+decode FLOPs/s, the share of
   both bounds, and whether the greedy tokens are identical, prompt by prompt, token by token;
3. with ``--variants``: every optimisation tried, one at a time, at ``--variant-batch`` (default 8) on the same
   prompts, each timed and compared with plain ``model.generate`` in the same run;
4. with ``--heldout-exp EXP``: the held-out questions of ``runs/EXP/build`` answered as ``halluguard eval`` answers
   them (``--heldout-new-tokens`` 64, batch ``--heldout-batch`` 16), once with the default oneDNN products and once
   with ``matmul="aten"`` (whose logits are bitwise ``model.generate``'s): prompts whose greedy tokens differ.

FLOPs, as in the issue: 2 x parameters (134.5M) per token, for every prompt token (prefill, padding not counted)
and every generated token (decode, up to and including eos; ``--new-tokens`` at most). Attention's own FLOPs are not
counted, and neither is the fact that prefill computes the output layer for the last position only.

Prompts: demo knowledge-base questions rendered by the project's prompt builder, RAG mode, each with its gold
passage (if any) and one or two others drawn at random (alternately), so lengths are mixed (about 110-260 tokens).

The machine is shared: the script records the load average before and after, and every ratio compares figures
taken in the same run. ``--threads 0`` leaves torch's default (all cores).

Usage: python benchmarks/bench_generation.py [--batch-sizes 1,8,32] [--prompts 32] [--prompts-batch1 8]
       [--new-tokens 32] [--repeats 3] [--threads 0] [--variants] [--variant-batch 8] [--compile]
       [--heldout-exp demo] [--runs runs] [--out benchmarks/out/generation.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- machine

def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclasses.dataclass
class EmbeddedRun:
    """What a generation benchmark starts from: the embedded policy, and when and where it ran."""

    model: object
    tokenizer: object
    model_name: str
    started_utc: str
    load_before: list[float]
    machine: dict


def load_embedded(threads: int = 0) -> EmbeddedRun:
    """``threads`` torch threads (0 = torch's default), the clock and load average taken, then the embedded
    SmolLM2-135M-Instruct loaded (float32) as the project loads it."""
    import torch
    from omegaconf import OmegaConf

    from halluguard.config import RootConfig, resolve_cache_dir
    from halluguard.models import load_policy

    if threads:
        torch.set_num_threads(threads)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_before = load_average()
    cfg = OmegaConf.structured(RootConfig)
    model, tokenizer = load_policy(cfg.model, resolve_cache_dir(cfg))
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    return EmbeddedRun(model, tokenizer, cfg.model.name_or_path, started, load_before, machine)


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rates(size: int, repeats: int) -> dict:
    """GFLOP/s of a square float32 product with torch's default CPU matmul and with oneDNN (packed weight)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size ** 3
    out = {"size": size, "repeats": repeats,
           "torch_matmul_gflops": round(flops / median_seconds(lambda: a @ b, repeats, warmup=3) / 1e9, 1)}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), size)
        def onednn_product():
            return torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

        out["onednn_gflops"] = round(flops / median_seconds(onednn_product, repeats, warmup=3) / 1e9, 1)
    return out


# ---------------------------------------------------------------- prompts and the two paths

def demo_prompts(tokenizer, count: int, seed: int = 0) -> list[str]:
    """``count`` demo-KB questions with their gold passage and one or two others, as the project renders them."""
    from omegaconf import OmegaConf

    from data_builders.sources.jsonl import load_files
    from halluguard.config import RootConfig, package_data
    from halluguard.prompting import build_messages, render_prompt

    cfg = OmegaConf.structured(RootConfig)
    passages, questions = load_files(Path(package_data("demo_kb/passages.jsonl")),
                                     Path(package_data("demo_kb/questions.jsonl")))
    by_id = {p.id: p for p in passages}
    rng = random.Random(seed)
    out = []
    for n, q in enumerate(rng.sample(questions, count)):
        shown_count = 1 + n % 2
        gold = by_id.get(q.passage_id)
        shown = ([gold] if gold else []) + rng.sample([p for p in passages if p is not gold], shown_count)
        prompt_cfg = OmegaConf.merge(cfg.prompt, {"passages": shown_count})
        out.append(render_prompt(tokenizer, build_messages(q.question, shown[:shown_count], prompt_cfg)))
    return out


def cut_at_eos(row: list[int], eos_id: int) -> list[int]:
    return row[:row.index(eos_id) + 1] if eos_id in row else row


def plain_generate(model, tokenizer, prompts, batch_size: int, new_tokens: int, sort: bool = False, **kwargs):
    """Plain ``model.generate`` (greedy) over batches of ``batch_size``: the new tokens of each prompt, through eos."""
    import torch

    order = list(range(len(prompts)))
    if sort:
        lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        order.sort(key=lambda i: lengths[i])
    out = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **kwargs)
        new = ids[:, enc["input_ids"].shape[1]:].tolist()
        tokenizer.batch_decode(new, skip_special_tokens=True)  # the text, as a caller would want it
        for i, row in zip(batch, new):
            out[i] = cut_at_eos(row, tokenizer.eos_token_id)
    return out


def project_generate(model, tokenizer, prompts, batch_size: int, new_tokens: int, **kwargs):
    """The project's path (``generate`` = these ids, decoded): the new tokens of each prompt, through eos."""
    from halluguard.generation import generate_ids

    ids = generate_ids(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch_size, **kwargs)
    tokenizer.batch_decode(ids, skip_special_tokens=True)
    return ids


def own_loop(model, tokenizer, prompts, batch_size: int, new_tokens: int, matmul: str = "aten",
             preallocate: bool = True, drop_finished: bool = False, forward=None):
    """``halluguard.generation``'s loop with single optimisations switched on or off (the variants)."""
    import contextlib

    import torch

    from halluguard.generation import greedy_batch, left_pad, onednn_linears

    token_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(token_ids[i]))
    out = [None] * len(prompts)
    products = onednn_linears(model) if matmul == "onednn" else contextlib.nullcontext()
    runner = model if forward is None else forward
    with products, torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, mask = left_pad([token_ids[i] for i in batch], tokenizer.pad_token_id)
            new = greedy_batch(runner, ids, mask, new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                               drop_finished=drop_finished, preallocate=preallocate)
            for i, row in zip(batch, new.tolist()):
                out[i] = cut_at_eos(row, tokenizer.eos_token_id)
    tokenizer.batch_decode(out, skip_special_tokens=True)
    return out


def ctranslate2_runner(model, tokenizer, batch_size: int):
    """CTranslate2 (float32, greedy) on the same weights, when ``ctranslate2`` is importable; else None.

    Not a project dependency: ``pip install --no-deps --target /tmp/ct2pkg ctranslate2==4.8.5`` and run with
    ``PYTHONPATH=/tmp/ct2pkg``. The model is converted from the cached safetensors folder into a temporary folder.
    CTranslate2 leaves the end token out of its results; it is put back for the comparison.
    """
    try:
        import ctranslate2
    except ImportError:
        print("  (ctranslate2 not importable: its variant is skipped)")
        return None
    import tempfile

    import torch

    folder = Path(tempfile.mkdtemp(prefix="ct2-")) / "model"
    source = getattr(model, "name_or_path", None) or model.config._name_or_path
    ctranslate2.converters.TransformersConverter(source).convert(str(folder), quantization="float32")
    engine = ctranslate2.Generator(str(folder), device="cpu", compute_type="float32", inter_threads=1,
                                   intra_threads=torch.get_num_threads())
    eos_id = tokenizer.eos_token_id

    def run(prompts, new_tokens):
        tokens = [tokenizer.convert_ids_to_tokens(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        results = engine.generate_batch(tokens, max_length=new_tokens, sampling_topk=1, beam_size=1,
                                        include_prompt_in_result=False, end_token=tokenizer.eos_token,
                                        max_batch_size=batch_size, batch_type="examples")
        out = []
        for r in results:
            ids = list(r.sequences_ids[0])
            out.append(ids + [eos_id] if len(ids) < new_tokens else ids)
        tokenizer.batch_decode(out, skip_special_tokens=True)
        return out

    return (f"CTranslate2 {ctranslate2.__version__} float32", run)


class _ForwardOnly:
    """Makes a compiled forward look like the model to ``greedy_batch`` (it only calls it and reads ``.config``)."""

    def __init__(self, model, compiled):
        self.config, self._compiled = model.config, compiled

    def __call__(self, **kwargs):
        return self._compiled(**kwargs)


# ---------------------------------------------------------------- figures

def timed_run(fn, prompts: list[str], batch_size: int, new_tokens: int, repeats: int) -> tuple[float, list]:
    """``fn(prompts, new_tokens)`` timed: one warm-up batch of 8 tokens, then the median of ``repeats`` runs; and
    the token ids of the last run."""
    fn(prompts[:batch_size], 8)
    holder: dict = {}

    def run():
        holder["ids"] = fn(prompts, new_tokens)

    return median_seconds(run, repeats, warmup=0), holder["ids"]


def figures(name: str, seconds: float, prompt_tokens: int, ids: list[list[int]], reference: list[list[int]],
            params: int, bounds: dict) -> dict:
    new = sum(len(r) for r in ids)
    flops = 2 * params * (prompt_tokens + new)
    rate = flops / seconds
    differing = [i for i, (a, b) in enumerate(zip(ids, reference)) if a != b]
    row = {"path": name, "seconds": round(seconds, 3), "new_tokens": new, "new_tokens_per_s": round(new / seconds, 1),
           "gflops_per_s": round(rate / 1e9, 1),
           "pct_of_torch_matmul_bound": round(100 * rate / (bounds["torch_matmul_gflops"] * 1e9), 1),
           "identical_to_plain_generate": not differing, "prompts_differing": len(differing)}
    if "onednn_gflops" in bounds:
        row["pct_of_onednn_bound"] = round(100 * rate / (bounds["onednn_gflops"] * 1e9), 1)
    if differing:
        first = differing[0]
        a, b = ids[first], reference[first]
        row["first_difference"] = {"prompt": first, "token": next((t for t, (x, y) in enumerate(zip(a, b)) if x != y),
                                                                   min(len(a), len(b)))}
    return row


def show(row: dict) -> None:
    same = "identical" if row["identical_to_plain_generate"] else f"{row['prompts_differing']} prompts differ"
    onednn = f"{row['pct_of_onednn_bound']:>6.1f} %" if "pct_of_onednn_bound" in row else ""
    print(f"  {row['path']:<46}{row['seconds']:>8.2f} s{row['new_tokens_per_s']:>9.1f} tok/s"
          f"{row['gflops_per_s']:>8.1f} GFLOP/s{row['pct_of_torch_matmul_bound']:>7.1f} %{onednn}   {same}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per batch size (batch 1: --prompts-batch1)")
    parser.add_argument("--prompts-batch1", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--variants", action="store_true", help="also time each optimisation tried, one at a time")
    parser.add_argument("--variant-batch", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="with --variants, also torch.compile the forward")
    parser.add_argument("--heldout-exp", default="", help="also compare oneDNN and aten tokens on this build's held-out set")
    parser.add_argument("--heldout-new-tokens", type=int, default=64)
    parser.add_argument("--heldout-batch", type=int, default=16)
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "generation.json"))
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    run = load_embedded(args.threads)
    model, tokenizer, started, load_before, machine = run.model, run.tokenizer, run.started_utc, run.load_before, run.machine
    params = sum(p.numel() for p in model.parameters())
    print(f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} with {machine['torch_threads']} "
          f"threads; load average before: {load_before}", flush=True)

    from halluguard.generation import onednn_linears, resolve_matmul

    pack_s = None
    if resolve_matmul(model) == "onednn":  # the one-off cost of the first greedy call on a model
        start = time.perf_counter()
        with onednn_linears(model):
            pass
        pack_s = round(time.perf_counter() - start, 3)
        print(f"packing the model's linear weights for oneDNN (once per model): {pack_s} s", flush=True)

    bounds = matmul_rates(args.matmul_size, max(args.repeats, 5))
    print(f"float32 matmul {args.matmul_size}x{args.matmul_size}: torch.matmul {bounds['torch_matmul_gflops']} GFLOP/s"
          + (f", oneDNN {bounds['onednn_gflops']} GFLOP/s" if "onednn_gflops" in bounds else ""), flush=True)

    all_prompts = demo_prompts(tokenizer, max(args.prompts, args.prompts_batch1, max(batch_sizes)))
    rows = []
    for batch_size in batch_sizes:
        count = args.prompts_batch1 if batch_size == 1 else max(args.prompts, batch_size)
        prompts = all_prompts[:count]
        prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        print(f"\nbatch {batch_size}: {len(prompts)} prompts, {prompt_tokens / len(prompts):.0f} prompt tokens on average, "
              f"{args.new_tokens} new tokens at most", flush=True)
        results = {
            "plain": timed_run(lambda ps, n, b=batch_size: plain_generate(model, tokenizer, ps, b, n),
                               prompts, batch_size, args.new_tokens, args.repeats),
            "project": timed_run(lambda ps, n, b=batch_size: project_generate(model, tokenizer, ps, b, n),
                                 prompts, batch_size, args.new_tokens, args.repeats),
        }
        reference = results["plain"][1]
        entry = {"batch_size": batch_size, "prompts": len(prompts), "mean_prompt_tokens": round(prompt_tokens / len(prompts), 1),
                 "max_new_tokens": args.new_tokens, "paths": []}
        for key, name in (("plain", "plain model.generate (caller order)"),
                          ("project", "halluguard.generation.generate")):
            row = figures(name, results[key][0], prompt_tokens, results[key][1], reference, params, bounds)
            entry["paths"].append(row)
            show(row)
        entry["speedup"] = round(results["plain"][0] / results["project"][0], 2)
        print(f"  speed-up {entry['speedup']}x", flush=True)
        rows.append(entry)

    variants = []
    if args.variants:
        variants = run_variants(model, tokenizer, all_prompts[:max(args.prompts, args.variant_batch)], args, params, bounds)

    heldout = heldout_identity(model, tokenizer, args) if args.heldout_exp else None

    report = {"benchmark": "generation", "started_utc": started,
              "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "load_average_before": load_before, "load_average_after": load_average(),
              "model": run.model_name, "dtype": "float32", "parameters": params,
              "flops_per_token": 2 * params, "repeats": args.repeats, "onednn_pack_s": pack_s, "matmul": bounds, "batches": rows,
              "variants": variants, "variant_batch": args.variant_batch if args.variants else None,
              "variant_prompts": max(args.prompts, args.variant_batch) if args.variants else None,
              "heldout_identity": heldout}
    print(f"\nload average after: {report['load_average_after']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def heldout_identity(model, tokenizer, args) -> dict:
    """Greedy tokens with oneDNN products against the model's own (bitwise model.generate's) on a build's held-out set."""
    from halluguard.artifacts import Manifest
    from halluguard.evaluation.heldout import load_heldout
    from halluguard.generation import generate_ids
    from halluguard.prompting import render_prompt

    build = Manifest.load(Path(args.runs).expanduser().resolve() / args.heldout_exp / "build")
    prompts = [render_prompt(tokenizer, q.messages) for q in load_heldout(build.output_path("heldout"))]
    print(f"\nheld-out set of '{args.heldout_exp}': {len(prompts)} prompts, {args.heldout_new_tokens} new tokens, "
          f"batch {args.heldout_batch}", flush=True)
    timings, ids = {}, {}
    for matmul in ("onednn", "aten"):
        start = time.perf_counter()
        ids[matmul] = generate_ids(model, tokenizer, prompts, max_new_tokens=args.heldout_new_tokens,
                                   batch_size=args.heldout_batch, matmul=matmul)
        timings[matmul] = round(time.perf_counter() - start, 1)
    differing = [i for i, (a, b) in enumerate(zip(ids["onednn"], ids["aten"])) if a != b]
    tokens = sum(len(r) for r in ids["aten"])
    print(f"  oneDNN {timings['onednn']} s, aten {timings['aten']} s; {tokens} tokens; prompts whose tokens differ: "
          f"{len(differing)}", flush=True)
    return {"exp": args.heldout_exp, "prompts": len(prompts), "max_new_tokens": args.heldout_new_tokens,
            "batch_size": args.heldout_batch, "generated_tokens_aten": tokens, "seconds": timings,
            "prompts_differing": len(differing), "differing_prompt_indices": differing}


def run_variants(model, tokenizer, prompts, args, params: int, bounds: dict) -> list[dict]:
    """Each optimisation on its own at ``--variant-batch``, against plain ``model.generate`` in the same run."""
    import copy

    import torch

    b, n = args.variant_batch, args.new_tokens
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    print(f"\nvariants at batch {b}: {len(prompts)} prompts, {prompt_tokens / len(prompts):.0f} prompt tokens on average",
          flush=True)
    tried = [
        ("plain model.generate (caller order)", lambda ps, k: plain_generate(model, tokenizer, ps, b, k)),
        ("plain model.generate, length-sorted batches", lambda ps, k: plain_generate(model, tokenizer, ps, b, k, sort=True)),
        ("model.generate, static cache, sorted", lambda ps, k: plain_generate(model, tokenizer, ps, b, k, sort=True,
                                                                             cache_implementation="static")),
        ("own loop (aten), tokenized once, sorted", lambda ps, k: own_loop(model, tokenizer, ps, b, k, "aten", False)),
        ("  + preallocated KV cache (= matmul=aten)", lambda ps, k: own_loop(model, tokenizer, ps, b, k, "aten", True)),
        ("own loop, oneDNN products, dynamic cache", lambda ps, k: own_loop(model, tokenizer, ps, b, k, "onednn", False)),
        ("  + preallocated KV cache", lambda ps, k: own_loop(model, tokenizer, ps, b, k, "onednn", True)),
        ("  + finished rows leave (= default)", lambda ps, k: own_loop(model, tokenizer, ps, b, k, "onednn", True, True)),
    ]
    threads = torch.get_num_threads()
    if threads > 1:
        def one_thread(ps, k):
            torch.set_num_threads(1)
            try:
                return own_loop(model, tokenizer, ps, b, k, "onednn", True, True)
            finally:
                torch.set_num_threads(threads)
        tried.append(("default path, 1 torch thread", one_thread))
    ct2 = ctranslate2_runner(model, tokenizer, b)
    if ct2 is not None:
        tried.append(ct2)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    tried.append(("bfloat16 weights, own loop (aten)", lambda ps, k: own_loop(bf16, tokenizer, ps, b, k, "aten", True)))
    compile_s, compile_error = None, None
    if args.compile:
        # The dynamic cache: inductor rejects the preallocated cache's views as graph inputs (torch 2.13).
        start = time.perf_counter()
        try:
            compiled = torch.compile(model.forward, dynamic=True)
            forward = _ForwardOnly(model, compiled)
            own_loop(model, tokenizer, prompts[:b], b, 4, "aten", False, forward=forward)
            compile_s = time.perf_counter() - start
            tried.append(("torch.compile(forward, dynamic), own loop", lambda ps, k: own_loop(
                model, tokenizer, ps, b, k, "aten", False, forward=forward)))
        except Exception as exc:  # noqa: BLE001 - a failed compile is a result to report, not a crash
            compile_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
            print(f"  torch.compile failed after {time.perf_counter() - start:.0f} s: {compile_error}", flush=True)
    reference, out = None, []
    for name, fn in tried:
        seconds, ids = timed_run(fn, prompts, b, n, args.repeats)
        reference = reference or ids
        row = figures(name, seconds, prompt_tokens, ids, reference, params, bounds)
        if name.startswith("torch.compile"):
            row["compile_and_first_call_s"] = round(compile_s, 1)
        out.append(row)
        show(row)
    if compile_error:
        out.append({"path": "torch.compile(forward, dynamic), own loop", "failed": compile_error})
    return out


if __name__ == "__main__":
    sys.exit(main())
