"""The reward audit: the reward on each trained model's own answers, refused vs answered, per label."""

import json

import numpy as np
import pytest

from halluguard.evaluation.reward_audit import format_audit, summarise, warnings_for, zero_drift_answer_ook
from tiny_chain import tiny_chain  # noqa: F401 (the shared `halluguard run` fixture)


def test_gaps_are_answered_minus_refused_means_per_label():
    labels = ["ook", "ook", "ook", "ik", "ik"]
    refused = [True, False, False, True, False]
    scores = {"rm": np.array([0.2, 1.4, 1.0, 0.1, 1.5]), "rules": np.array([1.0, -1.0, -1.0, -1.5, 1.0])}
    scores["hybrid"] = scores["rm"] + scores["rules"]
    out = summarise(scores, labels, refused)
    assert out["ook"]["refused"] == {"n": 1, "rm": 0.2, "rules": 1.0, "hybrid": 1.2}
    assert out["ook"]["answered"]["n"] == 2 and out["ook"]["answered"]["rm"] == pytest.approx(1.2)
    assert out["ook"]["gap"]["rm"] == pytest.approx(1.0)          # the reward model prefers answering OOK
    assert out["ook"]["gap"]["hybrid"] == pytest.approx(-1.0)     # the rules hold the boundary
    assert out["ik"]["gap"]["hybrid"] == pytest.approx(2.5 - (-1.4))
    assert out["drift"]["hybrid"] == pytest.approx((3.9 - 1.0) / 2)
    # raising answer_ook by 2 x drift lowers the answered OOK score by that much: the drift becomes zero
    assert zero_drift_answer_ook(out, 1.0) == pytest.approx(1.0 + 3.9 - 1.0)
    scores_after = dict(scores, rules=np.where((np.array(labels) == "ook") & ~np.array(refused),
                                               scores["rules"] - 2 * out["drift"]["hybrid"], scores["rules"]))
    scores_after["hybrid"] = scores_after["rm"] + scores_after["rules"]
    assert summarise(scores_after, labels, refused)["drift"]["hybrid"] == pytest.approx(0.0, abs=1e-3)
    warnings = warnings_for({"ppo": out})
    assert "reward model alone" in warnings[0] and "+1.00" in warnings[0]
    assert "drifts towards answering" in warnings[1] and "+1.45" in warnings[1]


def test_a_reward_that_prefers_answering_ook_is_flagged_and_a_missing_group_is_na():
    scores = {"rm": np.array([0.0, 3.0]), "rules": np.array([1.0, -1.0])}
    scores["hybrid"] = scores["rm"] + scores["rules"]
    out = summarise(scores, ["ook", "ook"], [True, False])
    assert out["ook"]["gap"]["hybrid"] == pytest.approx(1.0)
    assert "raises the reward" in warnings_for({"sft": out})[0]
    assert out["ik"]["refused"]["n"] == 0 and out["ik"]["gap"]["rm"] is None and out["drift"]["rm"] is None
    text = format_audit({"status": "ok", "models": {"sft": out}, "warnings": warnings_for({"sft": out})})
    assert "n/a" in text and "WARNING sft" in text


def test_the_chain_audits_its_trained_models(tiny_chain):  # noqa: F811 (the fixture)
    assert tiny_chain["result"].returncode == 0, tiny_chain["result"].stderr[-2000:]
    results = json.loads((tiny_chain["exp_dir"] / "eval" / "results.json").read_text())
    audit = results["reward_audit"]
    assert audit["status"] == "ok", audit
    assert set(audit["models"]) == {"sft", "ppo", "dpo"}  # trained models only: not reference, gates, bounds
    for summary in audit["models"].values():
        for label in ("ik", "ook"):
            assert summary[label]["refused"]["n"] + summary[label]["answered"]["n"] == results["data"]["by_label"][label]
    assert "reward audit" in tiny_chain["result"].stdout
    assert "## Reward audit" in (tiny_chain["exp_dir"] / "eval" / "report.md").read_text()


def test_ppo_is_audited_against_the_answer_ook_it_balanced_to(tmp_path):
    from omegaconf import OmegaConf

    from halluguard.artifacts import Manifest
    from halluguard.evaluation.reward_audit import ppo_balanced_answer_ook, with_answer_ook
    from halluguard.reward.rules import RuleScorer

    class Never:
        def is_refusal(self, responses):
            return np.zeros(len(responses), dtype=bool)

    rules = RuleScorer(OmegaConf.create({"refuse_ook": 1.0, "answer_ook": 2.7, "refuse_ik": 1.5, "support": 1.0}),
                       Never())
    rm, replaced = with_answer_ook(("rm", rules), 4.2)
    meta = [{"label": "ook", "evidence": "", "answers": []}]
    assert rm == "rm" and float(replaced.score(None, ["It is 25 euros."], meta)[0]) == pytest.approx(-4.2)
    assert float(rules.score(None, ["It is 25 euros."], meta)[0]) == pytest.approx(-2.7)  # the original is untouched
    cfg = OmegaConf.create({"paths": {"runs": str(tmp_path)}, "exp": "e", "ppo": {"algo": "ppo"}})
    assert ppo_balanced_answer_ook(cfg) is None  # no PPO run
    folder = tmp_path / "e" / "ppo"
    folder.mkdir(parents=True)
    Manifest(stage="ppo", exp="e", config={}, metrics={"reward_balance": None}).write(folder)
    assert ppo_balanced_answer_ook(cfg) is None  # PPO ran without balancing
    Manifest(stage="ppo", exp="e", config={}, metrics={"reward_balance": {"answer_ook": 3.61}}).write(folder)
    assert ppo_balanced_answer_ook(cfg) == 3.61
