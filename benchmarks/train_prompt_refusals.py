"""Greedy refusal rates on PPO's training prompts, split by label and by whether SFT trained on the prompt.

    python benchmarks/train_prompt_refusals.py --exp cpurules --models sft,ppo --per-group 40

Why: SFT trains on one example per prompt, balanced by label, so on the demo build it sees nearly every
in-knowledge training prompt but only a third of the out-of-knowledge ones, and PPO samples from all of them.
A policy could then earn the rule reward by refusing whatever SFT never showed it, which on held-out
questions (all new) would read as refusing more on both labels. This prints each model's greedy refusal rate
per (label, seen by SFT) group of the experiment's PPO prompts, and the group sizes, to check for that
shortcut (measured once: it was not what happened; README, "A fourth GPU run").
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def groups_of(questions, seen_cases: set[str]) -> dict[tuple[str, bool], list[int]]:
    """Question positions per (label, seen by SFT)."""
    out: dict[tuple[str, bool], list[int]] = {}
    for i, question in enumerate(questions):
        out.setdefault((question.label, question.case_id in seen_cases), []).append(i)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", required=True, help="experiment with build, sft (and ppo) stages")
    parser.add_argument("--models", default="sft,ppo", help="models to ask (eval model names)")
    parser.add_argument("--per-group", type=int, default=40, help="prompts drawn per (label, seen) group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write the rates and every answer as JSON here")
    args = parser.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir

    from halluguard.config import stage_dir, validate
    from halluguard.errors import HalluguardError
    from halluguard.evaluation.heldout import load_heldout
    from halluguard.evaluation.models import parse_spec
    from halluguard.evaluation.runner import GenerationSettings, run_policy
    from halluguard.ppo.prompt_selection import sft_case_ids
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["stage=eval", f"exp={args.exp}"]))
    examples = stage_dir(cfg, "sft") / "examples.jsonl"
    prompts_dir = stage_dir(cfg, "build") / "ppo_prompts"
    for path in (examples, prompts_dir):
        if not path.exists():
            print(f"error: {path} is missing: run `halluguard build` and `halluguard sft` for exp={args.exp}",
                  file=sys.stderr)
            return 2
    try:
        seen = sft_case_ids(examples)
    except HalluguardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prompts = load_heldout(prompts_dir)  # the PPO prompts have the held-out set's columns
    rng = random.Random(args.seed)
    chosen: list[tuple[tuple[str, bool], int]] = []
    sizes = {}
    for key, positions in sorted(groups_of(prompts, seen).items()):
        sizes[key] = len(positions)
        chosen += [(key, i) for i in sorted(rng.sample(positions, min(args.per_group, len(positions))))]
    questions = [prompts[i] for _, i in chosen]
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever))
    settings = GenerationSettings(batch_size=args.batch_size, max_new_tokens=int(cfg.eval.max_new_tokens))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    refused: dict[str, list[bool]] = {}
    answers: dict[str, list[str]] = {}
    for name in [m for m in args.models.split(",") if m]:
        try:
            spec = parse_spec(name)
        except HalluguardError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if spec.kind != "policy":
            print(f"error: {name} is not a trained policy (sft, ppo, dpo, grpo, reference, ...)", file=sys.stderr)
            return 2
        result = run_policy(cfg, spec, questions, detector, device, settings)
        if not result.ok:
            print(f"error: model {name}: {result.reason}", file=sys.stderr)
            return 2
        answers[name], refused[name] = result.answers, [bool(x) for x in result.refused]

    names = list(refused)
    print(f"greedy refusal rate on exp={args.exp}'s PPO prompts (seen = SFT trained on the prompt)")
    print(f"{'label':<6}{'seen':<6}{'prompts':>9}{'asked':>7}" + "".join(f"{n:>10}" for n in names))
    table = []
    for key in sorted(sizes):
        picked = [j for j, (k, _) in enumerate(chosen) if k == key]
        rates = {n: sum(refused[n][j] for j in picked) / len(picked) for n in names} if picked else {}
        table.append({"label": key[0], "seen": key[1], "prompts": sizes[key], "asked": len(picked), "refusal": rates})
        print(f"{key[0]:<6}{'yes' if key[1] else 'no':<6}{sizes[key]:>9}{len(picked):>7}"
              + "".join(f"{rates[n]:>10.3f}" for n in names))
    if args.out:
        samples = [{"case_id": q.case_id, "label": q.label, "seen": key[1],
                    **{n: {"answer": answers[n][j], "refused": refused[n][j]} for n in names}}
                   for j, ((key, _), q) in enumerate(zip(chosen, questions))]
        args.out.write_text(json.dumps({"exp": args.exp, "groups": table, "samples": samples}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
