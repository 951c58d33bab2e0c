"""``halluguard ppo`` end to end on the tiny knowledge base (build first, then PPO with the rule reward),
and the bad inputs it must refuse before any training."""

import json
import shutil

import pytest
import torch
from conftest import built_tiny_overrides, compose_cfg

from halluguard.artifacts import Manifest
from halluguard.errors import HalluguardError

PPO = ["reward.scorer=rules", "ppo.start=base", "ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2",
       "ppo.max_new_tokens=4", "ppo.save_every=1", "ppo.probe_every=1", "ppo.probe_prompts=2",
       "ppo.max_prompt_length=1000", "ppo.learning_rate=1e-3", "ppo.lora.top_layers=1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine: threads only contend
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tiny_policy, tmp_path_factory):
    """Overrides of an experiment whose build has run (shared by the tests below: a build takes seconds)."""
    from halluguard.stages import build

    root = tmp_path_factory.mktemp("ppo-stage")
    overrides = built_tiny_overrides(root, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    return overrides, root / "runs" / "t"


def test_stage_end_to_end_on_the_tiny_kb(built, tiny_policy, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from halluguard.stages import ppo

    overrides, exp_dir = built
    manifest = ppo.run(compose_cfg([*overrides, *PPO], "ppo"))
    folder = manifest.path.parent
    assert folder == exp_dir / "ppo" and not (exp_dir / "ppo.work").exists()
    assert {"adapter", "value_head", "metrics", "curves", "probes", "summary"} <= set(manifest.outputs)
    m = Manifest.load(folder).metrics
    assert m["stop_reason"] == "completed" and m["stopped_early"] is False and m["chosen_step"] == 2
    assert m["updates_done"] == 2 and m["kl_budget"] == 1.0 and m["seconds_by_phase"]["generate"] > 0
    assert {"ppo_prompts", "build_manifest"} <= set(Manifest.load(folder).inputs)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[0]["kl"] == 0.0
    assert all(r["refusal_rate_ook"] is not None or r["refusal_rate_ik"] is not None for r in rows)
    probes = [json.loads(line) for line in (folder / "probes.jsonl").read_text().splitlines()]
    assert sorted({p["step"] for p in probes}) == [0, 1, 2] and {p["label"] for p in probes} == {"ook", "ik"}
    assert (folder / "curves.png").stat().st_size > 1000
    assert [p.name for p in sorted((folder / "checkpoints").iterdir())] == ["step-0", "step-1", "step-2"]
    summary = (folder / "summary.md").read_text()
    assert "Ran all 2 steps" in summary and "refusal rate, OOK prompts" in summary and "step 0:" in summary
    base = AutoModelForCausalLM.from_pretrained(str(tiny_policy))
    PeftModel.from_pretrained(base, str(folder / "adapter"))  # the standard PEFT format
    assert set(torch.load(folder / "value_head.pt")) == {"linear.weight", "linear.bias"}
    out = capsys.readouterr().out
    assert "PPO: 2 updates, completed; result = step 2" in out and "mean of 3 batches, first -> last: reward" in out
    assert m["batch_means"]["window"] == 3 and len(m["batch_means"]["reward"]) == 2
    assert "Means of the first and the last 3 batches up to the result" in summary
    # greedy refusals on the same probe prompts (one per label here), at every probe step and step 0 -> result
    assert all({"probe_refusal_rate_ook", "probe_refusal_rate_ik"} <= set(r) for r in rows)
    change = m["probe_refusal"]
    for label in ("ook", "ik"):
        at = {step: [p["refusal"] for p in probes if p["step"] == step and p["label"] == label] for step in (0, 2)}
        assert change[label] == [[sum(at[0]), len(at[0])], [sum(at[2]), len(at[2])]] and len(at[0]) == 1
        assert rows[2][f"probe_refusal_rate_{label}"] == sum(at[2]) / len(at[2])
    assert "greedy refusals on the fixed probe prompts, step 0 -> step 2: OOK" in out
    assert "Greedy refusals on the fixed probe prompts" in summary


def test_overlong_prompts_fail_before_any_training(built):
    from halluguard.stages import ppo

    overrides, exp_dir = built
    with pytest.raises(HalluguardError, match=r"PPO prompts are longer than ppo\.max_prompt_length=8 tokens"):
        ppo.run(compose_cfg([*overrides, *PPO, "ppo.max_prompt_length=8"], "ppo"))
    assert not (exp_dir / "ppo.work").exists()


def test_a_reward_model_with_another_tokenizer_fails_before_training(built, tiny_policy):
    from halluguard.stages import ppo
    from halluguard.tiny import train_tiny_tokenizer

    overrides, exp_dir = built
    reward_dir = exp_dir / "reward"
    weights = reward_dir / "reward_model" / "weights"
    train_tiny_tokenizer(["entirely different words", "zebra quantum violin harbour"], vocab_size=300) \
        .save_pretrained(str(weights))
    (weights.parent / "reward_model.json").write_text(json.dumps(
        {"weights": "weights", "finetune": "lora", "base": str(tiny_policy), "max_length": 64}))
    (weights.parent / "normalisation.json").write_text(json.dumps({"mean": 0.0, "std": 1.0}))
    manifest = Manifest(stage="reward", exp="t", config={})
    manifest.add_output("reward_model", weights.parent, reward_dir)
    manifest.write(reward_dir)
    try:
        with pytest.raises(HalluguardError, match="does not use the policy's tokenizer"):
            ppo.run(compose_cfg([*overrides, *PPO, "reward.scorer=rm"], "ppo"))
        assert not (exp_dir / "ppo.work").exists()
    finally:
        shutil.rmtree(reward_dir)


def test_starting_from_sft_without_its_stage_says_what_to_run(built):
    from halluguard.stages import ppo

    overrides, _ = built
    with pytest.raises(HalluguardError, match=r"halluguard sft exp=t"):
        ppo.run(compose_cfg([*overrides, *PPO, "ppo.start=sft"], "ppo"))


def _fake_sft_examples(exp_dir, case_ids):
    """An sft stage folder holding only the ``examples.jsonl`` that ppo.prompts=unseen_by_sft reads."""
    sft_dir = exp_dir / "sft"
    sft_dir.mkdir(exist_ok=True)
    examples = sft_dir / "examples.jsonl"
    examples.write_text("".join(json.dumps({"case_id": c, "label": "x"}) + "\n" for c in case_ids))
    manifest = Manifest(stage="sft", exp="t", config={})
    manifest.add_output("examples", examples, sft_dir)
    manifest.write(sft_dir)
    return sft_dir


def test_unseen_by_sft_trains_only_on_prompts_sft_did_not_see(built, capsys):
    from datasets import load_from_disk

    from halluguard.stages import ppo

    overrides, exp_dir = built
    rows = list(load_from_disk(str(exp_dir / "build" / "ppo_prompts")))
    ik = [r["case_id"] for r in rows if r["label"] == "ik"]
    ook = [r["case_id"] for r in rows if r["label"] == "ook"]
    assert len(ik) >= 1 and len(ook) >= 2
    seen = ik[1:] + ook[1:]  # SFT "trained on" every prompt but one per label
    sft_dir = _fake_sft_examples(exp_dir, seen)
    try:
        manifest = ppo.run(compose_cfg([*overrides, *PPO, "ppo.steps=1", "ppo.prompts=unseen_by_sft"], "ppo"))
        folder = manifest.path.parent
        m = Manifest.load(folder)
        assert m.metrics["prompts"] == {"mode": "unseen_by_sft", "kept": 2, "seen_by_sft": len(seen),
                                        "kept_by_label": {"ik": 1, "ook": 1}}
        assert "sft_examples" in m.inputs
        probes = [json.loads(line) for line in (folder / "probes.jsonl").read_text().splitlines()]
        assert {p["case_id"] for p in probes} == {ik[0], ook[0]}
        out = capsys.readouterr().out
        assert f"PPO prompts (ppo.prompts=unseen_by_sft): 2 the SFT reference did not train on (ik 1, ook 1); " \
               f"{len(seen)} it trained on left out" in out
        assert "the SFT reference did not train on" in (folder / "summary.md").read_text()
        # every prompt seen by SFT: nothing left to train on, a clear error before training
        _fake_sft_examples(exp_dir, [r["case_id"] for r in rows])
        with pytest.raises(HalluguardError, match=r"leaves no PPO prompt.*sft\.reserve_ik_questions"):
            ppo.run(compose_cfg([*overrides, *PPO, "ppo.prompts=unseen_by_sft"], "ppo"))
    finally:
        shutil.rmtree(sft_dir)
        shutil.rmtree(exp_dir / "ppo", ignore_errors=True)


def test_unseen_by_sft_without_an_sft_stage_says_what_to_run(built):
    from halluguard.stages import ppo

    overrides, exp_dir = built
    with pytest.raises(HalluguardError, match=r"ppo\.prompts=unseen_by_sft needs the SFT examples.*halluguard sft exp=t"):
        ppo.run(compose_cfg([*overrides, *PPO, "ppo.prompts=unseen_by_sft"], "ppo"))
    assert not (exp_dir / "ppo.work").exists()


def test_the_command_is_registered_and_refuses_a_missing_build(tmp_path, capsys):
    from halluguard import cli

    assert cli.main(["ppo", f"paths.runs={tmp_path}", "exp=nothing"]) == 2
    assert "halluguard build exp=nothing" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_the_baselines_are_dispatched_and_written_in_the_same_layout(built, monkeypatch, algo):
    """``ppo.algo=dpo|grpo`` calls the baseline trainer (faked here: TRL runs in test_baselines.py)."""
    import importlib

    from halluguard.stages import ppo

    overrides, exp_dir = built
    seen = {}

    def fake_train(*args):
        out_dir, seed = args[-2], args[-1]
        seen.update(args=args, seed=seed)
        (out_dir / "adapter").mkdir()
        (out_dir / "adapter" / "adapter_config.json").write_text("{}")
        return {"steps": 2, "train_seconds": 0.5, "log_history": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]}

    monkeypatch.setattr(importlib.import_module(f"halluguard.baselines.{algo}"), f"train_{algo}", fake_train)
    manifest = ppo.run(compose_cfg([*overrides, *PPO, f"ppo.algo={algo}"], "ppo"))
    folder = manifest.path.parent
    assert folder == exp_dir / algo and {"adapter", "metrics", "summary"} <= set(manifest.outputs)
    assert Manifest.load(folder).metrics["steps"] == 2 and seen["seed"] == 0
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
    assert f"# {algo.upper()} baseline" in (folder / "summary.md").read_text()
    if algo == "dpo":
        assert {"prompt", "chosen", "rejected"} <= set(seen["args"][3].column_names)
    else:
        prompts, scorer, meta = seen["args"][3:6]
        assert len(prompts) == len(meta) and prompts[0][-1]["role"] == "user" and hasattr(scorer, "score")


def test_batch_means_average_the_first_and_last_rows_up_to_the_result():
    from halluguard.stages.ppo import batch_means

    rows = [{"step": i, "reward": float(i), "kl": 0.1 * i, "refusal_rate_ook": 0.5, "refusal_rate_ik": None if i == 0
             else 0.25} for i in range(12)]
    means = batch_means(rows, chosen_step=9, window=3)
    assert means["window"] == 3
    assert means["reward"] == [1.0, 8.0]  # steps 0-2 and 7-9: rows after the result are not the result's
    assert means["kl"] == [0.1, 0.8] and means["refusal_rate_ook"] == [0.5, 0.5]
    assert means["refusal_rate_ik"] == [0.25, 0.25]  # a batch without IK prompts is left out, not counted as 0
    assert batch_means(rows[:1], 0)["window"] == 1


def test_raising_steps_continues_a_finished_run_to_the_longer_runs_result(built, tmp_path, capsys):
    """ppo.steps 2 then 4 on one experiment: the same metrics and adapter as 4 steps from the start."""
    from conftest import runs_for
    from safetensors.torch import load_file

    from halluguard.stages import ppo

    overrides, exp_dir = built
    shared = {"runs": exp_dir.parent, "overrides": overrides}
    runs_a, over_a = runs_for(shared, tmp_path / "a")
    runs_b, over_b = runs_for(shared, tmp_path / "b")
    ppo.run(compose_cfg([*over_a, *PPO, "ppo.steps=2"], "ppo"))
    assert (runs_a / "t" / "ppo" / "run.json").is_file()
    capsys.readouterr()
    continued = ppo.run(compose_cfg([*over_a, *PPO, "ppo.steps=4"], "ppo"))
    assert "continuing the finished PPO run of" in capsys.readouterr().out
    fresh = ppo.run(compose_cfg([*over_b, *PPO, "ppo.steps=4"], "ppo"))
    a, b = continued.path.parent, fresh.path.parent
    assert Manifest.load(a).metrics["continued_from_step"] == 2 and Manifest.load(b).metrics["continued_from_step"] is None

    def rows(folder):
        drop = lambda r: {k: v for k, v in r.items() if not k.startswith("time_")}  # noqa: E731 - timings differ
        return [drop(json.loads(line)) for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows(a)] == [0, 1, 2, 3, 4] and rows(a) == rows(b)
    weights_a, weights_b = (load_file(str(f / "adapter" / "adapter_model.safetensors")) for f in (a, b))
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert [p.name for p in sorted((a / "checkpoints").iterdir())] == [f"step-{i}" for i in range(5)]
    assert not (runs_a / "t" / "ppo.work").exists()
    # the same steps again, or ppo.resume=false: a fresh run, nothing continued
    again = ppo.run(compose_cfg([*over_a, *PPO, "ppo.steps=4"], "ppo"))
    assert Manifest.load(again.path.parent).metrics["continued_from_step"] is None


def test_a_finished_run_without_its_settings_is_not_continued_blindly(built, tmp_path):
    from conftest import runs_for

    from halluguard.stages import ppo

    overrides, exp_dir = built
    runs, over = runs_for({"runs": exp_dir.parent, "overrides": overrides}, tmp_path)
    ppo.run(compose_cfg([*over, *PPO, "ppo.steps=1"], "ppo"))
    (runs / "t" / "ppo" / "run.json").unlink()  # as a run finished before continuing existed left it
    with pytest.raises(HalluguardError, match=r"from step 1 to 2, but it has no run\.json .*ppo\.resume=false"):
        ppo.run(compose_cfg([*over, *PPO, "ppo.steps=2"], "ppo"))
    assert not (runs / "t" / "ppo.work").exists()
    m = ppo.run(compose_cfg([*over, *PPO, "ppo.steps=2", "ppo.resume=false"], "ppo"))
    assert Manifest.load(m.path.parent).metrics["last_step"] == 2
