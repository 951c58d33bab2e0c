"""The console command: in its own process, the way a user runs it, where the process is the point (start-up,
Hydra's own handling, exit codes, the shared chain); in this process where a test is about what a stage prints
and leaves behind (a fresh process costs ~13 s of imports on 2 cores)."""

import json
import subprocess
import sys

import pytest

from conftest import cli_in_process
from tiny_chain import halluguard, tiny_chain  # noqa: F401 (tiny_chain: the shared `halluguard run` fixture)

from halluguard import cli

HEAVY = {"torch", "transformers", "sentence_transformers", "faiss", "peft", "trl", "datasets", "hydra"}
CHAIN = ["build", "sft", "reward", "ppo", "dpo", "eval"]


def test_help_imports_nothing_heavy():
    code = ("import sys, halluguard.cli as c; c.main(['--help']); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: halluguard <stage>" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_cfg_job_prints_the_composed_config():
    res = halluguard("build", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert "name_or_path: embedded:SmolLM2-135M-Instruct" in res.stdout and "stage: build" in res.stdout


def test_hydra_help_lists_the_config_groups():
    res = halluguard("build", "--help")
    assert res.returncode == 0 and "retriever: minilm_flat, minilm_ivf" in res.stdout


def test_every_stage_is_registered_with_a_run_function():
    import importlib

    from halluguard.stages import DESCRIPTIONS, STAGES

    assert set(STAGES) == {"build", "sft", "reward", "ppo", "eval", "run", "export", "ask"} == set(DESCRIPTIONS)
    for name, module in STAGES.items():
        assert module is not None, name
        assert callable(importlib.import_module(module).run), name


def test_unknown_stage_suggests_the_closest(capsys):
    assert cli.main(["biuld"]) == 2
    assert "did you mean 'build'" in capsys.readouterr().err


def test_unknown_override_fails_before_anything_loads(capsys):
    assert cli.main(["build", "retriever.top_kk=3"]) == 2
    assert "unknown config key 'retriever.top_kk'" in capsys.readouterr().err


def test_wrong_type_exits_nonzero_naming_the_key():
    res = halluguard("build", "retriever.batch_size=lots")
    assert res.returncode != 0 and "retriever.batch_size" in res.stderr + res.stdout


def test_build_then_run_end_to_end(tiny_chain):  # noqa: F811 (the fixture)
    """`halluguard run` on the tiny policy: every stage in order, each with its manifest, then the stage times,
    the before/after table, the report's path and the run manifest."""
    res, exp_dir = tiny_chain["result"], tiny_chain["exp_dir"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    banners = ["== stage 1/6: build ==", "== stage 2/6: sft ==", "== stage 3/6: reward ==", "== stage 4/6: ppo ==",
               "== stage 5/6: ppo (algo=dpo, baseline) ==", "== stage 6/6: eval =="]
    positions = [out.index(b) for b in banners]
    assert positions == sorted(positions)
    assert all(f"== stage {i}/6: " in out and " done in " in out for i in range(1, 7))
    assert sorted(p.name for p in exp_dir.iterdir()) == sorted([*CHAIN, "run"])  # no temp or work folders left
    for stage in (*CHAIN, "run"):
        assert (exp_dir / stage / "manifest.json").is_file(), stage
    build = json.loads((exp_dir / "build" / "manifest.json").read_text())
    assert build["metrics"]["passages"] == 4 and build["metrics"]["questions_by_label"] == {"ik": 2, "ook": 2}

    tail = out[out.index("== halluguard run finished: 6 stages in"):]
    assert "stage times:" in tail and all(f"\n{s}" in tail for s in ("build", "sft", "reward", "ppo", "eval", "total"))
    assert "before/after on" in tail and "abst. recall" in tail
    for model in ("reference", "sft", "ppo", "dpo", "gated_ppo", "always_refuse"):
        assert f"\n{model} " in tail, model
    report = exp_dir / "eval" / "report.html"
    assert f"report: {report}" in tail and report.is_file()

    run = json.loads((exp_dir / "run" / "manifest.json").read_text())
    m = run["metrics"]
    assert m["stages"] == CHAIN and list(m["stage_seconds"]) == CHAIN and m["total_seconds"] > 0
    assert m["stage_manifests"] == {s: str(exp_dir / s / "manifest.json") for s in CHAIN}
    assert set(run["inputs"]) == {f"{s}_manifest" for s in CHAIN} and m["report"] == str(report)
    results = json.loads((exp_dir / "eval" / "results.json").read_text())
    assert m["eval_key_metrics"]["ppo"] == {k: results["models"]["ppo"]["summary"]["metrics"][k]["value"]
                                            for k in results["key_metrics"]}
    assert {"reference", "sft", "ppo", "dpo"} <= set(m["eval_key_metrics"])
    assert not (exp_dir / "run" / "demo_answers.jsonl").exists()  # demo is not in the default chain
    print(f"\ntiny chain: {tiny_chain['seconds']:.1f} s wall, stages {m['stage_seconds']}")


@pytest.mark.usefixtures("one_torch_thread")
def test_run_demo_step_answers_with_retrieval(tiny_overrides, tmp_path, capsys):
    """`run.stages=[build,demo]`: the untrained policy answers a few questions with the passages it saw."""
    # the listed order does not matter
    code, out, err = cli_in_process(capsys, "run", *tiny_overrides, "run.stages=[demo,build]")
    assert code == 0, err[-3000:]
    assert out.index("== stage 1/2: build ==") < out.index("== stage 2/2: demo ==")
    assert "retrieved 1:" in out and "[OUT-OF-KNOWLEDGE" in out and "stage times:" in out
    runs = tmp_path / "runs" / "t"
    answers = [json.loads(line) for line in (runs / "run" / "demo_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(len(a["evidence"]) == 3 for a in answers)
    m = json.loads((runs / "run" / "manifest.json").read_text())
    assert m["metrics"]["stages"] == ["build", "demo"] and m["metrics"]["demo_questions"] == 4
    assert "demo_answers" in m["outputs"] and m["metrics"]["eval_key_metrics"] is None
    assert sorted(p.name for p in runs.iterdir()) == ["build", "run"]


def test_a_bad_run_stage_fails_before_any_work(tiny_overrides, tmp_path):
    res = halluguard("run", *tiny_overrides, "run.stages=[build,trian]")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "'run.stages' must be one of build, demo, sft, reward, ppo, eval, got 'trian'" in res.stderr
    res = halluguard("run", *tiny_overrides, "run.baselines=[dpo,ppo]")
    assert res.returncode == 2 and "'run.baselines' must be one of dpo, grpo, got 'ppo'" in res.stderr
    runs = tmp_path / "runs" / "t"  # Hydra makes the experiment's folder; nothing may be in it
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.usefixtures("one_torch_thread")
def test_a_failing_stage_stops_the_chain_and_names_it(tiny_overrides, tmp_path, capsys):
    """The reward stage fails (a reward model to reuse that is not one); build keeps its output, eval never starts."""
    code, out, err = cli_in_process(capsys, "run", *tiny_overrides, "run.stages=[build,reward,eval]",
                           f"reward.reward_model={tmp_path / 'no-reward-model'}")
    assert code == 2 and "Traceback" not in err
    assert "halluguard: error: stage 2/3 'reward' failed: reward.reward_model=" in err
    assert f"the stages before it kept their outputs: {tmp_path / 'runs' / 't' / 'build'}" in err
    assert "`halluguard run run.stages=[reward,eval]`" in err
    assert "== stage 3/3" not in out
    runs = tmp_path / "runs" / "t"
    assert sorted(p.name for p in runs.iterdir()) == ["build"] and (runs / "build" / "manifest.json").is_file()


def test_bad_knowledge_base_leaves_no_partial_output(tiny_overrides, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": oops}\n')
    res = halluguard("build", *tiny_overrides, f"kb.passages={bad}")
    assert res.returncode == 2
    assert f"{bad}:2: malformed JSON" in res.stderr and "Traceback" not in res.stderr
    runs = tmp_path / "runs" / "t"
    assert not runs.exists() or not any(runs.iterdir())


def test_missing_model_path_is_one_clear_error(tiny_overrides, tmp_path):
    res = halluguard("run", *tiny_overrides, f"model.name_or_path={tmp_path / 'no-such-model'}")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_multirun_runs_each_job(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("exp=")]
    res = halluguard("build", "-m", "exp=a,b", *overrides)
    assert res.returncode == 0, res.stderr[-2000:]
    for exp in ("a", "b"):
        assert (tmp_path / "runs" / exp / "build" / "manifest.json").is_file()


def test_hydra_flags_are_moved_before_the_overrides():
    flags, plain = cli.split_hydra_flags(["a=1", "-m", "b=2", "--cfg", "job", "--info", "plugins", "--resolve", "c=3"])
    assert flags == ["-m", "--cfg", "job", "--info", "plugins", "--resolve"] and plain == ["a=1", "b=2", "c=3"]
