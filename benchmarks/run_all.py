"""Run every benchmark script in this folder in turn (what `make bench` does), then collect their figures.

Each ``bench_<name>.py`` prints its own figures and (most of them) writes a JSON file to ``benchmarks/out/``.
After the runs, every ``benchmarks/out/*.json`` is read and its measured figures are gathered, one row each, into
``benchmarks/results.json`` and the Markdown table ``benchmarks/results.md``: benchmark, what was measured, value,
unit, the ratio the benchmark itself computed (when it did), when and on what machine it was measured (as recorded
in the file; the file's modification time when the file records no date), and the source file. Nothing is
computed here that the benchmark did not record: a file this script has no reader for is listed figure by
figure from its numeric fields.

Usage: python benchmarks/run_all.py [--only startup,build,reward] [--collect-only]
       [--out-dir benchmarks/out] [--results-json benchmarks/results.json] [--results-md benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOT_RECORDED = "not recorded"


# ---------------------------------------------------------------- one figure

def figure(what: str, value: Any, unit: str, ratio: float | None = None, ratio_of: str = "") -> dict:
    """One measured figure; ``ratio`` is a ratio the benchmark recorded, ``ratio_of`` says what it divides."""
    row = {"what": what, "value": value, "unit": unit}
    if ratio is not None:
        row["ratio"] = ratio
        row["ratio_of"] = ratio_of
    return row


def _num(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


# ---------------------------------------------------------------- readers, one per benchmark output

def read_build(data: Any) -> list[dict]:
    """bench_build.py: a list of rows, one per question count."""
    out = []
    for row in data if isinstance(data, list) else []:
        n = f"{row['questions']:,} questions, {row.get('passages', '?')} passages"
        out.append(figure(f"build throughput, {n}", row["questions_per_s"], "questions/s",
                          row.get("ratio_pq"), "whole build ÷ encoding the passages and questions alone"))
        out.append(figure(f"whole build time, {n}", row["build_s"], "s", row.get("ratio_all"),
                          "whole build ÷ time inside its own encoder"))
        out.append(figure(f"encoding passages + questions alone, {n}", row["encode_only_s"], "s"))
    return out


def read_num_proc(data: dict) -> list[dict]:
    """bench_build.py --num-proc: medians of whole builds and of the synthesis + pairs step, 1 vs N processes."""
    kb = f"{data.get('kb', '?')} KB, {data.get('questions', '?')} questions"
    out = []
    for key, label in (("build_s_median", "whole build"), ("synthesis_and_pairs_s_median", "synthesis + pairs")):
        medians = data.get(key) or {}
        for name, value in medians.items():
            n = name.rsplit("_", 1)[-1]
            ratio_key = "build_ratio_1_over_n" if key.startswith("build") else "synthesis_and_pairs_ratio_1_over_n"
            ratio = data.get(ratio_key) if n != "1" else None
            out.append(figure(f"{label}, builder.num_proc={n}, {kb} (median)", value, "s", ratio,
                              "num_proc=1 time ÷ this time"))
    return out


def read_eval(data: dict) -> list[dict]:
    """bench_eval.py --json: one row per batch size."""
    out = []
    if "load_s" in data:
        out.append(figure("policy load", data["load_s"], "s"))
    for row in data.get("rows", []):
        b = f"batch {row['batch_size']}, {row['questions']} questions"
        out.append(figure(f"eval throughput (generate + classify), {b}", row["questions_per_s"], "questions/s"))
        out.append(figure(f"eval time for 500 questions (extrapolated), {b}", row["extrapolated_500_s"], "s"))
        out.append(figure(f"generation time, {b}", row["generate_s"], "s"))
    return out


def read_ppo(data: dict) -> list[dict]:
    """bench_ppo.py: median seconds per phase, peak RSS, and trl 1.12.0's PPOTrainer on the same configuration."""
    setup = (f"{data.get('model', '?')} model, batch {data.get('batch', '?')}, {data.get('epochs', '?')} epochs, "
             f"{data.get('max_new_tokens', '?')} new tokens")
    comparison = data.get("comparison", {})
    out = []
    for phase, seconds in data.get("seconds_by_phase_median", {}).items():
        if phase == "step":
            out.append(figure(f"PPO step, halluguard ({setup})", seconds, "s/step",
                              comparison.get("ratio_trl_over_ours"), "trl 1.12.0 PPOTrainer ÷ halluguard"))
        else:
            out.append(figure(f"PPO phase {phase}, halluguard ({setup})", seconds, "s/step"))
    if "peak_rss_gb" in data:
        out.append(figure(f"PPO peak memory (RSS), halluguard ({setup})", data["peak_rss_gb"], "GB"))
    trl = data.get("trl_reference") or {}
    if "seconds_per_step" in trl:
        out.append(figure(f"PPO step, trl {trl.get('trl_version', '')} PPOTrainer ({setup})", trl["seconds_per_step"],
                          "s/step"))
    if "peak_rss_gb" in trl:
        out.append(figure(f"PPO peak memory (RSS), trl {trl.get('trl_version', '')} PPOTrainer ({setup})",
                          trl["peak_rss_gb"], "GB"))
    return out


