"""One tiny ``halluguard run`` chain per test session, shared by the tests that read its output.

``test_cli.py`` checks the chain itself and ``test_notebooks.py`` runs the quickstart notebook on the
folder it leaves; the chain (a subprocess, the real console command) runs once for both. Import the
fixture into a test module with ``from tiny_chain import tiny_chain  # noqa: F401``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import built_tiny_overrides

BIN = Path(sys.executable).parent / "halluguard"

# Every stage at its smallest: seconds each on the tiny policy. The DPO baseline covers run.baselines.
CHAIN_SIZES = [
    "sft.max_steps=2", "sft.batch_size=4", "sft.samples=2", "sft.sample_max_new_tokens=4",
    "reward.train.max_steps=2", "reward.train.batch_size=4", "reward.train.max_length=160",
    "reward.train.norm_pairs=8",
    "ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.max_new_tokens=4", "ppo.probe_prompts=2",
    "ppo.max_prompt_length=1000", "ppo.lora.top_layers=1",
    "run.baselines=[dpo]", "ppo.dpo.max_steps=2", "ppo.dpo.batch_size=2",
    "eval.max_new_tokens=6", "eval.batch_size=4", "eval.bootstrap=30",
]


def halluguard(*args, timeout=300, threads: int | None = None):
    """The console command in a subprocess; ``threads=1`` keeps torch to one thread (tiny models only
    lose from a second one on a shared 2-core machine)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([str(BIN), *args], check=False, capture_output=True, text=True, timeout=timeout, env=env)


_CACHE: dict = {}


@pytest.fixture(scope="module")
def tiny_chain(tmp_path_factory, tiny_policy) -> dict:
    """``halluguard run`` (build, sft, reward, ppo, dpo, eval) on the tiny KB and policy, run once a session.

    Returns ``{"result": CompletedProcess, "exp_dir": runs/t, "seconds": wall time, "overrides": [...]}``.
    """
    if "chain" not in _CACHE:
        root = tmp_path_factory.mktemp("tiny-chain")
        overrides = [*built_tiny_overrides(root, tiny_policy), *CHAIN_SIZES]
        start = time.perf_counter()
        result = halluguard("run", *overrides, threads=1)
        _CACHE["chain"] = {"result": result, "exp_dir": root / "runs" / "t", "overrides": overrides,
                           "seconds": time.perf_counter() - start}
    return _CACHE["chain"]
