"""Build throughput on SQuAD 2.0 (../shared/data): the whole build against encoding alone.

Targets (issue: builders): the build without model sampling finishes in under 3 minutes on 2
cores for the 540 passages / 4,119 questions of the SQuAD 2.0 dev file, and costs at most 1.5x
the time of encoding the same texts alone ("retrieval and logic must not dominate the encoder").
Two ratios, both from this run:
* ``ratio_pq``: build time / encoding the passages and questions alone, timed separately;
* ``ratio_all``: build time / time the build itself spent inside the encoder, which also encodes
  every synthetic question and generated response (refusal detector, near-duplicate checks).
Also reports how build time grows from 1k to 4k questions. The encoder is warmed up first.

Then ``builder.num_proc``: the same build (the embedded demo KB by default) with 1 and with N processes
for the per-question builders, after one warm-up build of each, interleaved, median of ``--repeats``;
the ratios (1 process / N) are measured in this run, and the outputs are checked to be identical.
Written to ``benchmarks/out/num_proc_build.json`` (with the machine's cores and load average: on a
shared machine the figures move with what else runs).

Usage: python benchmarks/bench_build.py [--sizes 1000,2000,4119] [--out benchmarks/out/build.json]
       [--num-proc 2] [--repeats 3] [--num-proc-kb demo|squad2] [--num-proc-out benchmarks/out/num_proc_build.json]
       (--sizes "" skips the SQuAD sizes; --num-proc 0 skips the comparison)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "data" / "squad2" / "dev-v2.0.json"


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["stage=build", *overrides])
    GlobalHydra.instance().clear()
    return validate(cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4119", help='question counts on SQuAD 2.0 ("" = none)')
    parser.add_argument("--extra", default="", help="extra overrides, comma separated "
                        "(e.g. builder.filters.detector_prototypes=false)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "build.json"))
    parser.add_argument("--num-proc", type=int, default=2, help="compare builder.num_proc=1 with this (0 = skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed builds per num_proc, after one warm-up each")
    parser.add_argument("--num-proc-kb", default="demo", choices=("demo", "squad2"))
    parser.add_argument("--num-proc-questions", type=int, default=0, help="builder.max_questions there (0 = all)")
    parser.add_argument("--num-proc-out", default=str(ROOT / "benchmarks" / "out" / "num_proc_build.json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes and SQUAD.is_file():
        squad_sizes(args, sizes)
    elif sizes:
        print(f"skipped the SQuAD sizes: {SQUAD} not found (they need ../shared/data)")
    if args.num_proc > 1:
        if args.num_proc_kb == "squad2" and not SQUAD.is_file():
            print(f"skipped the num_proc comparison: {SQUAD} not found")
        else:
            compare_num_proc(args)
    return 0


def squad_sizes(args, sizes: list[int]) -> None:
    from data_builders.sources import load_kb
    from halluguard.retrieval import Encoder, passage_text
    from halluguard.stages import build

    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    base = ["kb=squad2", f"kb.passages={SQUAD}", f"paths.runs={tmp}", *[o for o in args.extra.split(",") if o]]
    cfg = compose(base)
    passages, questions = load_kb(cfg.kb)
    encoder = Encoder.from_config(cfg.retriever)
    encoder.encode([passage_text(p) for p in passages[:64]])  # warm-up

    rows = []
    for size in sizes:
        size = min(size, len(questions))
        t = time.perf_counter()
        encoder.encode([passage_text(p) for p in passages])
        from random import Random
        qs = questions if size == len(questions) else Random(0).sample(questions, size)
        encoder.encode([q.question for q in qs])
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        manifest = build.run(compose(base + [f"builder.max_questions={size}", f"exp=q{size}"]))
        build_s = time.perf_counter() - t
        enc = manifest.metrics.get("encoder") or {}
        rows.append({"questions": size, "passages": len(passages), "encode_only_s": round(encode_s, 2),
                     "build_s": round(build_s, 2), "ratio_pq": round(build_s / encode_s, 2),
                     "encoder_in_build_s": enc.get("seconds"), "texts_encoded_in_build": enc.get("texts"),
                     "ratio_all": round(build_s / enc["seconds"], 2) if enc.get("seconds") else None,
                     "questions_per_s": round(size / build_s, 1),
                     "pairs_train": manifest.metrics.get("pairs_train"),
                     "phases_s": manifest.metrics.get("timings_s")})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n{'questions':>9} {'enc p+q s':>9} {'build s':>8} {'ratio_pq':>8} {'enc in build s':>14} "
          f"{'texts':>7} {'ratio_all':>9} {'q/s':>6}")
    for r in rows:
        print(f"{r['questions']:>9} {r['encode_only_s']:>9} {r['build_s']:>8} {r['ratio_pq']:>8} "
              f"{r['encoder_in_build_s']:>14} {r['texts_encoded_in_build']:>7} {r['ratio_all']:>9} {r['questions_per_s']:>6}")
    full = rows[-1]
    print(f"\nfull set: build {full['build_s']} s (target < 180 s); {full['ratio_pq']}x encoding the passages and "
          f"questions alone; {full['ratio_all']}x the time spent encoding all {full['texts_encoded_in_build']} texts "
          "the build embeds (target <= 1.5x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


def _outputs_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("pairs_train.jsonl", "pairs_heldout.jsonl", "cases.jsonl"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def compare_num_proc(args) -> None:
    """builder.num_proc=1 against N on one KB: a warm-up build of each, then interleaved timed builds."""
    from halluguard.stages import build

    tmp = Path(tempfile.mkdtemp(prefix="bench-num-proc-"))
    base = [f"paths.runs={tmp}", *[o for o in args.extra.split(",") if o]]
    if args.num_proc_kb == "squad2":
        base = ["kb=squad2", f"kb.passages={SQUAD}", *base]
    if args.num_proc_questions:
        base.append(f"builder.max_questions={args.num_proc_questions}")
    procs = (1, args.num_proc)
    build_s: dict[int, list[float]] = {n: [] for n in procs}
    phase_s: dict[int, list[float]] = {n: [] for n in procs}
    digests: set[str] = set()
    load_before = os.getloadavg()
    manifest = None
    for rep in range(args.repeats + 1):  # round 0 is the warm-up
        for n in procs:
            t = time.perf_counter()
            manifest = build.run(compose(base + [f"builder.num_proc={n}", f"exp=np{n}_{rep}"]))
            elapsed = time.perf_counter() - t
            digests.add(_outputs_digest(manifest.path.parent))
            if rep:
                build_s[n].append(round(elapsed, 2))
                phase_s[n].append(manifest.metrics["timings_s"]["cases_and_pairs"])
    med = {n: statistics.median(build_s[n]) for n in procs}
    med_phase = {n: statistics.median(phase_s[n]) for n in procs}
    m = manifest.metrics
    result = {
        "benchmark": f"build, builder.num_proc 1 vs {args.num_proc} ({args.num_proc_kb} KB)",
        "kb": args.num_proc_kb, "questions": m["questions"], "passages": m["passages"],
        "repeats": args.repeats, "warmup_builds_per_num_proc": 1,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": [round(x, 2) for x in load_before]},
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "build_s_median": {f"num_proc_{n}": med[n] for n in procs},
        "synthesis_and_pairs_s_median": {f"num_proc_{n}": med_phase[n] for n in procs},
        "build_ratio_1_over_n": round(med[1] / med[args.num_proc], 3),
        "synthesis_and_pairs_ratio_1_over_n": round(med_phase[1] / med_phase[args.num_proc], 3),
        "build_s_runs": {f"num_proc_{n}": build_s[n] for n in procs},
        "synthesis_and_pairs_s_runs": {f"num_proc_{n}": phase_s[n] for n in procs},
        "outputs_identical": len(digests) == 1,
    }
    print(f"\nbuilder.num_proc on the {args.num_proc_kb} KB ({m['questions']} questions, {m['passages']} passages; "
          f"{os.cpu_count()} cores, load average {result['machine']['load_average'][0]} before): "
          f"median of {args.repeats} builds after a warm-up")
    print(f"{'num_proc':>8} {'build s':>8} {'synthesis+pairs s':>17}")
    for n in procs:
        print(f"{n:>8} {med[n]:>8} {med_phase[n]:>17}")
    print(f"ratio 1/{args.num_proc}: whole build {result['build_ratio_1_over_n']}x, synthesis + pairs "
          f"{result['synthesis_and_pairs_ratio_1_over_n']}x; outputs identical: {result['outputs_identical']}")
    Path(args.num_proc_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.num_proc_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
