"""benchmarks/quality_gpu.sh: its argument checks, run without a GPU (QUALITY_ALLOW_CPU=1) and without training."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_gpu.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(cwd: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "QUALITY_ALLOW_CPU": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), str(cwd / "out"), "e"], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60)


def make_exp(root: Path, stages=("build", "sft", "reward")) -> None:
    for stage in stages:
        (root / "runs" / "e" / stage).mkdir(parents=True)
    if "build" in stages:
        (root / "runs" / "e" / "build" / "manifest.json").write_text("{}")


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_missing_build_is_named(tmp_path):
    result = run_script(tmp_path, QUALITY_STEPS="A")
    assert result.returncode == 2
    assert "runs/e/build is missing" in result.stderr


def test_unknown_step_is_named(tmp_path):
    make_exp(tmp_path)
    result = run_script(tmp_path, QUALITY_STEPS="Z")
    assert result.returncode == 2
    assert "unknown step 'Z'" in result.stdout


def test_bad_variant_entry_stops_before_any_run(tmp_path):
    make_exp(tmp_path)
    result = run_script(tmp_path, QUALITY_STEPS="P", QUALITY_P="ok|ppo,eval|;broken")
    assert result.returncode == 2
    assert "bad QUALITY_P entry 'broken'" in result.stdout
    assert not (tmp_path / "runs" / "e-ok").exists()  # checked before the first variant forks


def test_variant_needs_the_shared_reference(tmp_path):
    make_exp(tmp_path, stages=("build",))
    result = run_script(tmp_path, QUALITY_STEPS="P", QUALITY_P="v|ppo,eval|")
    assert result.returncode == 2
    assert "has no sft/reward" in result.stdout
