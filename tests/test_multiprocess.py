"""Two training processes through ``accelerate launch`` (DDP over gloo on the CPU, conf/accelerate/multi_cpu.yml).

The real stage code in subprocesses, on the tiny KB and policy: the reward stage, then a few PPO steps
scored by the reward model process 0 saved, and the SFT stage. ``HALLUGUARD_WEIGHTS_DIGEST_DIR`` makes
every process write a sha256 of its trainable parameters at the end of training (and, for PPO, its
prompts and metric rows):

* both processes end with identical weights (gradients all-reduced), although they trained on
  different prompts (each its own shard);
* the statistics every process logs are the global ones, and they are what process 0 wrote;
* process 0's outputs are complete and load; nothing else was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, built_tiny_overrides

from halluguard.artifacts import Manifest
from halluguard.errors import HalluguardError
from halluguard.ppo.distributed import DIGEST_ENV

ACCELERATE_CONFIGS = CONF / "accelerate"

REWARD = ["reward.train.max_steps=2", "reward.train.batch_size=4", "reward.train.max_length=160",
          "reward.train.norm_pairs=8"]
SFT = ["sft.max_steps=2", "sft.batch_size=4", "sft.samples=2", "sft.sample_max_new_tokens=4"]
PPO = ["reward.scorer=hybrid", "ppo.start=base", "ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2",
       "ppo.max_new_tokens=4", "ppo.save_every=1", "ppo.probe_every=1", "ppo.probe_prompts=2",
       "ppo.max_prompt_length=1000", "ppo.learning_rate=1e-3", "ppo.lora.top_layers=1"]


def launch(stage: str, overrides: list[str], digests: Path, config: str = "multi_cpu.yml", timeout: int = 240):
    """``accelerate launch --config_file conf/accelerate/<config> -m halluguard.cli <stage> ...`` in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1", DIGEST_ENV: str(digests)}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo's traffic on the loopback interface
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config),
           "-m", "halluguard.cli", stage, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def succeeded(result) -> bool:
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-8000:], sep="\n")
    return result.returncode == 0


def digests_of(folder: Path, stage: str) -> list[dict]:
    return [json.loads((folder / f"{stage}-rank{r}.json").read_text()) for r in (0, 1)]


def without_timings(row: dict) -> dict:
    # each process times its own phases; process 0 alone answers the probe prompts (and logs their rates)
    return {k: v for k, v in row.items() if not k.startswith(("time_", "probe_"))}


