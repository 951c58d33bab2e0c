"""An evaluation's answers judged again with the refusal detector as it is now, into a new folder.

    python benchmarks/rejudge_answers.py runs/gb6-s0/eval --out runs/gb6-s0/eval-rejudged

A detector fix changes verdicts on answers that were already evaluated, often on a GPU run whose models are
gone. This reads the eval folder's ``samples.jsonl`` (greedy answers) and, when there, ``sampled.jsonl`` (k
sampled answers a question), judges every answer of every policy again, and writes both files to ``--out``
with the new ``refused`` / ``refusal_score`` (and ``correct``, which needs an answer) and ``refusal_rate``. It
prints, per model, how many verdicts changed each way (for sampled answers, each question's net change: the file
keeps no per-answer verdicts) and the refusal rates by label before and after.
``benchmarks/compare_evals.py`` then compares the re-judged folders as it compares evaluations.

Models without answer text (``never_refuse``, the retrieval ``gate``) and gated models (whose verdict is the
gate's where it fires, and the gate is not stored per model) are copied unchanged. The eval folder itself is
never written to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILES = ("samples.jsonl", "sampled.jsonl")


def rejudgeable(model: str, entry) -> bool:
    """Whether ``model``'s entry holds answers of its own to judge (not a gated or model-free baseline)."""
    if model.startswith("gated_") or not isinstance(entry, dict):
        return False
    return isinstance(entry.get("answer"), str) or isinstance(entry.get("answers"), list)


def rejudge_greedy(rows: list[dict], detector, stats: dict) -> None:
    """New ``refused`` / ``refusal_score`` / ``correct`` for each answer in a samples.jsonl, in place."""
    from halluguard.evaluation.runner import contains_gold

    todo = [(row, model, entry) for row in rows for model, entry in row["models"].items()
            if rejudgeable(model, entry) and isinstance(entry.get("answer"), str)]
    answers = [entry["answer"] for _, _, entry in todo]
    scores, flags = detector.score(answers), detector.is_refusal(answers)  # the second call reads the lead cache
    for (row, model, entry), score, flag in zip(todo, scores, flags):
        refused = bool(flag)
        counts = stats.setdefault(("greedy", model), Counter())
        counts[(row["label"], "before")] += bool(entry.get("refused"))
        counts[(row["label"], "after")] += refused
        counts[(row["label"], "n")] += 1
        if refused != bool(entry.get("refused")):
            counts["to refusal" if refused else "to answer"] += 1
        entry["refused"], entry["refusal_score"] = refused, round(float(score), 4)
        if entry.get("correct") is not None:
            entry["correct"] = (not refused) and contains_gold(entry["answer"], row.get("answers") or [])


def rejudge_sampled(rows: list[dict], detector, stats: dict) -> None:
    """New ``refusal_rate`` for each policy's sampled answers in a sampled.jsonl, in place."""
    import numpy as np

    from halluguard.evaluation.sampled_refusal import refusal_rates

    for model in sorted({m for row in rows for m, e in row["models"].items() if rejudgeable(m, e)}):
        picked = [row for row in rows if rejudgeable(model, row["models"].get(model))]
        rates = refusal_rates(detector, [row["models"][model]["answers"] for row in picked])
        counts = stats.setdefault(("sampled", model), Counter())
        for row, rate in zip(picked, rates):
            entry = row["models"][model]
            counts[(row["label"], "before")] += float(entry["refusal_rate"])
            counts[(row["label"], "after")] += float(rate)
            counts[(row["label"], "n")] += 1
            # sampled.jsonl keeps no per-answer verdicts: each question's net change in refusals is counted
            moved = round(float(rate - entry["refusal_rate"]) * len(entry["answers"]))
            counts["to refusal" if moved > 0 else "to answer"] += abs(moved)
            entry["refusal_rate"] = round(float(np.float64(rate)), 4)


def format_stats(stats: dict) -> str:
    lines = [f"{'answers':<9}{'model':<14}{'to refusal':>11}{'to answer':>10}   refusal rate before -> after"]
    for (kind, model), counts in stats.items():
        rates = "  ".join(f"{label.upper()} {counts[(label, 'before')] / counts[(label, 'n')]:.3f} -> "
                          f"{counts[(label, 'after')] / counts[(label, 'n')]:.3f}"
                          for label in ("ook", "ik") if counts[(label, "n")])
        lines.append(f"{kind:<9}{model:<14}{counts['to refusal']:>11}{counts['to answer']:>10}   {rates}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="an eval folder with samples.jsonl (and sampled.jsonl)")
    parser.add_argument("--out", required=True, type=Path, help="a new folder for the re-judged files")
    parser.add_argument("--encoder", default="embedded:all-MiniLM-L6-v2",
                        help="the detector's encoder, as eval's retriever.encoder names it")
    args = parser.parse_args(argv)

    from halluguard.errors import HalluguardError
    from halluguard.evaluation.across_runs import eval_rows

    try:
        sources = [args.eval_dir / name for name in FILES if (args.eval_dir / name).is_file()]
        if not (args.eval_dir / FILES[0]).is_file():
            raise HalluguardError(f"{args.eval_dir}: no samples.jsonl there (give an eval folder)")
        if args.out.resolve() == args.eval_dir.resolve():
            raise HalluguardError("--out is the eval folder itself: give a new folder, the originals are kept")
        existing = [args.out / p.name for p in sources if (args.out / p.name).exists()]
        if existing:
            raise HalluguardError(f"{existing[0]} exists: give a new --out folder")
        from halluguard.refusal import RefusalDetector
        from halluguard.retrieval import Encoder

        detector = RefusalDetector(Encoder(args.encoder))
        stats: dict = {}
        rejudged = {}
        for path in sources:
            rows = [row for _, row in eval_rows(path, "an eval")]
            (rejudge_greedy if path.name == FILES[0] else rejudge_sampled)(rows, detector, stats)
            rejudged[path.name] = rows
    except HalluguardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in rejudged.items():  # each file whole or not at all
        tmp = args.out / (name + ".tmp")
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(args.out / name)
    print(format_stats(stats))
    print(f"re-judged: {', '.join(str(args.out / n) for n in rejudged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
