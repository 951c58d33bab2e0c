"""``halluguard run``'s plan: which stage calls, in which order, with which config (no stage runs here;
the chain itself runs in ``test_cli.py``)."""

import re

import pytest

from halluguard.errors import ConfigError
from halluguard.stages.run import plan, step_config


def names(cfg):
    return [(s.name, s.stage, s.baseline) for s in plan(cfg)]


def test_the_default_chain_is_the_whole_pipeline(compose):
    cfg = compose(stage="run")
    assert list(cfg.run.stages) == ["build", "sft", "reward", "ppo", "eval"] and list(cfg.run.baselines) == []
    assert [s.label for s in plan(cfg)] == ["build", "sft", "reward", "ppo", "eval"]


def test_stages_run_in_pipeline_order_and_baselines_before_eval(compose):
    cfg = compose(["run.stages=[eval,ppo,build,demo]", "run.baselines=[grpo,dpo,grpo]"], stage="run")
    assert names(cfg) == [("build", "build", False), ("demo", "demo", False), ("ppo", "ppo", False),
                          ("grpo", "ppo", True), ("dpo", "ppo", True), ("eval", "eval", False)]
    # Without ppo in the list, the baselines still sit at its place.
    cfg = compose(["run.stages=[eval]", "run.baselines=[dpo]"], stage="run")
    assert names(cfg) == [("dpo", "ppo", True), ("eval", "eval", False)]


def test_a_baseline_runs_the_ppo_stage_on_a_copy_with_its_algo(compose):
    cfg = compose(["run.baselines=[dpo]"], stage="run")
    steps = {s.name: s for s in plan(cfg)}
    assert step_config(cfg, steps["ppo"]) is cfg
    dpo = step_config(cfg, steps["dpo"])
    assert dpo.ppo.algo == "dpo" and cfg.ppo.algo == "ppo" and dpo.ppo.dpo == cfg.ppo.dpo
    assert steps["dpo"].label == "ppo (algo=dpo, baseline)"
    # ppo.algo=dpo with baselines=[dpo]: the stage runs once.
    cfg = compose(["ppo.algo=dpo", "run.baselines=[dpo,grpo]"], stage="run")
    assert [s.label for s in plan(cfg)] == ["build", "sft", "reward", "ppo (algo=dpo)", "ppo (algo=grpo, baseline)",
                                            "eval"]


@pytest.mark.parametrize("override, message", [
    ("run.stages=[build,trian]", "'run.stages' must be one of build, demo, sft, reward, ppo, eval, got 'trian'"),
    ("run.stages=[bild]", "got 'bild' (did you mean 'build'?)"),
    ("run.baselines=[ppo]", "'run.baselines' must be one of dpo, grpo, got 'ppo'"),
    ("run.stages=[]", "'run.stages' is empty"),
])
def test_bad_stage_names_are_config_errors(compose, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose([override], stage="run")


def test_the_before_after_table_lists_models_that_ran_and_names_the_others():
    """run prints the eval stage's console table: one row per model that ran, the reason for one that did not."""
    from halluguard.evaluation.report import KEY_METRICS, format_console_table

    def ran(values):
        return {"status": "ok", "summary": {"metrics": {k: {"value": v} for k, v in zip(KEY_METRICS, values)}}}

    results = {"models": {"reference": ran([0.1, None, 0.5, 0.2, 0.0, 0.9]),
                          "ppo": ran([0.75, 0.1, 0.8, 0.7, 0.5, 0.25]),
                          "dpo": {"status": "unavailable", "reason": "no dpo policy", "summary": None}}}
    lines = format_console_table(results).splitlines()
    assert lines[0].split()[:3] == ["model", "abst.", "recall"] and "IK EM" in lines[0]
    assert lines[1].split() == ["reference", "0.100", "n/a", "0.500", "0.200", "0.000", "0.900"]
    assert lines[2].split() == ["ppo", "0.750", "0.100", "0.800", "0.700", "0.500", "0.250"]
    assert lines[3].split() == ["dpo", "unavailable:", "no", "dpo", "policy"]


def test_the_squad2_experiment_composes_onto_the_defaults(compose):
    cfg = compose(["+experiment=squad2"], stage="run")
    assert cfg.exp == "squad2" and cfg.kb.name == "squad2" and cfg.kb.format == "squad2"
    assert cfg.kb.unindexed_fraction == 0.2 and cfg.kb.unindexed_by == "group"  # whole articles out of the index
    # a prompt PPO accepts, plus its answer, fits what SFT and the reward model train on
    assert cfg.ppo.max_prompt_length + cfg.ppo.max_new_tokens <= cfg.sft.max_length == cfg.reward.train.max_length
    assert cfg.run.stages == ["build", "sft", "reward", "ppo", "eval"]  # the same chain as make demo
    assert compose(["+experiment=squad2", "exp=mine"], stage="run").exp == "mine"


def test_the_boundary_experiment_trains_sft_for_three_epochs_on_every_projection(compose):
    cfg = compose(["+experiment=boundary"], stage="sft")
    assert cfg.exp == "boundary" and cfg.sft.max_steps == -1 and cfg.sft.epochs == 3
    assert cfg.sft.finetune == "lora" and cfg.sft.lora.r == 64 and cfg.sft.lora.alpha == 128
    assert {"gate_proj", "up_proj", "down_proj", "q_proj"} <= set(cfg.sft.lora.target_modules)
    assert cfg.kb.name == compose([], stage="sft").kb.name  # only the SFT changes: same knowledge base and builders as the demo


def test_the_gpu_boundary_experiment_is_the_fourth_gpu_runs_chain(compose):
    cfg = compose(["+experiment=gpu_boundary"], stage="ppo")
    assert cfg.exp == "gpu_boundary" and cfg.sft.finetune == "full" and cfg.sft.learning_rate == 5e-5
    assert cfg.sft.max_steps == -1 and cfg.sft.epochs == 3
    assert cfg.reward.scorer == "rules" and cfg.ppo.balance_reward and cfg.ppo.balance_prompts == 128
    assert cfg.ppo.batch_size == 64 and cfg.ppo.mini_batch_size == 16 and cfg.ppo.steps == 20
    assert cfg.ppo.batch_size % cfg.ppo.mini_batch_size == 0
    assert cfg.kb.name == compose([], stage="ppo").kb.name and cfg.ppo.kl.budget == compose([], stage="ppo").ppo.kl.budget
    # quality_gpu.sh passes exp= and ppo.steps= itself: command-line values win over the experiment's
    mixed = compose(["+experiment=gpu_boundary", "exp=gpu2", "ppo.steps=40"], stage="ppo")
    assert mixed.exp == "gpu2" and mixed.ppo.steps == 40 and mixed.ppo.batch_size == 64
