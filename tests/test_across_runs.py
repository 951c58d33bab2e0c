"""Comparing one model of several eval runs with a baseline (halluguard.evaluation.across_runs, compare_evals.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from halluguard.errors import HalluguardError
from halluguard.evaluation.across_runs import across_runs, format_across_runs, outcomes_from_samples

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_evals.py"
# 4 OOK and 4 IK questions (every IK context holds its answer)
LABELS = ["ook"] * 4 + ["ik"] * 4


def write_samples(path: Path, refused: dict[str, list[bool]]) -> Path:
    """An eval's samples.jsonl with the given refusals per model (IK answers all correct when answered)."""
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(LABELS):
        models = {name: {"answer": "no idea" if flags[i] else "an answer", "refused": flags[i],
                         "refusal_score": 0.9 if flags[i] else 0.1, "em": None if label == "ook" else float(not flags[i]),
                         "f1": None if label == "ook" else float(not flags[i]),
                         "correct": None if label == "ook" else not flags[i]}
                  for name, flags in refused.items()}
        rows.append({"case_id": f"q{i}", "label": label, "kind": "in_knowledge" if label == "ik" else "uncovered",
                     "evidence_holds_answer": label == "ik", "models": models})
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SFT = [True, True, False, False, True, False, False, False]      # OOK refusal 2/4, over-refusal 1/4
BETTER = [True, True, True, False, False, False, False, False]   # OOK 3/4, over-refusal 0/4
REFUSE_ALL = [True] * 8                                          # OOK 4/4, over-refusal 4/4


def test_outcomes_are_read_back_as_the_eval_wrote_them(tmp_path):
    folder = write_samples(tmp_path / "eval", {"sft": SFT})
    outcomes = outcomes_from_samples(folder, "sft")
    assert [o.question_id for o in outcomes] == [f"q{i}" for i in range(8)]
    assert [o.refused for o in outcomes] == SFT
    assert [o.should_abstain for o in outcomes] == [label == "ook" for label in LABELS]
    assert outcomes[4].context_holds_answer is True and outcomes[0].context_holds_answer is None
    assert outcomes_from_samples(tmp_path, "sft")[0] == outcomes[0]  # the experiment folder works too


