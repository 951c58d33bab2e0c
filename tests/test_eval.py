"""``halluguard eval`` on the tiny knowledge base: outputs and schema, baselines, the gate, overlap with
training, questions without gold answers, models that are missing or broken, and the HTML report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import built_tiny_overrides, compose_cfg, runs_for

MODEL_FREE = "eval.models=[always_refuse,never_refuse,gate]"
FAST = ["eval.bootstrap=30", "eval.max_new_tokens=6", "eval.batch_size=4"]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_policy):
    """The tiny KB built once; each test evaluates a copy of it (``runs_for``)."""
    from halluguard.stages import build

    root = tmp_path_factory.mktemp("eval-build")
    overrides = built_tiny_overrides(root, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    return {"runs": root / "runs", "overrides": overrides}


def rewrite_build_output(build_dir: Path, name: str, dataset) -> None:
    """Replace one build output and re-record its sha256, as a rebuilt (but faulty) build would."""
    from halluguard.artifacts import FileRecord, Manifest, sha256_path

    manifest = Manifest.load(build_dir)
    path = manifest.output_path(name)
    staged = path.parent / f".{path.name}.new"
    dataset.save_to_disk(str(staged))
    shutil.rmtree(path)
    staged.rename(path)
    manifest.outputs[name] = FileRecord(path=manifest.outputs[name].path, sha256=sha256_path(path))
    manifest.write(build_dir)


def fake_adapter(folder: Path, base: str, stage: str) -> None:
    """A PEFT LoRA adapter on ``base`` with a stage manifest, as ``halluguard ppo`` leaves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from halluguard.artifacts import Manifest

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(folder / "adapter")
    manifest = Manifest(stage=stage, exp="t", config={})
    manifest.add_output("adapter", folder / "adapter", folder)
    manifest.write(folder)


def metric(results: dict, model: str, name: str):
    return results["models"][model]["summary"]["metrics"][name]["value"]


# ---------------------------------------------------------------- the stage end to end

@pytest.fixture(scope="module")
def evaluated(built, tmp_path_factory, tiny_policy):
    from halluguard.stages import eval as eval_stage

    tmp = tmp_path_factory.mktemp("eval-e2e")
    runs, overrides = runs_for(built, tmp)
    fake_adapter(runs / "t" / "grpo", str(tiny_policy), "grpo")
    broken = runs / "t" / "dpo"
    fake_adapter(broken, str(tiny_policy), "dpo")
    config_file = broken / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": str(tmp / "no-such-model")}))
    from halluguard.artifacts import FileRecord, Manifest, sha256_path

    manifest = Manifest.load(broken)  # the broken adapter is recorded as is: only loading it fails
    manifest.outputs["adapter"] = FileRecord(path="adapter", sha256=sha256_path(broken / "adapter"))
    manifest.write(broken)
    models = "eval.models=[reference,prompt_only,always_refuse,never_refuse,gate,ppo,grpo,gated_grpo,dpo]"
    manifest = eval_stage.run(compose_cfg([*overrides, models, *FAST], "eval"))
    folder = manifest.path.parent
    return {"folder": folder, "results": json.loads((folder / "results.json").read_text()),
            "samples": [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()],
            "manifest": manifest}


def test_the_three_outputs_exist_and_follow_the_schema(evaluated):
    folder, results = evaluated["folder"], evaluated["results"]
    for name in ("results.json", "samples.jsonl", "report.html", "report.md", "manifest.json"):
        assert (folder / name).is_file(), name
    assert results["schema"] == "halluguard.eval/1"
    assert {"versions", "git", "config", "data", "metrics", "models", "comparisons", "definitions"} <= set(results)
    assert results["versions"]["torch"] and results["config"]["eval"]["bootstrap"] == 30
    assert results["data"]["n_questions"] == len(evaluated["samples"]) > 0
    for name, meta in results["metrics"].items():
        assert meta["direction"] in ("higher", "lower") and meta["definition"], name
    ok = [n for n, m in results["models"].items() if m["status"] == "ok"]
    assert set(ok) == {"reference", "prompt_only", "always_refuse", "never_refuse", "gate", "grpo", "gated_grpo"}
    entry = results["models"]["reference"]["summary"]["metrics"]["abstention_recall"]
    assert {"value", "ci", "n", "direction", "definition"} <= set(entry) and len(entry["ci"]) == 2
    assert {"reference", "prompt_only", "grpo"} <= set(evaluated["samples"][0]["models"])
    for row in evaluated["samples"]:
        assert {"case_id", "question", "label", "kind", "gate_top1", "models"} <= set(row)
        assert {"answer", "refused", "refusal_score", "correct"} <= set(row["models"]["reference"])
    assert {"results", "samples", "report_html", "report_md"} <= set(evaluated["manifest"].outputs)
    assert set(evaluated["manifest"].metrics["reference"]) >= {"abstention_recall", "balanced_accuracy"}


