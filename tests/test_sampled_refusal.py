"""``eval.sampled``: per-question refusal rates from sampled answers, and their paired before -> after tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import built_tiny_overrides, compose_cfg, runs_for

from halluguard.errors import ConfigError, HalluguardError
from halluguard.evaluation.sampled_refusal import (
    SampledSettings,
    change_direction,
    format_sampled,
    gated_rates,
    group_masks,
    paired_bootstrap_mean_ci,
    paired_change,
    refusal_rates,
    sign_flip_p_value,
)


class PrefixDetector:
    """Calls an answer a refusal when it starts with "sorry"."""

    def is_refusal(self, answers):
        return np.array([a.lower().startswith("sorry") for a in answers])


def question(abstain: bool, holds: bool | None = None):
    return SimpleNamespace(should_abstain=abstain, evidence_holds_answer=holds)


# ---------------------------------------------------------------- rates

def test_a_questions_rate_is_the_fraction_of_its_answers_judged_refusals():
    answers = [["sorry, no", "Paris", "sorry", "It is 4"], ["sorry"] * 4, ["a", "b", "c", "d"]]
    assert refusal_rates(PrefixDetector(), answers).tolist() == [0.5, 1.0, 0.0]


def test_unequal_or_empty_sample_counts_are_refused():
    with pytest.raises(HalluguardError, match="same, non-zero number"):
        refusal_rates(PrefixDetector(), [["a", "b"], ["c"]])
    with pytest.raises(HalluguardError, match="same, non-zero number"):
        refusal_rates(PrefixDetector(), [[], []])


def test_the_gate_makes_a_refusal_certain_where_it_fires_and_leaves_the_rest():
    assert gated_rates(np.array([0.25, 0.5, 0.0]), [True, False, False]).tolist() == [1.0, 0.5, 0.0]


def test_groups_split_ook_from_ik_and_ik_by_whether_its_context_holds_the_answer():
    masks = group_masks([question(True), question(False, True), question(False, False), question(False, None)])
    assert masks["ook"].tolist() == [True, False, False, False]
    assert masks["ik_context_has_answer"].tolist() == [False, True, False, False]
    assert masks["ik"].tolist() == [False, True, True, True]


# ---------------------------------------------------------------- statistics

def test_sign_flip_p_value_matches_the_exact_permutation_distribution():
    # Three equal differences: only the two all-same-sign assignments of 8 reach |mean| = 1, so p = 1/4.
    p = sign_flip_p_value(np.array([1.0, 1.0, 1.0]), permutations=20000, seed=1)
    assert abs(p - 0.25) < 0.015
    # [2, -1, 1], observed |sum| 2: the 8 sign patterns give sums 0, 2, 2, 4 and their negations, 6 of them |sum| >= 2.
    p = sign_flip_p_value(np.array([2.0, -1.0, 1.0]), permutations=20000, seed=2)
    assert abs(p - 0.75) < 0.015


def test_sign_flip_p_value_is_one_for_no_change_and_small_for_a_consistent_one():
    assert sign_flip_p_value(np.zeros(50)) == 1.0
    assert sign_flip_p_value(np.array([])) is None
    p = sign_flip_p_value(np.full(40, 0.25), permutations=999, seed=0)
    assert p == pytest.approx(1 / 1000)  # no flip reaches the observed mean: the smallest p the test can give
    with pytest.raises(HalluguardError, match="permutations"):
        sign_flip_p_value(np.ones(3), permutations=0)


def test_the_paired_bootstrap_interval_holds_the_mean_and_collapses_for_constant_differences():
    assert paired_bootstrap_mean_ci(np.full(30, 0.125)) == (0.125, 0.125)
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.1, 0.3, size=200)
    low, high = paired_bootstrap_mean_ci(diffs, n_boot=2000, seed=3)
    assert low < diffs.mean() < high and high - low < 0.2
    assert paired_bootstrap_mean_ci(np.array([])) is None


def test_a_paired_change_reports_both_means_the_change_and_its_direction():
    before, after = np.array([0.0, 0.5, 1.0, 0.25]), np.array([0.5, 0.5, 0.75, 1.0])
    mask = np.array([True, True, True, False])
    c = paired_change(before, after, mask, SampledSettings(permutations=500, bootstrap=200))
    assert (c["n"], c["before"], c["after"], c["diff"]) == (3, 0.5, 0.5833, 0.0833)
    assert (c["questions_up"], c["questions_down"]) == (1, 1) and 0 < c["p_value"] <= 1
    assert change_direction("ook", 0.1) == "better" and change_direction("ik", 0.1) == "worse"
    assert change_direction("ik_context_has_answer", -0.1) == "better" and change_direction("ook", 0.0) == "same"


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("override, key", [("eval.sampled.samples=-1", "eval.sampled.samples"),
                                           ("eval.sampled.temperature=0", "eval.sampled.temperature"),
                                           ("eval.sampled.max_new_tokens=0", "eval.sampled.max_new_tokens"),
                                           ("eval.sampled.top_k=-1", "eval.sampled.top_k")])
def test_bad_sampled_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_cfg(["eval.sampled.samples=4", override], "eval")


def test_off_by_default():
    assert compose_cfg([], "eval").eval.sampled.samples == 0


# ---------------------------------------------------------------- the eval stage

@pytest.fixture(scope="module")
def sampled_eval(tmp_path_factory, tiny_policy):
    """The tiny KB built and evaluated with two sampled answers per question: the reference, a LoRA policy
    (as grpo, compared with the reference) and that policy behind the gate."""
    from test_eval import fake_adapter

    from halluguard.stages import build
    from halluguard.stages import eval as eval_stage

    root = tmp_path_factory.mktemp("sampled-build")
    overrides = built_tiny_overrides(root, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    runs, overrides = runs_for({"runs": root / "runs", "overrides": overrides}, tmp_path_factory.mktemp("sampled"))
    fake_adapter(runs / "t" / "grpo", str(tiny_policy), "grpo")
    manifest = eval_stage.run(compose_cfg([*overrides, "eval.models=[reference,grpo,gated_grpo,gate]",
                                           "eval.sampled.samples=2", "eval.sampled.max_new_tokens=6",
                                           "eval.sampled.permutations=200", "eval.bootstrap=30",
                                           "eval.max_new_tokens=6", "eval.batch_size=4"], "eval"))
    folder = manifest.path.parent
    return {"folder": folder, "results": json.loads((folder / "results.json").read_text()), "manifest": manifest,
            "greedy": [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()],
            "sampled": [json.loads(line) for line in (folder / "sampled.jsonl").read_text().splitlines()]}


def test_the_eval_stage_samples_every_policy_and_writes_the_rates(sampled_eval):
    section = sampled_eval["results"]["sampled"]
    assert section["status"] == "ok" and section["settings"]["samples"] == 2
    assert set(section["models"]) == {"reference", "grpo", "gated_grpo"}  # the model-free gate is not sampled
    rows = sampled_eval["sampled"]
    assert len(rows) == sampled_eval["results"]["data"]["n_questions"]
    for row in rows:
        for name in ("reference", "grpo"):
            entry = row["models"][name]
            assert len(entry["answers"]) == 2 and entry["refusal_rate"] in (0.0, 0.5, 1.0)
    n_ook = sum(row["label"] == "ook" for row in rows)
    assert section["models"]["grpo"]["groups"]["ook"]["n"] == n_ook
    mean = np.mean([row["models"]["grpo"]["refusal_rate"] for row in rows if row["label"] == "ook"])
    assert section["models"]["grpo"]["groups"]["ook"]["mean"] == pytest.approx(mean, abs=1e-4)
    assert "sampled" in sampled_eval["manifest"].outputs


def test_a_gated_models_rate_is_one_where_the_gate_fired(sampled_eval):
    for greedy, sampled in zip(sampled_eval["greedy"], sampled_eval["sampled"], strict=True):
        assert greedy["case_id"] == sampled["case_id"]
        gated = sampled["models"]["gated_grpo"]["refusal_rate"]
        if greedy["models"]["gated_grpo"]["gate_refused"]:
            assert gated == 1.0
        else:
            assert gated == sampled["models"]["grpo"]["refusal_rate"]


def test_the_sampled_comparisons_follow_the_greedy_pairs_and_reach_the_report(sampled_eval):
    section = sampled_eval["results"]["sampled"]
    assert section["comparisons"]["grpo"]["before"] == "reference"
    assert section["comparisons"]["gated_grpo"]["before"] == "grpo"
    ook = section["comparisons"]["gated_grpo"]["groups"]["ook"]
    assert ook["diff"] >= 0 and ook["questions_down"] == 0  # the gate only ever adds refusals
    text = format_sampled(section)
    assert "reference -> grpo" in text and "OOK refusal" in text
    assert "Sampled refusal rates" in (sampled_eval["folder"] / "report.md").read_text()
    assert "Sampled refusal rates" in (sampled_eval["folder"] / "report.html").read_text()


# ---------------------------------------------------------------- benchmarks/refusal_lead_tokens.py

LEAD_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "refusal_lead_tokens.py"


@pytest.mark.parametrize("args, message", [(["--tokens", "48"], "samples.jsonl is missing"),
                                           (["--tokens", "x"], "comma-separated integers"),
                                           (["--tokens", "0"], "positive length")])
def test_the_lead_tokens_benchmark_says_what_is_wrong(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(LEAD_SCRIPT), str(tmp_path / "eval"), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and message in done.stderr


# ---------------------------------------------------------------- across eval runs

def write_sampled(folder: Path, model: str, rates: dict[str, float], labels: dict[str, str]) -> Path:
    """An eval folder with a sampled.jsonl (and the samples.jsonl compare_evals.py pairs on)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "sampled.jsonl").open("w") as f:
        for case, rate in rates.items():
            f.write(json.dumps({"case_id": case, "label": labels[case], "kind": None,
                                "evidence_holds_answer": labels[case] == "ik",
                                "models": {model: {"refusal_rate": rate, "answers": ["x"] * 4}}}) + "\n")
    with (folder / "samples.jsonl").open("w") as f:
        for case, rate in rates.items():
            f.write(json.dumps({"case_id": case, "question_id": case, "label": labels[case], "kind": None,
                                "evidence_holds_answer": labels[case] == "ik",
                                "models": {model: {"answer": "x", "refused": rate >= 0.5, "refusal_score": rate}}})
                    + "\n")
    return folder


