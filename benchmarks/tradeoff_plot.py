"""Several evaluations on one refusal trade-off chart (OOK refusal against over-refusal, one point per model).

    python benchmarks/tradeoff_plot.py --run "CPU demo=runs/demo/eval/results.json" \\
        --run "GPU U=OUT/runs/gpu2/eval/results.json" --models sft,ppo,gate,gated_ppo --out tradeoff.png

Each ``--run LABEL=PATH`` is an eval's ``results.json``; compare only runs on the same held-out questions.
Arrows mark SFT -> PPO (and -> DPO, GRPO) within a run. Prints the points it drew.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_run(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--run takes LABEL=PATH to a results.json, got '{text}'")
    return label, Path(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", type=parse_run, required=True, help="LABEL=results.json (repeat)")
    parser.add_argument("--models", default="", help="comma-separated models to draw (default: all)")
    parser.add_argument("--title", default="refusal trade-off")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from halluguard.evaluation.tradeoff import draw_tradeoff, tradeoff_points

    wanted = {m for m in args.models.split(",") if m}
    runs = {}
    for label, path in args.run:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: --run {label}={path}: cannot read an eval results.json ({exc})", file=sys.stderr)
            return 2
        points = [p for p in tradeoff_points(results) if not wanted or p["name"] in wanted]
        if not points:
            print(f"error: --run {label}={path} has none of the models {sorted(wanted) or 'with both rates'}",
                  file=sys.stderr)
            return 2
        runs[label] = points
        for p in points:
            print(f"{label:<16} {p['name']:<14} over-refusal {p['x']:.3f}  OOK refusal {p['y']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {draw_tradeoff(runs, args.out, args.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
