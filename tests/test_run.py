"""``halluguard run``'s plan: which stage calls, in which order, with which config (no stage runs here;
the chain itself runs in ``test_cli.py``)."""

import pytest

from halluguard.errors import ConfigError
from halluguard.stages.run import before_after_table, plan, step_config


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
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        compose([override], stage="run")


def test_the_before_after_table_lists_models_that_ran_and_names_the_others():
    results = {"key_metrics": ["abstention_recall", "exact_match"], "models": {
        "reference": {"status": "ok", "summary": {"metrics": {"abstention_recall": {"value": 0.1},
                                                              "exact_match": {"value": None}}}},
        "ppo": {"status": "ok", "summary": {"metrics": {"abstention_recall": {"value": 0.75},
                                                        "exact_match": {"value": 0.5}}}},
        "dpo": {"status": "unavailable", "reason": "no dpo policy", "summary": None}}}
    lines = before_after_table(results).splitlines()
    assert lines[0].split() == ["model", "abst.", "recall", "IK", "EM"]
    assert lines[1].split() == ["reference", "0.100", "n/a"] and lines[2].split() == ["ppo", "0.750", "0.500"]
    assert lines[3] == "not evaluated: dpo (unavailable)"