def test_a_missing_or_broken_model_says_why_and_the_others_run(evaluated):
    models = evaluated["results"]["models"]
    assert models["ppo"]["status"] == "unavailable" and "halluguard ppo" in models["ppo"]["reason"]
    assert models["dpo"]["status"] == "failed" and "no-such-model" in models["dpo"]["reason"]
    assert models["ppo"]["summary"] is None
    html = (evaluated["folder"] / "report.html").read_text()
    assert "unavailable: no ppo policy" in html and "failed: could not load" in html


def test_always_and_never_refuse_are_the_two_extremes(evaluated):
    r = evaluated["results"]
    assert metric(r, "always_refuse", "abstention_recall") == 1.0
    assert metric(r, "always_refuse", "over_refusal") == 1.0
    assert metric(r, "always_refuse", "over_refusal_context_has_answer") == 1.0
    assert metric(r, "never_refuse", "abstention_recall") == 0.0
    assert metric(r, "never_refuse", "over_refusal") == 0.0
    assert metric(r, "never_refuse", "hallucination_rate") == 1.0
    assert metric(r, "never_refuse", "ik_accuracy") is None  # no answer text: n/a, not 0


def test_the_gate_refuses_exactly_below_its_threshold(evaluated):
    threshold = evaluated["results"]["data"]["gate"]["max_top1"]
    assert evaluated["results"]["data"]["gate"]["top1_from"]["evidence"] > 0  # synthetic cases measured
    for row in evaluated["samples"]:
        expected = row["gate_top1"] is not None and row["gate_top1"] < threshold
        assert row["models"]["gate"]["refused"] is expected, row["case_id"]
        gated = row["models"]["gated_grpo"]
        assert gated["gate_refused"] is expected
        assert gated["refused"] is (expected or row["models"]["grpo"]["refused"])
        if not expected:
            assert gated["answer"] == row["models"]["grpo"]["answer"]


def test_comparisons_carry_mcnemar_and_the_html_holds_charts_and_changes(evaluated):
    results, folder = evaluated["results"], evaluated["folder"]
    comp = results["comparisons"]["gated_grpo"]
    assert comp["before"] == "grpo" and 0 <= comp["mcnemar"]["refused"]["p_value"] <= 1
    assert results["comparisons"]["prompt_only"]["before"] == "reference"
    # each model against what it was made from; bounds and the reference itself are not changes
    assert not {"reference", "always_refuse", "never_refuse"} & set(results["comparisons"])
    html = (folder / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 5 and all(len(i) > 1000 for i in images)
    assert "class='changed'" in html and "gated_grpo said" in html
    assert "abstention_recall" in html and "higher is better" in html
    markdown = (folder / "report.md").read_text()
    assert "![abstention_recall](chart_abstention_recall.png)" in markdown
    assert (folder / "chart_abstention_recall.png").stat().st_size > 1000
    assert "![tradeoff](chart_tradeoff.png)" in markdown and (folder / "chart_tradeoff.png").stat().st_size > 5000


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless browser check needs /usr/bin/chromium, "
                                                  "which is not installed on this machine")
def test_the_html_report_renders_its_charts_in_a_browser(evaluated, tmp_path):
    report = evaluated["folder"] / "report.html"
    res = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", report.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', res.stdout)]
    assert widths and all(w > 0 for w in widths), "an embedded chart did not decode"
    assert int(re.search(r'data-images-loaded="(\d+)"', res.stdout).group(1)) == len(widths)


# ---------------------------------------------------------------- bad input

