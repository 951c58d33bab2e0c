"""Held-out metrics of every saved PPO checkpoint: does the boundary trend over the steps, or wander?

    python benchmarks/checkpoint_trajectory.py --exp cpureserve40 --steps 0,8,16,20,24

The evaluation reads one checkpoint, the one the KL budget chose. This answers the same held-out questions
greedily with the policy at each listed checkpoint (``runs/<exp>/ppo/checkpoints/step-N/adapter`` on the
model PPO started from), and prints the key metrics per step beside the step's batch KL and reward from
``metrics.jsonl``. A trend says more steps (or a larger budget) would help; a walk of the same size as the
total change says the result is one draw of a noisy path, and one checkpoint's held-out change is not the
method's effect.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_steps(text: str, available: list[int]) -> list[int]:
    """``all`` or comma-separated step numbers, each one a saved checkpoint."""
    if text == "all":
        return available
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --steps must be 'all' or comma-separated integers, got {text!r}") from None
    missing = [s for s in steps if s not in available]
    if missing or not steps:
        raise SystemExit(f"error: no checkpoint for step(s) {missing or text!r}; saved: {available}")
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", required=True, help="experiment whose ppo stage has finished")
    parser.add_argument("--steps", default="all", help="checkpoints to evaluate: all, or e.g. 0,10,20")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override (repeatable)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir

    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir, validate
    from halluguard.errors import HalluguardError
    from halluguard.evaluation import summarize
    from halluguard.evaluation.across_runs import HEADERS, KEY_METRICS
    from halluguard.evaluation.models import ModelSpec, PolicySource
    from halluguard.evaluation.runner import GenerationSettings, answer_with_policy, attach_outcomes, classified
    from halluguard.ppo.policy import start_source
    from halluguard.retrieval import Encoder
    from halluguard.stages.eval import prepare_questions, refusal_detector

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["stage=eval", f"exp={args.exp}", *args.override]))
    ppo_dir = stage_dir(cfg, "ppo")
    checkpoints = ppo_dir / "checkpoints"
    if not (ppo_dir / "manifest.json").is_file() or not checkpoints.is_dir():
        print(f"error: {ppo_dir} holds no finished PPO run with checkpoints/: run `halluguard ppo exp={args.exp}`",
              file=sys.stderr)
        return 2
    available = sorted(int(p.name.split("-", 1)[1]) for p in checkpoints.glob("step-*") if (p / "adapter").is_dir())
    steps = parse_steps(args.steps, available)
    rows = {r["step"]: r for r in (json.loads(line) for line in (ppo_dir / "metrics.jsonl").read_text().splitlines()
                                   if line.strip())}
    chosen = Manifest.load(ppo_dir).metrics.get("chosen_step")
    try:
        base = start_source(cfg)
        encoder = Encoder.from_config(cfg.retriever)
        questions, _ = prepare_questions(cfg, Manifest.load(stage_dir(cfg, "build")), encoder)
        detector = refusal_detector(cfg, encoder)
    except HalluguardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = GenerationSettings.from_config(cfg.eval)
    print(f"exp={args.exp}: {len(questions)} held-out questions, greedy; PPO started from {base}; "
          f"the evaluated result is step {chosen}")
    print(f"{'step':>5}{'KL':>8}{'reward':>9}" + "".join(f"{HEADERS[m]:>14}" for m in KEY_METRICS), flush=True)
    table = []
    for step in steps:
        source = PolicySource(base=base, adapter=str(checkpoints / f"step-{step}" / "adapter"))
        answers = answer_with_policy(source, cfg, questions, settings, device, desc=f"step {step}")
        result = attach_outcomes(classified(ModelSpec(f"step-{step}", "policy", "ppo"), questions, answers, detector),
                                 questions)
        metrics = summarize(result.outcomes, ci=False)["metrics"]
        values = {m: metrics[m]["value"] for m in KEY_METRICS}
        row = rows.get(step, {})
        table.append({"step": step, "kl": row.get("kl"), "reward": row.get("reward"), **values})
        cells = "".join("{:>14}".format("n/a" if values[m] is None else f"{values[m]:.3f}") for m in KEY_METRICS)
        kl = "n/a" if row.get("kl") is None else f"{row['kl']:.3f}"
        reward = "n/a" if row.get("reward") is None else f"{row['reward']:+.3f}"
        print(f"{step:>5}{kl:>8}{reward:>9}{cells}{'  <- result' if step == chosen else ''}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"exp": args.exp, "chosen_step": chosen, "steps": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
