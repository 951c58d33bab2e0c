"""benchmarks/train_prompt_refusals.py: its grouping, and a clear error without the stages it reads (no model runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_prompt_refusals.py"


def test_prompts_are_grouped_by_label_and_by_whether_sft_saw_them():
    from halluguard.evaluation.heldout import EvalQuestion

    rows = [EvalQuestion(case_id=case, question_id=case, question="?", label=label, kind="", messages=[])
            for case, label in (("a", "ik"), ("b", "ook"), ("c", "ook"), ("d", "ik"))]
    groups = load_benchmark("train_prompt_refusals").groups_of(rows, seen_cases={"a", "b"})
    assert groups == {("ik", True): [0], ("ook", True): [1], ("ook", False): [2], ("ik", False): [3]}


def test_a_missing_experiment_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--exp", "no-such-exp-here", "--models", "sft"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 2 and "is missing: run `halluguard build` and `halluguard sft`" in done.stderr
