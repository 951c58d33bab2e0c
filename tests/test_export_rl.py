"""``halluguard export-rl``: the build's prompts, pairs and reward in the files veRL, OpenRLHF and TRL read.

The engines are not installed here (TRL is: its own parsers read the TRL commands, and one GRPO step runs on the
export), so these tests stop at the file formats: columns, types and row counts, the reward functions against
halluguard's scoring interface on the same inputs, a missing build, and a failed export.

Row counts: the prompt files hold the build's ``ppo_prompts`` (train) and ``heldout`` (test) cases, in-knowledge
and out-of-knowledge alike; the pair files hold its ``pairs`` (train, heldout -> test).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import built_tiny_overrides, compose_cfg, runs_for

from halluguard import cli

# Responses scored in every agreement check: refusals, fabrications, grounded answers, and engine leftovers.
REFUSAL = "I'm sorry, the passages I have do not contain the answer to that question."
FABRICATION = "It costs 30 euros, as stated in the handbook."
GROUNDED = {"q1": "Refunds are paid within 14 days to the original card.",
            "q2": "The Orbit plan costs 25 euros a month."}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_policy):
    """The tiny KB built once (half of it held out); each test exports from a private copy (``runs_for``)."""
    from halluguard.stages import build

    root = tmp_path_factory.mktemp("export-rl-build")
    overrides = built_tiny_overrides(root, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    return {"runs": root / "runs", "overrides": overrides}


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    """All three formats exported once from a copy of the build (tests that change files make their own)."""
    from halluguard.stages import export_rl

    runs, overrides = runs_for(built, tmp_path_factory.mktemp("export-rl-all"))
    cfg = compose_cfg([*overrides, "export_rl.format=all"], "export-rl")
    export_rl.run(cfg)
    return {"cfg": cfg, "dir": runs / "t" / "export_rl", "build": build_rows(runs / "t" / "build")}


def build_rows(build_dir: Path) -> dict:
    """The build's own rows, read independently of the exporter: prompts, scorer meta, pairs per export split."""
    from datasets import load_from_disk

    from halluguard.artifacts import Manifest
    from halluguard.reward.evaluate import load_build_context, pair_meta

    manifest = Manifest.load(build_dir)
    passages, answers = load_build_context(build_dir, manifest)
    prompts = {"train": list(load_from_disk(str(build_dir / "ppo_prompts"))),
               "test": list(load_from_disk(str(build_dir / "heldout")))}
    pairs = load_from_disk(str(build_dir / "pairs"))
    return {"prompts": prompts, "meta": {s: pair_meta(rows, passages, answers) for s, rows in prompts.items()},
            "pairs": {"train": list(pairs["train"]), "test": list(pairs["heldout"])}}


@pytest.fixture(scope="module")
def reference_scorer(exported):
    """halluguard's scoring interface as ``halluguard ppo`` builds it with ``reward.scorer=rules``."""
    from omegaconf import OmegaConf

    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder
    from halluguard.reward.scoring import make_scorer

    cfg = exported["cfg"]
    reward_cfg = OmegaConf.merge(cfg.reward, {"scorer": "rules"})
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
    return make_scorer(reward_cfg, None, detector=detector)


def responses_for(row: dict) -> list[str]:
    return [REFUSAL, FABRICATION, GROUNDED.get(row["question_id"], FABRICATION)]


def cases(exported) -> list[tuple[dict, dict, str]]:
    """(case row, scorer meta, response) for every exported prompt and test response."""
    b = exported["build"]
    return [(row, meta, response) for split in ("train", "test")
            for row, meta in zip(b["prompts"][split], b["meta"][split]) for response in responses_for(row)]


def reference_scores(scorer, triples) -> list[float]:
    return scorer.score([list(r["prompt"]) for r, _, _ in triples], [x for _, _, x in triples],
                        [m for _, m, _ in triples]).tolist()