def read_reward(data: dict) -> list[dict]:
    """bench_reward.py: stage time, training speed, scoring speed, held-out pairwise accuracy per pair kind."""
    out = [figure("reward stage wall time", data["wall_seconds"], "s")] if "wall_seconds" in data else []
    for key, what, unit in (("train_seconds", "reward model training time", "s"),
                            ("seconds_per_step", "reward model training step", "s/step"),
                            ("scoring_responses_per_s", "reward scoring throughput", "responses/s")):
        if key in data:
            out.append(figure(what, data[key], unit))
    for key, who in (("rm_accuracy_by_kind", "reward model"), ("rules_accuracy_by_kind", "rules only")):
        for kind, accuracy in data.get(key, {}).items():
            out.append(figure(f"held-out pairwise accuracy, {who}, {kind}", accuracy, "fraction"))
    return out


def read_faiss(data: dict) -> list[dict]:
    """bench_faiss.py: per size, FAISS flat against numpy brute force, then IVF / IVF-PQ against flat."""
    out = []
    for r in data.get("results", []):
        size = f"{r['n']:,} passages ({r.get('data', '?')})"
        flat = r.get("flat", {})
        if "ms_per_query" in flat:
            out.append(figure(f"search, FAISS flat, {size}", flat["ms_per_query"], "ms/query",
                              flat.get("speedup_vs_numpy"), "numpy brute force time ÷ FAISS flat time"))
        if "equal_queries" in flat:
            out.append(figure(f"FAISS flat top-{r.get('k', '?')} equal to brute force, {size}",
                              f"{flat['equal_queries']}/{flat['checked_queries']}", "queries"))
        if "numpy" in r:
            out.append(figure(f"search, numpy brute force, {size}", r["numpy"]["ms_per_query"], "ms/query"))
        for kind in ("ivf", "ivfpq"):
            entry = r.get(kind)
            if not entry:
                continue
            out.append(figure(f"index build (train + add), {kind} nlist {entry['nlist']}, {size}", entry["build_s"], "s"))
            for p in entry.get("by_nprobe", []):
                name = f"{kind} nlist {entry['nlist']} nprobe {p['nprobe']}, {size}"
                out.append(figure(f"search, {name}", p["ms_per_query"], "ms/query", p.get("speedup_vs_flat"),
                                  "FAISS flat time ÷ this index's time"))
                out.append(figure(f"recall@10 against exact search, {name}", p["recall_at_10"], "fraction"))
        if "peak_rss_mb" in r:
            out.append(figure(f"peak memory (RSS), {size}", r["peak_rss_mb"], "MB"))
    return out


