"""``ppo.select.by=validation``: the validation split, the score and the choice against hand-worked cases, the ppo
stage choosing among its checkpoints on the tiny KB, and the evaluation leaving the validation questions out."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import built_tiny_overrides, compose_cfg

from halluguard.artifacts import Manifest
from halluguard.config import ConfigError
from halluguard.errors import HalluguardError
from halluguard.ppo.checkpoint_selection import (
    CheckpointScore,
    Selection,
    candidate_steps,
    choose_step,
    format_selection,
    score_answers,
    select_checkpoint,
    split_validation,
)


def q(case_id, label, group, holds=None):
    return SimpleNamespace(case_id=case_id, question_id=group, group=group, label=label,
                           should_abstain=label == "ook", evidence_holds_answer=holds)


def questions_in_groups():
    """40 questions in 20 groups: an IK question and its OOK variant in groups g0..g9, two OOK in h0..h9."""
    out = []
    for i in range(10):
        out += [q(f"g{i}-ik", "ik", f"g{i}", holds=True), q(f"g{i}-ook", "ook", f"g{i}")]
    for i in range(10):
        out += [q(f"h{i}-a", "ook", f"h{i}"), q(f"h{i}-b", "ook", f"h{i}")]
    return out


def test_the_split_is_stratified_keeps_groups_whole_and_is_fixed_by_its_seed():
    qs = questions_in_groups()
    val, rest = split_validation(qs, 0.3, seed=0)
    assert sorted(x.case_id for x in val + rest) == sorted(x.case_id for x in qs)  # a partition
    assert [x for x in qs if x in val] == val and [x for x in qs if x in rest] == rest  # original order
    by_label = {label: sum(x.label == label for x in val) for label in ("ik", "ook")}
    assert by_label["ik"] == 3 and by_label["ook"] == 9  # round(0.3 * 10), round(0.3 * 30)
    assert not {x.group for x in val} & {x.group for x in rest}  # no group on both sides
    assert [x.case_id for x in split_validation(qs, 0.3, seed=0)[0]] == [x.case_id for x in val]
    assert [x.case_id for x in split_validation(qs, 0.3, seed=1)[0]] != [x.case_id for x in val]


def test_a_split_without_one_label_is_a_clear_error():
    # the one IK question's group holds two OOK ones, more than the OOK share: no IK question fits
    qs = [q("a", "ik", "g"), q("b", "ook", "g"), q("c", "ook", "g"), *(q(f"o{i}", "ook", f"o{i}") for i in range(3))]
    with pytest.raises(HalluguardError, match="has no ik questions at ppo.select.validation_fraction=0.2"):
        split_validation(qs, 0.2, seed=0)
    with pytest.raises(HalluguardError, match=r"must be in \(0, 1\)"):
        split_validation(qs, 1.0, seed=0)


def test_the_score_is_balanced_accuracy_over_refusal_rates():
    qs = [q("a", "ook", "a"), q("b", "ook", "b"), q("c", "ik", "c", holds=True), q("d", "ik", "d", holds=False)]
    s = score_answers(4, qs, np.array([1.0, 0.5, 0.25, 1.0]), kl=0.3)
    assert s.ook_refusal == 0.75 and s.ik_refusal == 0.625 and s.over_refusal == 0.25
    assert s.balanced_accuracy == pytest.approx((0.75 + 0.375) / 2) and s.kl == 0.3
    with pytest.raises(HalluguardError, match="both IK and OOK"):
        score_answers(0, qs[:2], np.array([1.0, 0.0]))
    with pytest.raises(HalluguardError, match="3 refusal rates for 4"):
        score_answers(0, qs, np.array([1.0, 0.0, 0.0]))


def test_the_choice_is_the_best_balanced_accuracy_and_the_earliest_on_a_tie():
    def score(step, bal):
        return CheckpointScore(step=step, balanced_accuracy=bal, ook_refusal=0.5, over_refusal=0.1, ik_refusal=0.1)

    assert choose_step([score(0, 0.6), score(2, 0.7), score(4, 0.65)]) == 2
    assert choose_step([score(0, 0.7), score(2, 0.7), score(4, 0.6)]) == 0
    assert candidate_steps([0, 2, 4, 6], budget_step=4) == [0, 2, 4]
    with pytest.raises(HalluguardError, match="no saved checkpoint"):
        candidate_steps([2], budget_step=0)


def test_the_significant_rule_keeps_step_0_unless_a_gain_interval_lies_above_zero():
    def score(step, bal, ci):
        return CheckpointScore(step=step, balanced_accuracy=bal, ook_refusal=0.5, over_refusal=0.1, ik_refusal=0.1,
                               gain=None if ci is None else bal - 0.6, gain_ci=ci)

    noisy = [score(0, 0.6, None), score(2, 0.7, [-0.02, 0.22]), score(4, 0.65, [-0.1, 0.2])]
    assert choose_step(noisy) == 2 and choose_step(noisy, "significant") == 0
    # the best score's interval includes zero, a lower one's does not: the lower one is the result
    mixed = [score(0, 0.6, None), score(2, 0.72, [-0.01, 0.25]), score(4, 0.68, [0.01, 0.15]),
             score(6, 0.68, [0.02, 0.14])]
    assert choose_step(mixed, "significant") == 4  # the tie between 4 and 6 goes to the earlier
    with pytest.raises(HalluguardError, match="ppo.select.rule must be one of best, significant"):
        choose_step(mixed, "safest")


def test_the_significant_rule_says_why_the_reference_stayed():
    from halluguard.ppo.checkpoint_selection import noise_verdict

    # 3 OOK questions, 1 IK: step 2 refuses one more OOK question (gain +1/6), an interval that reaches zero
    qs = [q("a", "ook", "a"), q("b", "ook", "b"), q("c", "ook", "c"), q("d", "ik", "d", holds=True)]
    rates = {0: [0.0, 0.0, 0.0, 0.0], 2: [1.0, 0.0, 0.0, 0.0]}
    sel = select_checkpoint([0, 2], 2, qs, lambda step: (np.array(rates[step]), [["x"]] * 4), {}.get, {"n": 4},
                            rule="significant")
    assert sel.scores[1].gain == pytest.approx(1 / 6) and sel.scores[1].gain_ci[0] == 0.0
    assert sel.chosen_step == 0 and sel.to_dict()["rule"] == "significant"
    assert noise_verdict(sel).startswith("the result is step 0, the reference: the best checkpoint on validation, "
                                         "step 2 (+0.167 [+0.000, +0.500]), does not stand out")
    assert select_checkpoint([0, 2], 2, qs, lambda step: (np.array(rates[step]), [["x"]] * 4), {}.get,
                             {"n": 4}).chosen_step == 2  # rule=best takes it


def test_select_checkpoint_scores_only_the_steps_within_the_budget():
    qs = [q("a", "ook", "a"), q("b", "ik", "b", holds=True)]
    rates = {0: [0.0, 0.0], 2: [1.0, 0.0], 4: [1.0, 1.0], 6: [1.0, 0.0]}  # step 6 is past the budget
    asked = []

    def answers_of(step):
        asked.append(step)
        return np.array(rates[step]), [["no idea"], [f"answer {step}"]]

    sel = select_checkpoint([0, 2, 4, 6], 4, qs, answers_of, {2: 0.1, 4: 0.2}.get, {"n": 2})
    assert asked == [0, 2, 4] and sel.chosen_step == 2 and sel.budget_step == 4
    assert [s.balanced_accuracy for s in sel.scores] == [0.5, 1.0, 0.5] and sel.scores[1].kl == 0.1
    # one question per label: every resample is the same two questions, so the interval is the gain itself
    assert sel.scores[0].gain == 0.0 and sel.scores[0].gain_ci is None
    assert sel.scores[1].gain == 0.5 and sel.scores[1].gain_ci == [0.5, 0.5]
    d = sel.to_dict()
    assert d["by"] == "validation" and d["chosen_step"] == 2 and d["scores"][2]["over_refusal"] == 1.0
    assert "answers" not in d and sel.answers[4] == [["no idea"], ["answer 4"]] and sel.rates[2] == [1.0, 0.0]
    table = format_selection(sel)
    assert "2   0.100      1.000     +0.500 [+0.500, +0.500]        1.000         0.000  <- result" in table
    assert "(last within budget)" in table.splitlines()[3]
    assert table.splitlines()[-1] == "step 2's gain over step 0 on validation, +0.500 [+0.500, +0.500], excludes zero"


def test_the_gain_interval_is_a_paired_bootstrap_within_each_label():
    from halluguard.ppo.checkpoint_selection import gain_interval, noise_verdict

    ook = np.array([True] * 4 + [False] * 4)
    start = np.array([0.5] * 8)
    same = gain_interval(start + np.array([0.25] * 4 + [0.25] * 4), start, ook)
    assert same == pytest.approx([0.0, 0.0])  # refusing 0.25 more everywhere moves no boundary
    mixed = gain_interval(start + np.array([0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]), start, ook, n_boot=2000)
    assert mixed[0] < 0.125 < mixed[1] and mixed[0] >= 0.0  # gain (0.25 - 0) / 2; OOK changes resampled
    qs = [q("a", "ook", "a"), q("b", "ik", "b", holds=True)]
    flat = select_checkpoint([0, 2], 2, qs, lambda step: (np.array([0.5, 0.5]), [["x"], ["y"]]), {}.get, {"n": 2})
    assert flat.chosen_step == 0 and "the result is step 0, the reference" in noise_verdict(flat)
    noisy = select_checkpoint([0, 2], 2, [*qs, q("c", "ook", "c")],
                              lambda step: (np.array([0.0, 0.0, 0.0] if step == 0 else [1.0, 0.0, 0.0]), [["x"]] * 3),
                              {}.get, {"n": 3})
    assert noisy.chosen_step == 2 and "includes zero: within what 3 questions can tell apart" in noise_verdict(noisy)


def test_config_errors_name_the_key(tiny_policy, tmp_path):
    base = built_tiny_overrides(tmp_path, tiny_policy)
    with pytest.raises(ConfigError, match="ppo.select.by"):
        compose_cfg([*base, "ppo.select.by=best"], "ppo")
    with pytest.raises(ConfigError, match="ppo.algo=dpo saves none"):
        compose_cfg([*base, "ppo.select.by=validation", "ppo.algo=dpo"], "ppo")
    with pytest.raises(ConfigError, match="ppo.select.validation_fraction"):
        compose_cfg([*base, "ppo.select.validation_fraction=0"], "ppo")
    with pytest.raises(ConfigError, match="ppo.select.samples"):
        compose_cfg([*base, "ppo.select.samples=-1"], "ppo")
    with pytest.raises(ConfigError, match="ppo.select.rule"):
        compose_cfg([*base, "ppo.select.rule=safest"], "ppo")


# ---------------------------------------------------------------- the stage, on the tiny KB

PPO = ["reward.scorer=rules", "ppo.start=base", "ppo.steps=3", "ppo.batch_size=4", "ppo.mini_batch_size=2",
       "ppo.max_new_tokens=4", "ppo.save_every=1", "ppo.probe_every=2", "ppo.probe_prompts=2",
       "ppo.max_prompt_length=1000", "ppo.learning_rate=1e-2", "ppo.lora.top_layers=1",
       "ppo.select.by=validation", "ppo.select.validation_fraction=0.7", "ppo.select.max_new_tokens=4",
       "eval.batch_size=4"]


@pytest.fixture(scope="module")
def built(tiny_policy, tmp_path_factory):
    from halluguard.stages import build

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("select")
    overrides = built_tiny_overrides(root, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    yield overrides, root / "runs" / "t"
    torch.set_num_threads(before)


def test_ppo_chooses_its_result_on_validation_and_eval_leaves_those_questions_out(built, capsys, monkeypatch):
    from halluguard.evaluation.heldout import load_heldout
    from halluguard.ppo import checkpoint_selection
    from halluguard.stages import eval as eval_stage
    from halluguard.stages import ppo

    overrides, exp_dir = built
    real = checkpoint_selection.policy_refusal_rates
    seen = {}

    def rates_with_a_known_best(cfg, source, questions, detector, device, desc):
        """The real greedy pass (it must run), then a planted refusal pattern: step 1 draws the boundary."""
        step = int(source.adapter.split("step-")[1].split("/")[0])
        seen[step], answers = real(cfg, source, questions, detector, device, desc)
        return np.array([float(x.should_abstain) if step == 1 else 0.0 for x in questions]), answers

    monkeypatch.setattr(checkpoint_selection, "policy_refusal_rates", rates_with_a_known_best)
    manifest = ppo.run(compose_cfg([*overrides, *PPO], "ppo"))
    folder = manifest.path.parent
    m = Manifest.load(folder).metrics
    sel = m["selection"]
    assert sorted(seen) == [0, 1, 2, 3] and all(len(r) == sel["validation"]["n"] for r in seen.values())
    assert sel["by"] == "validation" and sel["budget_step"] == 3 and m["chosen_step"] == sel["chosen_step"] == 1
    assert [s["step"] for s in sel["scores"]] == [0, 1, 2, 3] and sel["scores"][1]["balanced_accuracy"] == 1.0
    # the result is step 1's adapter, byte for byte
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (folder / "adapter" / name).read_bytes() == \
            (folder / "checkpoints" / "step-1" / "adapter" / name).read_bytes()
    assert (folder / "validation.png").stat().st_size > 1000 and "validation_plot" in manifest.outputs
    rows = [json.loads(line) for line in (folder / "validation.jsonl").read_text().splitlines()]
    assert [r["case_id"] for r in rows] == sel["validation"]["case_ids"] and set(rows[0]["steps"]) == {"0", "1", "2", "3"}
    assert all(len(r["steps"]["2"]["answers"]) == 1 and r["steps"]["1"]["refusal_rate"] == float(r["label"] == "ook")
               for r in rows)
    assert sel["verdict"].startswith("step 1's gain over step 0 on validation")
    summary = (folder / "summary.md").read_text()
    assert "The result is checkpoint step 1, chosen on validation questions" in summary
    assert "| 1 **result** |" in summary and "falls between the probe steps" in summary
    out = capsys.readouterr().out
    assert "chosen on" in out and "step 1 (the last within the KL budget: step 3)" in out

    heldout = load_heldout(exp_dir / "build" / "heldout")
    ids = set(sel["validation"]["case_ids"])
    assert ids and ids < {x.case_id for x in heldout}
    eval_stage.run(compose_cfg([*overrides, "eval.models=[never_refuse,always_refuse]", "eval.bootstrap=0"], "eval"))
    results = json.loads((exp_dir / "eval" / "results.json").read_text())
    assert results["data"]["validation_left_out"]["n"] == len(ids)
    assert results["data"]["n_questions"] == len(heldout) - len(ids)
    samples = [json.loads(line) for line in (exp_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert samples and not {s.get("case_id") or s.get("question_id") for s in samples} & ids
    assert "PPO's checkpoint was chosen on" in (exp_dir / "eval" / "report.md").read_text()


def test_eval_refuses_a_ppo_choice_made_on_another_builds_questions(built, tmp_path):
    from halluguard.stages import eval as eval_stage

    overrides, exp_dir = built
    other = tmp_path / "runs" / "t"
    (other / "ppo").mkdir(parents=True)
    import shutil

    shutil.copytree(exp_dir / "build", other / "build")
    Manifest(stage="ppo", exp="t", config={}, metrics={"selection": {"by": "validation", "validation": {
        "case_ids": ["not-a-case-of-this-build"]}}}).write(other / "ppo")
    cfg = compose_cfg([*overrides, f"paths.runs={tmp_path / 'runs'}", "eval.models=[never_refuse]"], "eval")
    with pytest.raises(HalluguardError, match="1 of which this build's held-out set does not have"):
        eval_stage.run(cfg)
    assert not (other / "eval").exists()


def test_selection_round_trips_through_its_dict():
    sel = Selection(chosen_step=0, budget_step=2, scores=[CheckpointScore(0, 0.5, 0.5, None, 0.5)],
                    validation={"n": 4, "case_ids": ["a"]})
    d = sel.to_dict()
    assert d["rule"] == "best" and d["scores"][0] == {"step": 0, "balanced_accuracy": 0.5, "ook_refusal": 0.5, "over_refusal": None,
                              "ik_refusal": 0.5, "kl": None, "gain": None, "gain_ci": None}


def test_the_summary_says_when_the_significant_rule_kept_the_reference():
    from halluguard.ppo.checkpoint_selection import noise_verdict
    from halluguard.stages.ppo import _choice_lines

    qs = [q("a", "ook", "a"), q("b", "ook", "b"), q("c", "ook", "c"), q("d", "ik", "d", holds=True)]
    rates = {0: [0.0, 0.0, 0.0, 0.0], 2: [1.0, 0.0, 0.0, 0.0]}
    info = {"n": 4, "by_label": {"ook": 3, "ik": 1}, "fraction": 0.3, "seed": 0, "samples": 0, "case_ids": list("abcd")}
    sel = select_checkpoint([0, 2], 2, qs, lambda step: (np.array(rates[step]), [["x"]] * 4), {}.get, info,
                            rule="significant")
    text = "\n".join(_choice_lines({**sel.to_dict(), "verdict": noise_verdict(sel)}))
    assert ("none has a gain over step 0 whose 95% interval lies above zero (`ppo.select.rule=significant`), so the "
            "result is **the reference itself**. `halluguard eval` leaves") in text
    assert "| 0 **result** |" in text and "The result is step 0, the reference: the best checkpoint" in text
    best = select_checkpoint([0, 2], 2, qs, lambda step: (np.array(rates[step]), [["x"]] * 4), {}.get, info)
    text = "\n".join(_choice_lines({**best.to_dict(), "verdict": noise_verdict(best)}))
    assert "step 2 has the highest balanced accuracy. `halluguard eval` leaves" in text