def labelled(rows: list[dict]) -> dict:
    return {"rows": len(rows), "ik": sum(r["label"] == "ik" for r in rows), "ook": sum(r["label"] == "ook" for r in rows)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_record(text: str, row: dict, meta: dict, scorer_json: Path) -> None:
    record = json.loads(text)
    assert record["label"] == row["label"] == meta["label"]
    assert record["evidence"] == meta["evidence"] and record["evidence"]  # the passage texts shown in the prompt
    assert record["answers"] == list(meta["answers"])
    assert record["prompt"] == [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
    assert record["scorer_config"] == str(scorer_json) and scorer_json.is_file()


# ---------------------------------------------------------------- veRL

def test_verl_parquet_has_verl_columns_types_and_the_builds_rows(exported):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, b = exported["dir"] / "verl", exported["build"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "manifest.json", "scorer.json", "test.parquet",
                                                         "train.parquet"]
    for split in ("train", "test"):
        table = pq.read_table(folder / f"{split}.parquet")
        assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        schema = table.schema
        assert schema.field("data_source").type == pa.string() and schema.field("ability").type == pa.string()
        assert schema.field("prompt").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
        assert {f.name: f.type for f in schema.field("reward_model").type} == {"style": pa.string(),
                                                                              "ground_truth": pa.string()}
        extra = {f.name: f.type for f in schema.field("extra_info").type}
        assert extra["index"] == pa.int64() and extra["answers"] == pa.list_(pa.string())
        assert {"split", "label", "evidence_ids", "case_id", "question_id", "question", "kind"} <= set(extra)

        rows, build = pd.read_parquet(folder / f"{split}.parquet").to_dict("records"), b["prompts"][split]
        assert labelled([r["extra_info"] for r in rows]) == labelled(build)  # train: ppo_prompts; test: heldout
        assert labelled(build)["ik"] and labelled(build)["ook"]
        for i, (row, case, meta) in enumerate(zip(rows, build, b["meta"][split])):
            assert row["data_source"] == "halluguard/t" and row["ability"] == "rag_abstention"
            assert [dict(m) for m in row["prompt"]] == [dict(m) for m in case["prompt"]]
            assert row["reward_model"]["style"] == "rule"
            check_record(row["reward_model"]["ground_truth"], case, meta, folder / "scorer.json")
            info = row["extra_info"]
            assert (info["index"], info["split"], info["case_id"], info["label"]) == (i, split, case["case_id"],
                                                                                       case["label"])
            assert list(info["answers"]) == list(case["answers"])
            assert list(info["evidence_ids"]) == list(case["evidence_ids"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "export-rl" and {"train.parquet", "test.parquet", "scorer.json"} <= set(manifest["outputs"])
    assert manifest["metrics"]["rows"]["prompts/train"] == labelled(b["prompts"]["train"])


def test_verl_compute_score_prefers_refusal_on_ook_and_grounded_answers_on_ik(exported, reference_scorer):
    import pandas as pd

    from halluguard.integrations.verl_reward import compute_score, compute_score_batch

    rows = pd.read_parquet(exported["dir"] / "verl" / "train.parquet").to_dict("records")
    ook = next(r for r in rows if r["extra_info"]["label"] == "ook")
    ik = next(r for r in rows if r["extra_info"]["label"] == "ik")

    def score(row, response):
        value = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])
        assert isinstance(value, float)
        return value

    assert score(ook, REFUSAL) > score(ook, FABRICATION)
    grounded = GROUNDED[ik["extra_info"]["question_id"]]
    assert score(ik, grounded) > score(ik, REFUSAL)
    # veRL's naive reward manager decodes with special tokens: the end-of-turn marker must not change the score
    # (an answer without the gold span, whose support share each extra token would dilute)
    assert score(ik, FABRICATION + "<|im_end|><|endoftext|>") == score(ik, FABRICATION)

    triples = cases(exported)
    records = {r["extra_info"]["case_id"]: r for split in ("train", "test")
               for r in pd.read_parquet(exported["dir"] / "verl" / f"{split}.parquet").to_dict("records")}
    got = compute_score_batch(data_sources=["halluguard/t"] * len(triples), solution_strs=[x for _, _, x in triples],
                              ground_truths=[records[r["case_id"]]["reward_model"]["ground_truth"]
                                             for r, _, _ in triples],
                              extra_infos=[records[r["case_id"]]["extra_info"] for r, _, _ in triples])
    assert got == pytest.approx(reference_scores(reference_scorer, triples), abs=1e-6)


# ---------------------------------------------------------------- OpenRLHF

def test_openrlhf_jsonl_has_prompt_label_and_preference_keys(exported):
    folder, b = exported["dir"] / "openrlhf", exported["build"]
    for split in ("train", "test"):
        prompts = read_jsonl(folder / f"prompts_{split}.jsonl")
        assert labelled(prompts) == labelled(b["prompts"][split])
        for row, case, meta in zip(prompts, b["prompts"][split], b["meta"][split]):
            assert set(row) == {"prompt", "ground_truth", "label", "case_id", "question_id", "kind", "split",
                                "datasource"}
            assert [m["role"] for m in row["prompt"]][-1] == "user" and row["datasource"] == "halluguard/t"
            check_record(row["ground_truth"], case, meta, folder / "scorer.json")
        pairs = read_jsonl(folder / f"pairs_{split}.jsonl")
        assert labelled(pairs) == labelled(b["pairs"][split])
        for row, pair in zip(pairs, b["pairs"][split]):
            assert {"prompt", "chosen", "rejected", "kind", "label"} <= set(row)
            assert row["chosen"] == [{"role": "assistant", "content": pair["chosen"][0]["content"]}]
            assert row["rejected"] == [{"role": "assistant", "content": pair["rejected"][0]["content"]}]
            assert row["prompt"] == [dict(m) for m in pair["prompt"]]


def test_openrlhf_reward_func_agrees_with_the_scoring_interface(exported, reference_scorer, tiny_policy):
    from transformers import AutoTokenizer

    from halluguard.integrations.openrlhf_reward import reward_func

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_policy))
    folder = exported["dir"] / "openrlhf"
    labels = {r["case_id"]: r["ground_truth"] for s in ("train", "test") for r in read_jsonl(folder / f"prompts_{s}.jsonl")}
    triples = cases(exported)
    # As OpenRLHF builds them with --apply_chat_template: the rendered prompt, then the decoded response with its
    # end-of-turn token and padding.
    prompts = [tokenizer.apply_chat_template(list(r["prompt"]), tokenize=False, add_generation_prompt=True)
               for r, _, _ in triples]
    queries = [f"<|endoftext|>{p}{x}<|im_end|><|endoftext|>" for p, (_, _, x) in zip(prompts, triples)]
    out = reward_func(queries, prompts, [labels[r["case_id"]] for r, _, _ in triples])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].tolist() == pytest.approx(reference_scores(reference_scorer, triples), abs=1e-6)
    assert out["rewards"].shape == (len(triples),)