def read_generation(data: dict) -> list[dict]:
    """bench_generation.py: matmul rates, then per batch size the project's path against plain model.generate."""
    out = []
    mm = data.get("matmul", {})
    size = mm.get("size", "?")
    if "torch_matmul_gflops" in mm:
        out.append(figure(f"float32 matmul rate, torch.matmul {size}x{size}", mm["torch_matmul_gflops"], "GFLOP/s"))
    if "onednn_gflops" in mm:
        out.append(figure(f"float32 matmul rate, oneDNN packed {size}x{size}", mm["onednn_gflops"], "GFLOP/s"))
    if data.get("onednn_pack_s") is not None:
        out.append(figure("packing a model's linear weights for oneDNN (once per model)", data["onednn_pack_s"], "s"))
    for entry in data.get("batches", []):
        setting = (f"batch {entry['batch_size']}, {entry['prompts']} prompts of {entry['mean_prompt_tokens']:.0f} "
                   f"tokens, {entry['max_new_tokens']} new tokens")
        for path in entry.get("paths", []):
            project = path["path"].startswith("halluguard")
            speedup = entry.get("speedup") if project else None
            who = "halluguard generate" if project else "plain model.generate"
            out.append(figure(f"generation, {who}, {setting}", path["new_tokens_per_s"], "new tokens/s", speedup,
                              "plain model.generate time ÷ halluguard generate time"))
            out.append(figure(f"generation FLOP rate, {who}, {setting}", path["pct_of_torch_matmul_bound"],
                              "% of torch.matmul rate"))
            if "pct_of_onednn_bound" in path:
                out.append(figure(f"generation FLOP rate, {who}, {setting}", path["pct_of_onednn_bound"],
                                  "% of oneDNN matmul rate"))
            if project:
                same = ("identical" if path["identical_to_plain_generate"]
                        else f"{path['prompts_differing']} prompts differ")
                out.append(figure(f"greedy tokens against plain model.generate, {setting}", same, ""))
    at = (f" (batch {data['variant_batch']}, {data.get('variant_prompts', '?')} prompts)"
          if data.get("variant_batch") else "")
    for path in data.get("variants", []):
        what = f"generation variant{at}: {path['path'].strip()}"
        if "failed" in path:
            out.append(figure(what, f"failed: {path['failed']}", ""))
            continue
        same = "" if path.get("identical_to_plain_generate", True) else f"; {path['prompts_differing']} prompts differ"
        out.append(figure(what + same, path["new_tokens_per_s"], "new tokens/s"))
    held = data.get("heldout_identity")
    if held:
        out.append(figure(f"held-out prompts whose greedy tokens differ, oneDNN vs aten products ({held['exp']}, "
                          f"{held['prompts']} prompts, {held['max_new_tokens']} new tokens)",
                          held["prompts_differing"], "prompts"))
        seconds = held.get("seconds") or {}
        if seconds.get("onednn") and seconds.get("aten"):
            out.append(figure(f"held-out generation time, oneDNN products ({held['prompts']} prompts, batch "
                              f"{held.get('batch_size', '?')}, {held['max_new_tokens']} new tokens)", seconds["onednn"], "s",
                              round(seconds["aten"] / seconds["onednn"], 2), "aten time ÷ oneDNN time"))
    return out


def read_sampling(data: dict) -> list[dict]:
    """bench_sampling.py: k sampled answers per prompt, halluguard's loop against model.generate."""
    setting = (f"{data['prompts']} prompts of {data['mean_prompt_tokens']:.0f} tokens x {data['copies']} answers, "
               f"{data['max_new_tokens']} new tokens, T {data['temperature']:g}, batch {data['batch_rows']} rows")
    out = []
    for name, path in data.get("paths", {}).items():
        project = name == "halluguard"
        out.append(figure(f"sampled answers, {name}, {setting}", path["answers_per_s"], "answers/s",
                          data.get("speedup") if project else None, "model.generate time ÷ halluguard time"))
        out.append(figure(f"sampled answers' mean length, {name}, {setting}", path["mean_answer_tokens"], "tokens"))
    return out


READERS: dict[str, Callable[[Any], list[dict]]] = {
    "build": read_build, "eval": read_eval, "ppo": read_ppo, "reward": read_reward, "faiss": read_faiss,
    "generation": read_generation, "num_proc_build": read_num_proc, "sampling": read_sampling,
}


def reader_for(stem: str) -> Callable[[Any], list[dict]] | None:
    """The reader of ``<stem>.json``: by exact name, else by prefix (``ppo_tiny`` -> ppo, ``eval500`` -> eval)."""
    if stem in READERS:
        return READERS[stem]
    for name in sorted(READERS, key=len, reverse=True):
        if stem.startswith(name):
            return READERS[name]
    return None