LABELS = {f"q{i}": ("ook" if i < 6 else "ik") for i in range(10)}


def test_runs_are_compared_on_the_same_questions_group_by_group(tmp_path):
    from halluguard.evaluation.sampled_refusal import compare_sampled_runs, rates_from_sampled

    base = write_sampled(tmp_path / "a", "sft", {c: 0.25 for c in LABELS}, LABELS)
    after = write_sampled(tmp_path / "b", "ppo", {c: (0.5 if LABELS[c] == "ook" else 0.25) for c in LABELS}, LABELS)
    result = compare_sampled_runs(rates_from_sampled(base, "sft"), {"ppo": rates_from_sampled(after, "ppo")},
                                  SampledSettings(permutations=500, bootstrap=100))
    ook, ik = result["runs"]["ppo"]["ook"], result["runs"]["ppo"]["ik_context_has_answer"]
    assert (ook["n"], ook["before"], ook["after"], ook["diff"], ook["change"]) == (6, 0.25, 0.5, 0.25, "better")
    assert ook["p_value"] == pytest.approx(2 / 64, abs=0.02)  # 6 equal differences: 2 of 64 sign patterns as extreme
    assert (ik["n"], ik["diff"], ik["p_value"], ik["change"]) == (4, 0.0, 1.0, "same")
    other = write_sampled(tmp_path / "c", "ppo", {"q0": 0.5}, LABELS)
    with pytest.raises(HalluguardError, match="other questions than the baseline"):
        compare_sampled_runs(rates_from_sampled(base, "sft"), {"x": rates_from_sampled(other, "ppo")})
    with pytest.raises(HalluguardError, match="no sampled rates of model 'dpo'"):
        rates_from_sampled(base, "dpo")