# ---------------------------------------------------------------- TRL

def test_trl_folders_load_as_datasets_with_train_and_test(exported, tmp_path):
    from datasets import load_dataset

    folder, b = exported["dir"] / "trl", exported["build"]
    prompts = load_dataset(str(folder / "prompts"), cache_dir=str(tmp_path / "hf"))
    pairs = load_dataset(str(folder / "pairs"), cache_dir=str(tmp_path / "hf"))
    for split in ("train", "test"):
        assert labelled(list(prompts[split])) == labelled(b["prompts"][split])
        assert labelled(list(pairs[split])) == labelled(b["pairs"][split])
        for row, case, meta in zip(prompts[split], b["prompts"][split], b["meta"][split]):
            assert row["prompt"] == [dict(m) for m in case["prompt"]]
            check_record(row["ground_truth"], case, meta, folder / "scorer.json")
        assert {"prompt", "chosen", "rejected"} <= set(pairs[split].column_names)


def test_trl_reward_agrees_with_the_scoring_interface(exported, reference_scorer):
    from halluguard.integrations.trl_reward import halluguard_reward

    folder = exported["dir"] / "trl" / "prompts"
    truth = {r["case_id"]: r["ground_truth"] for s in ("train", "test") for r in read_jsonl(folder / f"{s}.jsonl")}
    triples = cases(exported)
    expected = reference_scores(reference_scorer, triples)
    ground_truth = [truth[r["case_id"]] for r, _, _ in triples]
    conversational = [[{"role": "assistant", "content": x}] for _, _, x in triples]
    assert halluguard_reward(conversational, ground_truth=ground_truth) == pytest.approx(expected, abs=1e-6)
    plain = [x for _, _, x in triples]
    assert halluguard_reward(plain, prompts=None, ground_truth=ground_truth) == pytest.approx(expected, abs=1e-6)