def read_numeric_fields(data: Any, prefix: str = "", limit: int = 40) -> list[dict]:
    """A file with no reader: each numeric field, named by its path (units unknown)."""
    out: list[dict] = []

    def walk(node: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            out.append(figure(path or "value", node, "?"))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(data, prefix)
    return out


# ---------------------------------------------------------------- when and where

def recorded_when(data: Any, path: Path) -> str:
    if isinstance(data, dict):
        for key in ("finished_utc", "started_utc", "created", "when", "timestamp"):
            if isinstance(data.get(key), str):
                return data[key]
    modified = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return f"file modified {modified.isoformat(timespec='seconds')}"


def recorded_machine(data: Any) -> str:
    if not isinstance(data, dict):
        return NOT_RECORDED
    parts = []
    machine = data.get("machine")
    if isinstance(machine, dict):
        if machine.get("cpu"):
            parts.append(str(machine["cpu"]))
        cores = machine.get("cores", machine.get("cpus"))
        if cores:
            parts.append(f"{cores} cores")
        if machine.get("torch_threads"):
            parts.append(f"{machine['torch_threads']} torch threads")
        if machine.get("faiss_threads"):
            parts.append(f"{machine['faiss_threads']} faiss threads")
        load = data.get("load_average_before") or machine.get("load_average")
        if load:
            parts.append("load " + "/".join(f"{x:.2f}" for x in load[:3]))
    if "threads" in data and not parts:
        parts.append(f"{data['threads']} torch threads")
    if "device" in data and isinstance(data["device"], str):
        parts.append(f"device {data['device']}")
    return ", ".join(parts) or NOT_RECORDED


def collect(out_dir: Path) -> list[dict]:
    """Every figure of every ``out_dir/*.json``, each with its benchmark, when, machine and source file name."""
    rows = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            rows.append({"benchmark": path.stem, "what": f"unreadable: {exc}", "value": None, "unit": "",
                         "when": "", "machine": "", "source": path.name})
            continue
        reader = reader_for(path.stem)
        try:
            figures = reader(data) if reader else read_numeric_fields(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a layout this reader does not know
            figures = [figure(f"(layout not understood: {type(exc).__name__} {exc}; numeric fields follow)", None, "")]
            figures += read_numeric_fields(data)
        when, machine = recorded_when(data, path), recorded_machine(data)
        benchmark = data.get("benchmark", path.stem) if isinstance(data, dict) else path.stem
        for fig in figures:
            rows.append({"benchmark": benchmark, **{k: _num(v) for k, v in fig.items()},
                         "when": when, "machine": machine, "source": path.name})
    return rows


# ---------------------------------------------------------------- outputs

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict], generated: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        (f"Collected by `benchmarks/run_all.py` on {generated} from `benchmarks/out/*.json` (one row per measured "
         "figure; rebuild with `python benchmarks/run_all.py --collect-only`). *ratio* is the ratio the benchmark "
         "recorded, with what it divides in brackets; *when* and *machine* are what the file records "
         f"(\"{NOT_RECORDED}\" when it records nothing; the file's modification time when it has no date)."),
        "",
        "| benchmark | what | value | unit | ratio | when | machine | source |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for r in rows:
        ratio = f"{_cell(r['ratio'])} ({r['ratio_of']})" if r.get("ratio") is not None else ""
        lines.append(f"| {_cell(r['benchmark'])} | {_cell(r['what'])} | {_cell(r['value'])} | {_cell(r['unit'])} | "
                     f"{_cell(ratio)} | {_cell(r['when'])} | {_cell(r['machine'])} | {_cell(r['source'])} |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, results_json: Path, results_md: Path) -> list[dict]:
    rows = collect(out_dir)
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    sources = sorted({r["source"] for r in rows})
    Path(results_json).write_text(json.dumps({"generated_utc": generated, "out_dir": str(out_dir), "sources": sources,
                                              "figures": rows}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    Path(results_md).write_text(markdown(rows, generated), encoding="utf-8")
    print(f"collected {len(rows)} figures from {len(sources)} files into {results_json} and {results_md}")
    return rows


# ---------------------------------------------------------------- running

def run_scripts(only: str) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {f"bench_{n.strip()}.py" for n in only.split(",") if n.strip()}
        unknown = wanted - {s.name for s in scripts}
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(s.name for s in scripts)}")
            return 2
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"=== {script.name}: exit {rc} in {time.perf_counter() - start:.0f} s ===", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names (bench_<name>.py)")
    parser.add_argument("--collect-only", action="store_true",
                        help="run nothing: rebuild results.json and results.md from the existing JSON files")
    parser.add_argument("--out-dir", default=str(HERE / "out"), help="where the benchmarks wrote their JSON")
    parser.add_argument("--results-json", default=str(HERE / "results.json"))
    parser.add_argument("--results-md", default=str(HERE / "results.md"))
    args = parser.parse_args(argv)
    rc = 0 if args.collect_only else run_scripts(args.only)
    if rc == 2:
        return rc
    write_results(Path(args.out_dir), Path(args.results_json), Path(args.results_md))
    return rc


if __name__ == "__main__":
    sys.exit(main())
