"""How many new tokens the refusal detector needs: verdicts on answers cut to N tokens against the full answers.

    python benchmarks/refusal_lead_tokens.py runs/cpureserve/eval runs/cpurules/eval --tokens 24,32,48

The detector judges an answer by its first sentence, so a sampled pass (``eval.sampled``) can stop early and
cost less. This reads each evaluation's ``samples.jsonl``, cuts every policy's greedy answer to N tokens of
the policy's tokenizer, and prints per model how many verdicts stay the same.
``eval.sampled.max_new_tokens`` comes from this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evals", nargs="+", type=Path, help="eval folders (runs/<exp>/eval) with samples.jsonl")
    parser.add_argument("--tokens", default="24,32,48", help="cut lengths to try, comma-separated")
    parser.add_argument("--models", default="", help="models to check (default: every model with answer text)")
    args = parser.parse_args(argv)
    try:
        cuts = [int(t) for t in args.tokens.split(",") if t]
    except ValueError:
        print(f"error: --tokens must be comma-separated integers, got {args.tokens!r}", file=sys.stderr)
        return 2
    if not cuts or min(cuts) <= 0:
        print("error: --tokens needs at least one positive length", file=sys.stderr)
        return 2
    for folder in args.evals:
        if not (folder / "samples.jsonl").is_file():
            print(f"error: {folder / 'samples.jsonl'} is missing: run `halluguard eval` there first", file=sys.stderr)
            return 2

    from hydra import compose, initialize_config_dir

    from halluguard.config import validate
    from halluguard.models import load_tokenizer, resolve_policy_source
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["stage=eval"]))
    tokenizer = load_tokenizer(resolve_policy_source(cfg.model.name_or_path, Path(cfg.paths.cache).expanduser()),
                               cfg.model)
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=float(cfg.reward.refusal_threshold))
    wanted = {m for m in args.models.split(",") if m}
    width = max(len(str(f)) for f in args.evals) + 2
    print(f"{'eval':<{width}}{'model':<10}{'answers':>8}" + "".join(f"{f'same@{n}':>10}" for n in cuts))
    totals = {n: [0, 0] for n in cuts}
    for folder in args.evals:
        rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]
        names = [n for n in rows[0]["models"] if (not wanted or n in wanted) and not n.startswith("gate")] if rows else []
        for name in names:
            full = [row["models"][name]["answer"] for row in rows]
            if not any(full):
                continue  # a model-free baseline: no text to cut
            verdicts = detector.is_refusal(full)
            cells = ""
            for n in cuts:
                cut = [tokenizer.decode(tokenizer(a, add_special_tokens=False)["input_ids"][:n]) for a in full]
                same = int((detector.is_refusal(cut) == verdicts).sum())
                totals[n][0] += same
                totals[n][1] += len(full)
                cells += f"{same:>10}"
            print(f"{str(folder):<{width}}{name:<10}{len(full):>8}{cells}")
    print(f"{'all':<{width + 10}}{totals[cuts[0]][1]:>8}" + "".join(f"{totals[n][0]:>10}" for n in cuts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
