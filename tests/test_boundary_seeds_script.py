"""benchmarks/boundary_seeds_gpu.sh: its checks and its folder logic, with a stand-in `halluguard` and no GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "boundary_seeds_gpu.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Records each call and writes what the real stages would leave behind.
FAKE = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = sft ]; then mkdir -p runs/gpu_boundary/sft && echo '{}' > runs/gpu_boundary/sft/manifest.json; exit 0; fi
exp=""; for a in "$@"; do case "$a" in exp=*) exp=${a#exp=};; esac; done
mkdir -p "runs/$exp/eval" "runs/$exp/ppo" && echo '{}' > "runs/$exp/eval/results.json"
echo "== stage 1/2: ppo done in 1.0 s =="
"""


def run_script(root: Path, seeds: str = "0 1", budget: str = "600", **env) -> subprocess.CompletedProcess:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "halluguard"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    full_env = {**os.environ, "BOUNDARY_ALLOW_CPU": "1", "CALLS": str(root / "calls.txt"),
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", str(SCRIPT), str(root / "out"), seeds, budget], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=60)


def make_build(root: Path) -> None:
    build = root / "runs" / "gpu_boundary" / "build"
    build.mkdir(parents=True)
    (build / "manifest.json").write_text("{}")


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_missing_build_is_named(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 2 and "runs/gpu_boundary/build is missing" in result.stderr
    assert "builder.split.heldout_fraction=0.4" in result.stderr  # the build command to run, with its overrides


def test_sft_once_then_each_seed_in_its_own_folder(tmp_path):
    make_build(tmp_path)
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0].startswith("sft +experiment=gpu_boundary builder.split.heldout_fraction=0.4")
    assert "exp=gb6-s0" in calls[1] and "seed=0" in calls[1] and "eval.models=[sft,ppo]" in calls[1]
    assert "exp=gb6-s1" in calls[2] and "seed=1" in calls[2] and "eval.models=[ppo]" in calls[2]
    for seed in (0, 1):
        folder = tmp_path / "runs" / f"gb6-s{seed}"
        assert (folder / "build" / "manifest.json").is_file()
        # the reference is hard-linked, not copied: every seed starts from the same file
        assert (folder / "sft" / "manifest.json").stat().st_ino == \
            (tmp_path / "runs" / "gpu_boundary" / "sft" / "manifest.json").stat().st_ino
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "runs/gb6-s1/eval/results.json" in names and "runs/gb6-s0/console.log" in names
    # a second call reuses the reference instead of retraining it
    (tmp_path / "calls.txt").unlink()
    assert run_script(tmp_path, seeds="2").returncode == 0
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 1 and "exp=gb6-s2" in calls[0]
    assert "reusing runs/gpu_boundary/sft" in (tmp_path / "out" / "log.txt").read_text()


def test_a_seed_that_does_not_fit_the_budget_is_skipped(tmp_path):
    make_build(tmp_path)
    result = run_script(tmp_path, seeds="0", budget="60")
    assert result.returncode == 0
    assert "skip seed 0" in result.stdout and not (tmp_path / "runs" / "gb6-s0").exists()
