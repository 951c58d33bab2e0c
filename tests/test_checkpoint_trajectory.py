"""benchmarks/checkpoint_trajectory.py: which checkpoints it reads, and a clear error without a PPO run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_trajectory.py"


def test_steps_are_all_saved_checkpoints_or_a_list_of_saved_ones():
    parse = load_benchmark("checkpoint_trajectory").parse_steps
    assert parse("all", [0, 2, 4]) == [0, 2, 4]
    assert parse("4,0", [0, 2, 4]) == [4, 0]
    with pytest.raises(SystemExit, match=r"no checkpoint for step\(s\) \[3\]; saved: \[0, 2, 4\]"):
        parse("0,3", [0, 2, 4])
    with pytest.raises(SystemExit, match="comma-separated integers"):
        parse("x", [0])


def test_an_experiment_without_ppo_says_what_to_run(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--exp", "no-such-exp-here",
                           "--override", f"paths.runs={tmp_path}"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "holds no finished PPO run" in done.stderr
    assert "halluguard ppo exp=no-such-exp-here" in done.stderr
