"""Reward-model training time on the demo build with the embedded SmolLM2-135M (issue: reward).

Target: `halluguard reward` with the default configuration finishes within 10 minutes on 2 cores
(training, the normalisation pass and the held-out evaluation together). Prints the stage's wall
time, training seconds and seconds per step, scoring throughput (responses/s) and the held-out
pairwise accuracy per pair kind, all from this run. The demo build is made first in a temporary
runs folder unless --runs points at one that has it (its time is not counted).

Usage: python benchmarks/bench_reward.py [--runs runs] [--exp demo] [--extra k=v,k=v] [--out benchmarks/out/reward.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 600.0


def compose(stage: str, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"stage={stage}", *overrides])
    GlobalHydra.instance().clear()
    return validate(cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="", help="runs folder holding <exp>/build (default: build into a temp folder)")
    parser.add_argument("--exp", default="demo")
    parser.add_argument("--extra", default="", help="extra overrides, comma separated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "reward.json"))
    args = parser.parse_args()

    from halluguard.artifacts import Manifest
    from halluguard.stages import build, reward

    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="bench-reward-"))
    base = [f"paths.runs={runs}", f"exp={args.exp}", *[o for o in args.extra.split(",") if o]]
    if not (runs / args.exp / "build" / "manifest.json").is_file():
        print(f"building the demo pairs in {runs} first (not timed)", flush=True)
        build.run(compose("build", base))
    start = time.perf_counter()
    manifest = reward.run(compose("reward", base))
    wall = time.perf_counter() - start
    m = Manifest.load(manifest.path.parent).metrics
    result = {
        "wall_seconds": round(wall, 1), "target_seconds": TARGET_S, "within_target": wall <= TARGET_S,
        "train_seconds": m.get("train_seconds"), "steps": m.get("steps"),
        "seconds_per_step": round(m["train_seconds"] / max(1, m["steps"] or 1), 2) if m.get("train_seconds") else None,
        "scoring_responses_per_s": m.get("throughput_responses_per_s"),
        "rm_accuracy_by_kind": m.get("rm_accuracy_by_kind"), "rules_accuracy_by_kind": m.get("rules_accuracy_by_kind"),
        "overrides": base,
    }
    print(json.dumps(result, indent=2))
    print(f"\nreward stage: {wall:.0f} s wall ({'within' if wall <= TARGET_S else 'OVER'} the {TARGET_S:.0f} s target); "
          f"{result['seconds_per_step']} s/step over {result['steps']} steps; "
          f"scoring {result['scoring_responses_per_s']} responses/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
