"""The reward audit of ``halluguard eval`` on answers evaluated elsewhere: an eval's ``samples.jsonl`` (for
instance from a GPU run of ``benchmarks/quality_gpu.sh``) scored with a reward stage of this machine.

    python benchmarks/audit_samples.py --samples OUT/runs/gpu/eval/samples.jsonl --exp gpucpu [--models sft,ppo]

``--exp`` names the experiment whose ``build`` (the same held-out questions) and ``reward`` stage are used
(``--reward-exp`` takes the reward stage from another experiment, e.g. one built with other negatives).
Prints the audit table (``halluguard.evaluation.reward_audit``) and, with ``--out``, writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", required=True, type=Path, help="an eval's samples.jsonl")
    parser.add_argument("--exp", required=True, help="experiment with the build and reward stages to use")
    parser.add_argument("--reward-exp", help="take the reward stage from this experiment instead (same tokenizer)")
    parser.add_argument("--models", default="sft,ppo,dpo,grpo", help="models of samples.jsonl to audit")
    parser.add_argument("--out", type=Path, help="write the audit as JSON here")
    args = parser.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir, validate
    from halluguard.evaluation.heldout import load_heldout
    from halluguard.evaluation.reward_audit import (load_scorers, format_audit, score_answers, summarise, warnings_for,
                                                   with_suggestion)
    from halluguard.reward.evaluate import load_build_context

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["stage=eval", f"exp={args.exp}"]))
    build = Manifest.load(stage_dir(cfg, "build"))
    by_id = {q.case_id: q for q in load_heldout(build.output_path("heldout"))}
    rows = [json.loads(line) for line in args.samples.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [r["case_id"] for r in rows if r["case_id"] not in by_id]
    if missing:
        sys.exit(f"{len(missing)} questions of {args.samples} are not in the held-out set of {build.path.parent} "
                 f"(e.g. {missing[:3]}): audit with the experiment whose build made them")
    questions = [by_id[r["case_id"]] for r in rows]
    passages, _ = load_build_context(build.path.parent, build)
    reward_cfg = cfg
    if args.reward_exp:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            reward_cfg = validate(compose(config_name="config", overrides=["stage=eval", f"exp={args.reward_exp}"]))
    scorers = load_scorers(cfg, Manifest.load(stage_dir(reward_cfg, "reward")))
    models = {}
    for name in [m for m in args.models.split(",") if m and m in rows[0]["models"]]:
        answers = [r["models"][name]["answer"] for r in rows]
        refused = [bool(r["models"][name]["refused"]) for r in rows]
        scores = score_answers(scorers, questions, answers, passages, float(cfg.reward.rm_weight))
        models[name] = summarise(scores, [q.label for q in questions], refused)
    with_suggestion(models, float(cfg.reward.rules.answer_ook))
    audit = {"status": "ok", "reason": None, "samples": str(args.samples),
             "reward": str(stage_dir(reward_cfg, "reward")), "models": models,
             "warnings": warnings_for(models)}
    print(format_audit(audit))
    if args.out:
        args.out.write_text(json.dumps(audit, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
