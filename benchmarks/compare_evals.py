"""One model of several eval runs (seeds, variants) against a baseline, paired on the same held-out questions.

    python benchmarks/compare_evals.py --baseline runs/gpu2-rules/eval:sft \\
        s0=runs/gpu2-rules64/eval:ppo s1=runs/gpu2-s1/eval:ppo s2=runs/gpu2-s2/eval:ppo

Each run is ``[NAME=]PATH:MODEL``: PATH an eval's samples.jsonl, its eval folder or its experiment folder,
MODEL a model evaluated there (sft, ppo, gated_ppo, ...). Prints the key metrics of each, the change from the
baseline with McNemar's p on the OOK and IK refusals, the mean / sd / range of the changes, and how many runs
raised OOK refusal without raising over-refusal. ``--sampled`` adds the same comparison of the sampled refusal
rates (each eval run with ``eval.sampled.samples > 0``: its sampled.jsonl), each group's change with its paired
permutation p-value; ``--sampled-only`` reads only sampled.jsonl files (PATH may be one). ``--pool`` adds the
method over the seeds: the runs' per-question rates averaged, paired against the baseline on each question (for
greedy answers, the fraction of the runs that refused each question, under the same tests). Under each such
table: the changes' 95% paired bootstrap intervals, and how many questions each group would need for a change
like each run's to reach p < 0.05 with 80% power (``sampled_refusal.questions_for_power``), to size the next
experiment. ``--plot`` draws every change with its interval on one chart (``halluguard.evaluation.change_plot``);
``--out`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_run(text: str) -> tuple[str, Path, str]:
    """``[NAME=]PATH:MODEL`` -> (name, path, model); the name defaults to PATH:MODEL."""
    from halluguard.errors import HalluguardError

    name, eq, spec = text.partition("=")
    if not eq:
        name, spec = "", text
    path, sep, model = spec.rpartition(":")
    if not sep or not path or not model:
        raise HalluguardError(f"{text!r}: expected [NAME=]PATH:MODEL, e.g. s0=runs/exp/eval:ppo")
    return name or spec, Path(path), model


def compare_sampled(baseline: tuple[str, Path, str], runs: list[tuple[str, Path, str]], bootstrap: int,
                    pool: bool = False, beside_samples: bool = True) -> dict:
    """The runs' sampled refusal rates against the baseline's, each read beside its samples.jsonl (or, with
    ``beside_samples`` false, from PATH itself: a sampled.jsonl or its eval folder); ``pool`` adds their mean."""
    from halluguard.evaluation.across_runs import samples_file
    from halluguard.evaluation.sampled_refusal import (
        SampledSettings,
        compare_sampled_runs,
        mean_rates,
        rates_from_sampled,
    )

    def rates(path: Path, model: str) -> dict:
        return rates_from_sampled(samples_file(path).parent if beside_samples else path, model)

    each = {name: rates(path, model) for name, path, model in runs}
    if pool:
        each[f"mean of {len(runs)}"] = mean_rates(each)
    return compare_sampled_runs(rates(*baseline[1:]), each, SampledSettings(bootstrap=max(1, bootstrap)))


def pool_greedy(baseline, runs: dict, bootstrap: int) -> dict:
    """The runs' greedy refusals averaged question by question, against the baseline's, under the sampled tests."""
    from halluguard.evaluation.across_runs import greedy_rates
    from halluguard.evaluation.sampled_refusal import SampledSettings, compare_sampled_runs, mean_rates

    pooled = mean_rates({name: greedy_rates(outcomes) for name, outcomes in runs.items()})
    return compare_sampled_runs(greedy_rates(baseline), {f"mean of {len(runs)}": pooled},
                                SampledSettings(bootstrap=max(1, bootstrap)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="[NAME=]PATH:MODEL of the baseline, e.g. runs/x/eval:sft")
    parser.add_argument("runs", nargs="+", help="[NAME=]PATH:MODEL of each run to compare")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the paired intervals (0 = none)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--sampled", action="store_true",
                        help="also compare the sampled refusal rates (sampled.jsonl beside each samples.jsonl)")
    parser.add_argument("--sampled-only", action="store_true",
                        help="compare only the sampled refusal rates (PATH: a sampled.jsonl or its eval folder)")
    parser.add_argument("--pool", action="store_true",
                        help="add the runs' per-question refusals averaged (greedy, and sampled where compared), "
                             "against the baseline")
    parser.add_argument("--plot", type=Path, help="draw the changes with their 95%% intervals to this PNG")
    args = parser.parse_args(argv)
    if args.pool and len(args.runs) < 2:
        parser.error("--pool averages several runs: give at least two")

    from halluguard.errors import HalluguardError
    from halluguard.evaluation.across_runs import across_runs, format_across_runs, outcomes_from_samples

    try:
        base_name, base_path, base_model = parse_run(args.baseline)
        parsed = [parse_run(text) for text in args.runs]
        names = [name for name, _, _ in parsed]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise HalluguardError(f"two runs are named {repeated[0]!r}: name them NAME=PATH:MODEL")
        result = {}
        if not args.sampled_only:
            baseline = outcomes_from_samples(base_path, base_model)
            runs = {name: outcomes_from_samples(path, model) for name, path, model in parsed}
            result = across_runs(baseline, runs, n_boot=args.bootstrap)
            if args.pool:
                result["greedy_pooled"] = pool_greedy(baseline, runs, args.bootstrap)
        if args.sampled or args.sampled_only:
            result["sampled"] = compare_sampled((base_name, base_path, base_model), parsed, args.bootstrap,
                                                pool=args.pool, beside_samples=not args.sampled_only)
    except HalluguardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from halluguard.evaluation.sampled_refusal import format_sampled_runs

    tables = []
    if not args.sampled_only:
        tables.append(format_across_runs(result, base_name))
    if "greedy_pooled" in result:
        tables.append(format_sampled_runs(result["greedy_pooled"], base_name,
                                          what="greedy refusals pooled over the runs (each question's share of runs)"))
    if "sampled" in result:
        tables.append(format_sampled_runs(result["sampled"], base_name))
    print("\n\n".join(tables))
    if args.plot:
        from halluguard.evaluation.change_plot import change_rows, plot_changes

        print(f"chart: {plot_changes(change_rows(result), args.plot, base_name)}")
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps({"baseline": base_name, **result}, indent=1) + "\n", encoding="utf-8")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