def test_overlap_with_training_is_refused_or_flagged(built, tmp_path):
    from datasets import concatenate_datasets, load_from_disk

    from halluguard.errors import HalluguardError
    from halluguard.stages import eval as eval_stage

    runs, overrides = runs_for(built, tmp_path)
    build_dir = runs / "t" / "build"
    heldout = load_from_disk(str(build_dir / "heldout"), keep_in_memory=True)
    prompts = load_from_disk(str(build_dir / "ppo_prompts"), keep_in_memory=True)
    leaked = heldout.select([0]).cast(prompts.features)
    rewrite_build_output(build_dir, "ppo_prompts", concatenate_datasets([prompts, leaked]))
    with pytest.raises(HalluguardError, match=r"also appear in training .*eval.overlap=warn"):
        eval_stage.run(compose_cfg([*overrides, MODEL_FREE, *FAST], "eval"))
    assert not (runs / "t" / "eval").exists()
    manifest = eval_stage.run(compose_cfg([*overrides, MODEL_FREE, *FAST, "eval.overlap=warn"], "eval"))
    results = json.loads((manifest.path.parent / "results.json").read_text())
    overlap = results["data"]["overlap"]
    # The leaked case shares its question_id with its synthetic variants, all held out beside it.
    assert overlap["count"] >= 1 and heldout[0]["case_id"] in overlap["case_ids"]
    assert overlap["by_text_and_evidence"] == 1
    flagged = {json.loads(line)["case_id"] for line in (manifest.path.parent / "samples.jsonl").read_text().splitlines()
               if json.loads(line)["overlaps_training"]}
    assert flagged == set(overlap["case_ids"])


def test_overlap_by_question_text_and_evidence_alone():
    from halluguard.evaluation.heldout import EvalQuestion, find_overlap

    q = EvalQuestion(case_id="c1", question_id="h1", question="How long does a refund take?", label="ik",
                     kind="in_knowledge", messages=[], evidence_ids=["a1", "a2"])
    other_evidence = {"question_id": "t9", "question": "how long does a refund take", "evidence_ids": ["a3"]}
    as_pair = {"question_id": "t8", "evidence_ids": ["a2", "a1"],
               "prompt": [{"role": "user", "content": "Passages:\n[1] x\n\nQuestion: How long does a REFUND take"}]}
    assert find_overlap([q], [other_evidence])["count"] == 0
    found = find_overlap([q], [other_evidence, as_pair])
    assert found == {"count": 1, "by_question_id": 0, "by_text_and_evidence": 1, "case_ids": ["c1"]}


def test_questions_without_gold_answers_give_na_accuracy_but_abstention_metrics(built, tmp_path):
    from datasets import load_from_disk

    from halluguard.stages import eval as eval_stage

    runs, overrides = runs_for(built, tmp_path)
    build_dir = runs / "t" / "build"
    heldout = load_from_disk(str(build_dir / "heldout"), keep_in_memory=True)
    rewrite_build_output(build_dir, "heldout", heldout.map(lambda row: {"answers": []}))
    manifest = eval_stage.run(compose_cfg([*overrides, "eval.models=[reference,always_refuse,gate]", *FAST], "eval"))
    results = json.loads((manifest.path.parent / "results.json").read_text())
    assert results["data"]["with_gold_answers"] == 0
    for model in ("reference", "always_refuse"):
        for name in ("exact_match", "token_f1", "ik_accuracy", "rlkf_accuracy"):
            assert metric(results, model, name) is None, (model, name)
        assert metric(results, model, "abstention_recall") is not None
        assert metric(results, model, "over_refusal") is not None
    assert metric(results, "always_refuse", "abstention_recall") == 1.0
    assert "| n/a |" in (manifest.path.parent / "report.md").read_text()


def test_bad_settings_fail_before_anything_loads(built, tmp_path):
    from halluguard.errors import ConfigError, HalluguardError
    from halluguard.stages import eval as eval_stage

    _, overrides = runs_for(built, tmp_path)
    with pytest.raises(HalluguardError, match="did you mean 'gated_ppo'"):
        eval_stage.run(compose_cfg([*overrides, "eval.models=[gatd_ppo]"], "eval"))
    with pytest.raises(ConfigError, match="eval.overlap"):
        eval_stage.run(compose_cfg([*overrides, "eval.overlap=ignore"], "eval"))


def test_contains_gold_matches_whole_words_after_normalisation():
    from halluguard.evaluation.runner import contains_gold

    assert contains_gold("Refunds are paid within 14 days.", ["14 days"])
    assert contains_gold("The Verra Fold 2 costs €1,499.", ["€1,499"])  # SQuAD keeps the euro sign
    assert not contains_gold("It takes 114 days.", ["14 days"])
    assert not contains_gold("No idea.", [])
