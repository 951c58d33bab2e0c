"""The real console command, run the way a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path


from halluguard import cli

BIN = Path(sys.executable).parent / "halluguard"
HEAVY = {"torch", "transformers", "sentence_transformers", "faiss", "peft", "trl", "datasets", "hydra"}


def halluguard(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout, env=env)


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

    assert set(STAGES) == {"build", "sft", "reward", "ppo", "eval", "run"} == set(DESCRIPTIONS)
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


def test_build_then_run_end_to_end(tiny_overrides, tmp_path):
    """`halluguard run` on the tiny policy: build manifest, index, demo answers with retrieval."""
    res = halluguard("run", *tiny_overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "retrieved 1:" in res.stdout and "[OUT-OF-KNOWLEDGE" in res.stdout and "stage times:" in res.stdout
    runs = tmp_path / "runs" / "t"
    build = json.loads((runs / "build" / "manifest.json").read_text())
    assert build["metrics"]["passages"] == 4 and build["metrics"]["questions_by_label"] == {"ik": 2, "ook": 2}
    answers = [json.loads(line) for line in (runs / "run" / "demo_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(len(a["evidence"]) == 3 for a in answers)
    assert sorted(p.name for p in runs.iterdir()) == ["build", "run"]  # no temp folders left


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