def test_each_run_is_compared_with_the_baseline_and_the_criterion_is_judged(tmp_path):
    folder = write_samples(tmp_path / "eval", {"sft": SFT, "better": BETTER, "all": REFUSE_ALL})
    base = outcomes_from_samples(folder, "sft")
    result = across_runs(base, {"better": outcomes_from_samples(folder, "better"),
                                "all": outcomes_from_samples(folder, "all")}, n_boot=0)
    assert result["baseline"]["abstention_recall"] == pytest.approx(0.5)
    better, everything = result["runs"]["better"], result["runs"]["all"]
    assert better["diff"]["abstention_recall"]["value"] == pytest.approx(0.25)
    assert better["diff"]["over_refusal_context_has_answer"]["value"] == pytest.approx(-0.25)
    assert better["met"] and not everything["met"]  # refusing everything raises over-refusal
    assert better["mcnemar"]["refused_should_abstain"]["c"] == 1  # one OOK answer became a refusal
    assert everything["mcnemar"]["refused_in_knowledge"]["c"] == 3
    assert result["met"] == 1 and result["n_runs"] == 2
    assert result["spread"]["abstention_recall"]["mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert result["spread"]["abstention_recall"]["min"] == pytest.approx(0.25)
    text = format_across_runs(result, "sft")
    assert "met the boundary criterion: 1 of 2 runs" in text and "+0.250" in text


def test_runs_on_other_questions_are_refused(tmp_path):
    base = outcomes_from_samples(write_samples(tmp_path / "a", {"sft": SFT}), "sft")
    other = outcomes_from_samples(write_samples(tmp_path / "b", {"ppo": BETTER}), "ppo")[:6]
    with pytest.raises(HalluguardError, match="run 'x'"):
        across_runs(base, {"x": other}, n_boot=0)


def test_a_missing_model_or_a_bad_line_is_named(tmp_path):
    folder = write_samples(tmp_path / "eval", {"sft": SFT})
    with pytest.raises(HalluguardError, match=r"no answers of model 'ppo' \(models there: \['sft'\]\)"):
        outcomes_from_samples(folder, "ppo")
    with (folder / "samples.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(HalluguardError, match=r"samples.jsonl:9: not an eval sample row"):
        outcomes_from_samples(folder, "sft")
    with pytest.raises(HalluguardError, match="no samples.jsonl"):
        outcomes_from_samples(tmp_path / "nowhere", "sft")


def test_the_script_prints_the_table_and_writes_json(tmp_path):
    folder = write_samples(tmp_path / "eval", {"sft": SFT, "ppo": BETTER})
    out = tmp_path / "cmp.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--baseline", f"{folder}:sft", f"s0={folder}:ppo",
                           "--bootstrap", "0", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "met the boundary criterion: 1 of 1 runs" in done.stdout
    assert json.loads(out.read_text())["runs"]["s0"]["met"] is True
    bad = subprocess.run([sys.executable, str(SCRIPT), "--baseline", f"{folder}:sft", f"{folder}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "expected [NAME=]PATH:MODEL" in bad.stderr


def test_greedy_refusals_pool_into_each_questions_share_of_runs(tmp_path):
    from halluguard.evaluation.across_runs import greedy_rates
    from halluguard.evaluation.sampled_refusal import mean_rates

    folder = write_samples(tmp_path / "eval", {"sft": SFT, "better": BETTER, "all": REFUSE_ALL})
    rates = greedy_rates(outcomes_from_samples(folder, "better"))
    assert rates["q2"] == (True, None, 1.0) and rates["q3"] == (True, None, 0.0)
    assert rates["q4"] == (False, True, 0.0)  # an IK question keeps whether its context holds the answer
    pooled = mean_rates({"a": rates, "b": greedy_rates(outcomes_from_samples(folder, "all"))})
    assert pooled["q3"][2] == 0.5 and pooled["q0"][2] == 1.0


def test_the_script_pools_greedy_runs_and_draws_the_changes(tmp_path):
    from halluguard.evaluation.change_plot import change_rows

    folder = write_samples(tmp_path / "eval", {"sft": SFT, "better": BETTER, "all": REFUSE_ALL})
    out, chart = tmp_path / "cmp.json", tmp_path / "changes.png"
    done = subprocess.run([sys.executable, str(SCRIPT), "--baseline", f"sft={folder}:sft", f"s0={folder}:better",
                           f"s1={folder}:all", "--pool", "--bootstrap", "200", "--out", str(out), "--plot", str(chart)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "greedy refusals pooled over the runs" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("mean of 2") and "p=" in line)
    # OOK: sft refuses 2 of 4; better 3 (q0-q2), all 4 -> each question's share 1, 1, 1, .5 -> mean 0.875;
    # over-refusal: sft 1 of 4; better none, all 4 -> 0.5 each -> 0.500
    assert "0.875 (+0.375, p=" in row and "0.500 (+0.250, p=" in row
    result = json.loads(out.read_text())
    pooled = result["greedy_pooled"]["runs"]["mean of 2"]
    low, high = pooled["ook"]["ci"]
    assert low <= 0.375 <= high
    assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))
    rows = change_rows(result)
    assert [(name, measure) for name, measure, _ in rows] == [("s0", "greedy"), ("s1", "greedy"),
                                                              ("mean of 2", "greedy")]
    assert rows[0][2]["ook"][0] == pytest.approx(0.25) and rows[0][2]["over"][0] == pytest.approx(-0.25)
    assert rows[1][2]["over"][0] == pytest.approx(0.75)  # refusing everything: over-refusal 1/4 -> 4/4


def test_nothing_to_draw_is_an_error(tmp_path):
    from halluguard.evaluation.change_plot import plot_changes

    with pytest.raises(ValueError, match="no changes to plot"):
        plot_changes([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