def test_trl_commands_parse_with_trls_own_parsers(exported):
    """The README's ``trl grpo`` / ``trl rloo`` / ``trl dpo`` arguments, read by TRL 1.16's parsers."""
    import importlib

    from halluguard.stages.export_rl import launch_settings, load_build, trl_commands

    cfg, folder = exported["cfg"], exported["dir"] / "trl"
    commands = trl_commands(launch_settings(cfg, load_build(cfg)), folder, cfg.exp)
    readme = (folder / "README.md").read_text()
    for name, args in commands.items():
        assert f"trl {name} \\" in readme
        parser = importlib.import_module(f"trl.scripts.{name}").make_parser()
        # no GPU here: TrainingArguments refuses its bf16 default on a CPU unless told to use the CPU
        *parsed, remaining = parser.parse_args_and_config([*args, "--use_cpu", "true"], return_remaining_strings=True)
        assert remaining == [], (name, remaining)
        config = parsed[1]
        assert config.beta > 0  # never without a KL term (TRL's GRPO default is 0)
        if name != "dpo":
            assert config.use_vllm and parsed[0].reward_funcs == ["halluguard.integrations.trl_reward.halluguard_reward"]
            assert parsed[0].dataset_name == str(folder / "prompts")


@pytest.mark.usefixtures("one_torch_thread")
def test_one_trl_grpo_step_runs_on_the_export(exported, tiny_policy, tmp_path):
    """TRL is installed here: one GRPO step (no vLLM, CPU) on the exported prompts with halluguard_reward, which must
    receive the ground_truth column from TRL itself."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from halluguard.integrations.trl_reward import halluguard_reward

    seen = []

    def reward(completions, **kwargs):
        seen.append(kwargs["ground_truth"])
        return halluguard_reward(completions, **kwargs)

    reward.__name__ = "halluguard_reward"
    data = load_dataset(str(exported["dir"] / "trl" / "prompts"), cache_dir=str(tmp_path / "hf"))
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, beta=0.05, num_generations=2,
                      per_device_train_batch_size=2, max_completion_length=4, max_steps=1, report_to=[],
                      save_strategy="no", disable_tqdm=True, logging_steps=1)
    trainer = GRPOTrainer(model=str(tiny_policy), reward_funcs=[reward], args=args, train_dataset=data["train"],
                          processing_class=AutoTokenizer.from_pretrained(str(tiny_policy)))
    trainer.train()
    assert seen and all(json.loads(g)["label"] in ("ik", "ook") for batch in seen for g in batch)
    assert any("rewards/halluguard_reward/mean" in entry for entry in trainer.state.log_history)


# ---------------------------------------------------------------- the hybrid scorer

@pytest.mark.usefixtures("one_torch_thread")
def test_hybrid_export_scores_with_the_trained_reward_model_as_ppo_would(built, tmp_path, monkeypatch):
    """``export_rl.scorer=hybrid`` after a (two-step) reward run: compute_score equals the scoring interface's
    hybrid score; ``$HALLUGUARD_SCORER=runs/<exp>/reward`` turns a rules export into the same hybrid reward."""
    from halluguard.integrations.reward_bridge import SCORER_ENV
    from halluguard.integrations.verl_reward import compute_score_batch
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder
    from halluguard.reward.scoring import make_scorer
    from halluguard.stages import export_rl, reward

    runs, overrides = runs_for(built, tmp_path)
    small = ["reward.train.max_steps=2", "reward.train.batch_size=4", "reward.train.max_length=160",
             "reward.train.norm_pairs=8"]
    reward.run(compose_cfg([*overrides, *small], "reward"))
    cfg = compose_cfg([*overrides, *small, "export_rl.scorer=hybrid"], "export-rl")
    export_rl.run(cfg)
    settings = json.loads((runs / "t" / "export_rl" / "verl" / "scorer.json").read_text())
    assert settings["scorer"] == "hybrid" and settings["reward_dir"] == str((runs / "t" / "reward").resolve())

    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
    hybrid = make_scorer(cfg.reward, runs / "t" / "reward", detector=detector)
    assert hybrid.name == "hybrid"
    triples = cases({"build": build_rows(runs / "t" / "build")})
    expected = reference_scores(hybrid, triples)

    def exported_scores():
        import pandas as pd

        rows = {r["extra_info"]["case_id"]: r for split in ("train", "test")
                for r in pd.read_parquet(runs / "t" / "export_rl" / "verl" / f"{split}.parquet").to_dict("records")}
        return compute_score_batch(["halluguard/t"] * len(triples), [x for _, _, x in triples],
                                   [rows[r["case_id"]]["reward_model"]["ground_truth"] for r, _, _ in triples])

    assert exported_scores() == pytest.approx(expected, abs=1e-5)
    export_rl.run(compose_cfg([*overrides, "export_rl.scorer=rules"], "export-rl"))
    monkeypatch.setenv(SCORER_ENV, str(runs / "t" / "reward"))
    assert exported_scores() == pytest.approx(expected, abs=1e-5)


def test_auto_model_prefers_the_exported_sft_reference(built, tmp_path):
    from halluguard.errors import HalluguardError
    from halluguard.stages import export_rl

    runs, overrides = runs_for(built, tmp_path)
    exported = runs / "t" / "export" / "sft"
    exported.mkdir(parents=True)
    for name in ("manifest.json", "config.json"):  # what `halluguard export` leaves (weights do not matter here)
        (exported / name).write_text("{}")
    cfg = compose_cfg(overrides, "export-rl")
    launch = export_rl.launch_settings(cfg, export_rl.load_build(cfg))
    assert launch.model == str(exported) and "the SFT reference, merged by `halluguard export`" in launch.model_why
    # no tokenizer there to measure the prompts with: the experiment's own limit, said so
    assert launch.max_prompt_length == cfg.ppo.max_prompt_length and "not measured" in launch.prompt_length_note
    named = compose_cfg([*overrides, "export_rl.model=org/some-model"], "export-rl")
    assert export_rl.pick_model(named)[0] == "org/some-model"
    with pytest.raises(HalluguardError, match="export_rl.model=/no/such/model: no such folder"):
        export_rl.pick_model(compose_cfg([*overrides, "export_rl.model=/no/such/model"], "export-rl"))


# ---------------------------------------------------------------- READMEs, settings, failures

def test_readmes_hold_the_launch_commands_with_the_model_filled_in(exported, tiny_policy):
    from halluguard.stages.export_rl import reward_file

    for fmt, command in (("verl", "python3 -m verl.trainer.main_ppo"),
                         ("openrlhf", "python3 -m openrlhf.cli.train_ppo_ray"), ("trl", "trl grpo")):
        folder = exported["dir"] / fmt
        text = (folder / "README.md").read_text()
        assert command in text and "is not installed or run by halluguard" in text
        assert f"export MODEL={tiny_policy}" in text and f"export DATA={folder}" in text
        assert "halluguard sft exp=t" in text  # no SFT reference in this experiment: the README says so
    verl = (exported["dir"] / "verl" / "README.md").read_text()
    assert f"export REWARD={reward_file('verl_reward')}" in verl and "custom_reward_function.name=compute_score" in verl
    assert "algorithm.kl_ctrl.kl_coef=0.05" in verl and "actor_rollout_ref.actor.kl_loss_coef=0.05" in verl
    openrlhf = (exported["dir"] / "openrlhf" / "README.md").read_text()
    assert f"export REWARD={reward_file('openrlhf_reward')}" in openrlhf and "--label_key ground_truth" in openrlhf


def test_scorer_settings_env_overrides_the_rows_and_a_missing_path_is_an_error(exported, tmp_path, monkeypatch):
    import pandas as pd

    from halluguard.errors import HalluguardError
    from halluguard.integrations.reward_bridge import SCORER_ENV
    from halluguard.integrations.verl_reward import compute_score

    row = next(r for r in pd.read_parquet(exported["dir"] / "verl" / "train.parquet").to_dict("records")
               if r["extra_info"]["label"] == "ook")
    args = (row["data_source"], REFUSAL, row["reward_model"]["ground_truth"], row["extra_info"])
    assert compute_score(*args) == pytest.approx(1.0)  # reward.rules.refuse_ook
    settings = json.loads((exported["dir"] / "verl" / "scorer.json").read_text())
    settings["rules"]["refuse_ook"] = 3.0
    custom = tmp_path / "scorer.json"
    custom.write_text(json.dumps(settings))
    monkeypatch.setenv(SCORER_ENV, str(custom))
    assert compute_score(*args) == pytest.approx(3.0)
    monkeypatch.setenv(SCORER_ENV, str(tmp_path / "elsewhere" / "scorer.json"))
    with pytest.raises(HalluguardError, match="do not exist on this machine"):
        compute_score(*args)
    monkeypatch.delenv(SCORER_ENV)
    with pytest.raises(HalluguardError, match="is not a halluguard scoring record"):
        compute_score(row["data_source"], REFUSAL, "42", None)


def test_export_without_a_build_names_the_command_to_run(tmp_path, tiny_policy, capsys):
    overrides = built_tiny_overrides(tmp_path, tiny_policy)
    assert cli.main(["export-rl", *overrides]) == 2
    err = capsys.readouterr().err
    assert "halluguard export-rl exports the build of experiment 't'" in err
    assert "run `halluguard build exp=t` first" in err
    assert not (tmp_path / "runs" / "t" / "export_rl").exists()


def test_hybrid_scorer_without_a_reward_run_says_what_to_run(built, tmp_path):
    from halluguard.errors import HalluguardError
    from halluguard.stages import export_rl

    runs, overrides = runs_for(built, tmp_path)
    with pytest.raises(HalluguardError, match=r"export_rl.scorer=hybrid needs the trained reward model .*"
                                              r"halluguard reward exp=t"):
        export_rl.run(compose_cfg([*overrides, "export_rl.scorer=hybrid"], "export-rl"))
    assert not (runs / "t" / "export_rl").exists()


def test_a_failed_export_leaves_no_partial_folder_and_keeps_the_previous_one(built, tmp_path, monkeypatch):
    from halluguard.artifacts import sha256_path
    from halluguard.stages import export_rl

    runs, overrides = runs_for(built, tmp_path)
    cfg = compose_cfg([*overrides, "export_rl.format=verl"], "export-rl")
    parent = runs / "t" / "export_rl"

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setitem(export_rl.READMES, "verl", broken)  # after the parquet files are written
    with pytest.raises(OSError, match="disk full"):
        export_rl.run(cfg)
    assert list(parent.iterdir()) == []  # neither the folder nor its temporary twin

    monkeypatch.undo()
    export_rl.run(cfg)
    before = sha256_path(parent / "verl")
    monkeypatch.setitem(export_rl.READMES, "verl", broken)
    with pytest.raises(OSError, match="disk full"):
        export_rl.run(cfg)
    assert [p.name for p in parent.iterdir()] == ["verl"] and sha256_path(parent / "verl") == before


def test_export_rl_settings_are_checked_before_anything_loads(capsys):
    from halluguard.errors import ConfigError

    with pytest.raises(ConfigError, match="'export_rl.format' must be one of verl, openrlhf, trl, all, got 'verll'"):
        compose_cfg(["export_rl.format=verll"], "export-rl")
    with pytest.raises(ConfigError, match="'export_rl.scorer' must be one of rules, rm, hybrid"):
        compose_cfg(["export_rl.scorer=model"], "export-rl")
    assert compose_cfg([], "export-rl").export_rl.format == "verl"
    assert cli.main(["--help"]) == 0 and "export-rl" in capsys.readouterr().out


def test_the_exported_training_prompts_follow_ppo_prompts(built, tmp_path):
    """``ppo.prompts=unseen_by_sft``: the engines get the prompts ``halluguard ppo`` would train on."""
    from datasets import load_from_disk

    from halluguard.artifacts import Manifest
    from halluguard.errors import HalluguardError
    from halluguard.stages import export_rl

    runs, overrides = runs_for(built, tmp_path)
    exp_dir = runs / "t"
    # the model named outright: the fake sft stage below holds its examples only, no model
    model = next(o for o in overrides if o.startswith("model.name_or_path=")).split("=", 1)[1]
    cfg = compose_cfg([*overrides, "export_rl.format=trl", "ppo.prompts=unseen_by_sft", f"export_rl.model={model}"],
                      "export-rl")
    with pytest.raises(HalluguardError, match=r"needs the SFT examples .*run `halluguard sft exp=t` first"):
        export_rl.run(cfg)
    rows = list(load_from_disk(str(exp_dir / "build" / "ppo_prompts")))
    seen = [r["case_id"] for r in rows[1:]]  # SFT "trained on" every prompt but the first
    sft_dir = exp_dir / "sft"
    sft_dir.mkdir()
    (sft_dir / "examples.jsonl").write_text("".join(json.dumps({"case_id": c}) + "\n" for c in seen))
    sft = Manifest(stage="sft", exp="t", config={})
    sft.add_output("examples", sft_dir / "examples.jsonl", sft_dir)
    sft.write(sft_dir)
    manifest = export_rl.run(cfg)
    folder = manifest.path.parent
    train = read_jsonl(folder / "prompts" / "train.jsonl")
    assert [r["case_id"] for r in train] == [rows[0]["case_id"]]
    assert manifest.metrics["prompts"]["kept"] == 1 and manifest.metrics["prompts"]["seen_by_sft"] == len(seen)
    assert "sft_examples" in Manifest.load(folder).inputs
    assert "that the SFT reference did not train on (`ppo.prompts=unseen_by_sft`" in (folder / "README.md").read_text()