def test_a_bad_sampled_line_is_named_by_file_and_line(tmp_path):
    from halluguard.evaluation.sampled_refusal import rates_from_sampled

    folder = write_sampled(tmp_path / "a", "sft", {"q0": 0.5, "q1": 1.0}, LABELS)
    lines = (folder / "sampled.jsonl").read_text().splitlines()
    (folder / "sampled.jsonl").write_text(lines[0] + "\n" + lines[1].replace("1.0", "1.5") + "\n")
    with pytest.raises(HalluguardError, match=r"sampled.jsonl:2: .*refusal_rate a number in \[0, 1\]"):
        rates_from_sampled(folder, "sft")
    with pytest.raises(HalluguardError, match="no sampled.jsonl there"):
        rates_from_sampled(tmp_path / "nothing", "sft")


def test_compare_evals_prints_the_sampled_table(tmp_path):
    write_sampled(tmp_path / "a", "sft", {c: 0.25 for c in LABELS}, LABELS)
    write_sampled(tmp_path / "b", "ppo", {c: 0.75 for c in LABELS}, LABELS)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_evals.py"
    done = subprocess.run([sys.executable, str(script), "--sampled", "--bootstrap", "50", "--baseline",
                           f"sft={tmp_path / 'a'}:sft", f"ppo={tmp_path / 'b'}:ppo"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "sampled refusal rate, mean over the same 10 questions" in done.stdout
    assert "0.750 (+0.500, p=" in done.stdout
    done = subprocess.run([sys.executable, str(script), "--sampled", "--baseline", f"{tmp_path / 'a'}:sft",
                           f"{tmp_path / 'a'}:sft", f"{tmp_path / 'b'}:nope"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "error:" in done.stderr


def test_runs_average_question_by_question_and_only_on_the_same_questions(tmp_path):
    from halluguard.evaluation.sampled_refusal import mean_rates, rates_from_sampled

    a = rates_from_sampled(write_sampled(tmp_path / "a", "ppo", {c: 0.25 for c in LABELS}, LABELS), "ppo")
    b = rates_from_sampled(write_sampled(tmp_path / "b", "ppo", {c: 1.0 for c in LABELS}, LABELS), "ppo")
    pooled = mean_rates({"s0": a, "s1": b})
    assert pooled["q0"] == (True, False, 0.625) and pooled["q9"] == (False, True, 0.625) and len(pooled) == 10
    c = rates_from_sampled(write_sampled(tmp_path / "c", "ppo", {"q0": 0.5}, LABELS), "ppo")
    with pytest.raises(HalluguardError, match="'s0' and 'c' were sampled on other questions"):
        mean_rates({"s0": a, "c": c})


def test_compare_evals_pools_the_runs_from_sampled_files_alone(tmp_path):
    write_sampled(tmp_path / "a", "sft", {c: 0.25 for c in LABELS}, LABELS)
    write_sampled(tmp_path / "b", "ppo", {c: 0.75 for c in LABELS}, LABELS)
    write_sampled(tmp_path / "c", "ppo", {c: 0.25 for c in LABELS}, LABELS)
    for name in ("a", "b", "c"):
        (tmp_path / name / "samples.jsonl").unlink()  # --sampled-only needs none
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_evals.py"
    done = subprocess.run([sys.executable, str(script), "--sampled-only", "--pool", "--bootstrap", "50",
                           "--baseline", f"sft={tmp_path / 'a' / 'sampled.jsonl'}:sft", f"s0={tmp_path / 'b'}:ppo",
                           f"s1={tmp_path / 'c'}:ppo"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("mean of 2"))
    assert "0.500 (+0.250, p=" in row
    done = subprocess.run([sys.executable, str(script), "--pool", "--baseline", f"{tmp_path / 'a'}:sft",
                           f"{tmp_path / 'b'}:ppo"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--pool averages several runs" in done.stderr


def test_questions_for_power_is_the_normal_approximation_sample_size():
    from halluguard.evaluation.sampled_refusal import questions_for_power

    # mean 0.2, sd 0.1414 (ddof 1); (1.95996 + 0.84162) * 0.1414 / 0.2 = 1.981, squared 3.92 -> 4
    assert questions_for_power(np.array([0.1, 0.3])) == 4
    # halving the effect at the same spread needs four times the questions: 15.7 -> 16
    assert questions_for_power(np.array([0.1, 0.3]) - 0.1) == 16
    assert questions_for_power(np.array([0.25, 0.25, 0.25])) == 2  # no spread: the smallest paired test
    assert questions_for_power(np.array([0.5, -0.5])) is None and questions_for_power(np.array([0.5])) is None
