"""Build throughput on SQuAD 2.0 (../shared/data): the whole build against encoding alone.

Targets (issue: builders): the build without model sampling finishes in under 3 minutes on 2
cores for the 540 passages / 4,119 questions of the SQuAD 2.0 dev file, and costs at most 1.5x
the time of encoding the same texts alone ("retrieval and logic must not dominate the encoder").
Two ratios, both from this run:
* ``ratio_pq``: build time / encoding the passages and questions alone, timed separately;
* ``ratio_all``: build time / time the build itself spent inside the encoder, which also encodes
  every synthetic question and generated response (refusal detector, near-duplicate checks).
Also reports how build time grows from 1k to 4k questions. The encoder is warmed up first.

Usage: python benchmarks/bench_build.py [--sizes 1000,2000,4119] [--out benchmarks/out/build.json]
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--sizes", default="1000,2000,4119")
    parser.add_argument("--extra", default="", help="extra overrides, comma separated "
                        "(e.g. builder.filters.detector_prototypes=false)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "build.json"))
    args = parser.parse_args()
    if not SQUAD.is_file():
        print(f"skipped: {SQUAD} not found (the benchmark needs ../shared/data)")
        return 0

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
    for size in [int(s) for s in args.sizes.split(",")]:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