@pytest.fixture(scope="module")
def built(tiny_policy, tmp_path_factory):
    """An experiment on the tiny KB whose build has run (in this process: the build is single-process)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate
    from halluguard.stages import build

    root = tmp_path_factory.mktemp("multiprocess")
    overrides = built_tiny_overrides(root, tiny_policy)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["stage=build", *overrides])
    finally:
        GlobalHydra.instance().clear()
    build.run(validate(cfg))
    return overrides, root / "runs" / "t", root


def test_reward_and_ppo_on_two_processes_end_with_identical_weights(built, tiny_policy):
    import torch
    from datasets import load_from_disk
    from omegaconf import OmegaConf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from halluguard.config import ModelConfig
    from halluguard.models import load_tokenizer
    from halluguard.ppo.prompts import PromptSet
    from halluguard.reward.scoring import RewardModelScorer

    overrides, exp_dir, root = built
    digests = root / "digests"

    # -- the reward stage: each process trains on its shard, DDP keeps the weights equal, process 0 writes
    assert succeeded(launch("reward", [*overrides, *REWARD], digests))
    r0, r1 = digests_of(digests, "reward")
    assert (r0["rank"], r1["rank"], r0["world_size"], r1["world_size"]) == (0, 1, 2, 2)
    assert r0["tensors"] > 0 and r0["sha256"] == r1["sha256"]
    reward = Manifest.load(exp_dir / "reward")
    assert reward.metrics["steps"] == 2 and "all" in reward.metrics["rm_accuracy_by_kind"]
    tokenizer = load_tokenizer(str(tiny_policy), OmegaConf.structured(ModelConfig))
    scorer = RewardModelScorer.load(reward.output_path("reward_model"), policy_tokenizer=tokenizer)
    prompt = [{"role": "user", "content": "Passages: none\nQuestion: what?"}]
    assert scorer.score([prompt], ["I cannot tell from the passages."], None).shape == (1,)

    # -- PPO, scored by that reward model: different prompts per process, one set of weights and statistics
    assert succeeded(launch("ppo", [*overrides, *PPO], digests))
    p0, p1 = digests_of(digests, "ppo")
    assert p0["tensors"] > 0 and p0["sha256"] == p1["sha256"] and p0["chosen_step"] == p1["chosen_step"] == 2
    assert [s["step"] for s in p0["steps"]] == [s["step"] for s in p1["steps"]] == [0, 1, 2]
    labels = load_from_disk(str(Manifest.load(exp_dir / "build").output_path("ppo_prompts")))["label"]
    whole = PromptSet([[]] * len(labels), [[1]] * len(labels), [{"label": label} for label in labels])
    for a, b in zip(p0["steps"], p1["steps"]):
        # Together the two shards are the batch one process of twice the size would have drawn.
        one_process = whole.step_indices(0, a["step"], 8, balance=True)
        assert sorted(a["prompts"] + b["prompts"]) == sorted(one_process)
        assert without_timings(a["row"]) == without_timings(b["row"])  # all-reduced: the global numbers
    assert any(a["prompts"] != b["prompts"] for a, b in zip(p0["steps"], p1["steps"]))

    folder = exp_dir / "ppo"
    manifest = Manifest.load(folder)
    assert manifest.metrics["updates_done"] == 2 and manifest.metrics["stop_reason"] == "completed"
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [without_timings(r) for r in logged] == [without_timings(s["row"]) for s in p0["steps"]]
    assert len([json.loads(line) for line in (folder / "probes.jsonl").read_text().splitlines()]) == 2 * 3
    base = AutoModelForCausalLM.from_pretrained(str(tiny_policy))
    PeftModel.from_pretrained(base, str(folder / "adapter"))
    assert set(torch.load(folder / "value_head.pt")) == {"linear.weight", "linear.bias"}
    # Process 0 alone wrote: no work folder, no temporary or second copy of any stage folder.
    assert sorted(p.name for p in exp_dir.iterdir()) == ["build", "ppo", "reward"]


def test_sft_on_two_processes_ends_with_identical_weights(built):
    from transformers import AutoModelForCausalLM

    overrides, exp_dir, root = built
    digests = root / "digests"
    assert succeeded(launch("sft", [*overrides, *SFT], digests))
    s0, s1 = digests_of(digests, "sft")
    assert s0["tensors"] > 0 and s0["sha256"] == s1["sha256"]
    manifest = Manifest.load(exp_dir / "sft")
    assert manifest.metrics["steps"] == 2 and {"model", "adapter", "samples"} <= set(manifest.outputs)
    AutoModelForCausalLM.from_pretrained(str(manifest.output_path("model")))
    assert not [p.name for p in exp_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_deepspeed_config_without_deepspeed_fails_naming_the_install(built, tmp_path, monkeypatch):
    import importlib.util

    from halluguard.ppo.distributed import check_launch

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    overrides, exp_dir, _ = built
    for config in ("zero2.yml", "zero3.yml"):
        result = launch("reward", [*overrides, *REWARD, "exp=ds"], tmp_path, config=config, timeout=120)
        assert result.returncode != 0 and "install deepspeed" in result.stdout + result.stderr
    assert not (exp_dir.parent / "ds").exists()
    # A process that reaches halluguard with DeepSpeed's variables set (not through accelerate launch).
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(HalluguardError, match=r"`pip install deepspeed`"):
        check_launch("reward")


def test_the_baselines_refuse_several_processes(built, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate
    from halluguard.stages import ppo

    overrides, exp_dir, _ = built
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["stage=ppo", *overrides, "ppo.algo=dpo"])
    finally:
        GlobalHydra.instance().clear()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HalluguardError, match=r"ppo\.algo=dpo runs in one process only"):
        ppo.run(validate(cfg))
    assert not (exp_dir / "dpo").exists()
