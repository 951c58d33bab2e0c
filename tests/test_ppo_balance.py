"""``ppo.balance_reward``: answer_ook set so that the reward's drift on the start policy's samples is zero."""

import zlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from halluguard.config import LoraSettings, PpoConfig
from halluguard.errors import HalluguardError
from halluguard.evaluation.reward_audit import summarise
from halluguard.ppo.balance import balance_reward, balanced_answer_ook, reward_parts
from halluguard.reward.rules import RuleScorer


def drift(parts, labels, refused):
    return summarise(parts, labels, refused)["drift"]["hybrid"]


def test_the_new_weight_zeroes_the_drift_when_the_answers_are_scored_again():
    labels = ["ik", "ik", "ook", "ook"]
    refused = [False, True, False, True]
    rules = np.array([1.0, -1.5, -1.0, 1.0])  # answer_ook 1.0
    rm = np.array([1.2, 0.1, 1.4, 0.2])
    parts = {"rm": rm, "rules": rules, "hybrid": rules + rm}
    assert drift(parts, labels, refused) == pytest.approx(((2.5 + 1.1) + (-2.0 + 1.2)) / 2)
    new, before, after = balanced_answer_ook(parts, labels, refused, 1.0)
    assert new == pytest.approx(1.0 + 2 * before) and after == pytest.approx(0.0, abs=1e-9)
    rescored = rules.copy()
    rescored[2] = -new  # the answered OOK response under the new penalty
    assert drift({"rm": rm, "rules": rescored, "hybrid": rescored + rm}, labels, refused) == pytest.approx(0.0, abs=1e-6)


def test_a_reward_already_pulling_towards_refusal_stops_at_zero_and_says_what_is_left():
    labels, refused = ["ik", "ik", "ook", "ook"], [False, True, False, True]
    rules = np.array([0.2, -1.5, -1.0, 2.0])  # refusing OOK pays 2, answering IK little: drift -1.15
    parts = {"rm": np.zeros(4), "rules": rules, "hybrid": rules}
    new, before, after = balanced_answer_ook(parts, labels, refused, 1.0)
    assert before == pytest.approx((1.7 - 3.0) / 2) and new == 0.0  # 1 + 2 x (-0.65) < 0: a magnitude stops at 0
    assert after == pytest.approx(before + 1.0 / 2)


@pytest.mark.parametrize("refused, missing", [([False, False, False, True], "IK"), ([False, True, True, True], "OOK")])
def test_a_label_without_refusals_or_answers_is_a_clear_error(refused, missing):
    parts = {k: np.zeros(4) for k in ("rm", "rules", "hybrid")}
    with pytest.raises(HalluguardError, match=f"none of its {missing} samples.*ppo.balance_reward=false"):
        balanced_answer_ook(parts, ["ik", "ik", "ook", "ook"], refused, 2.7)


def test_a_reward_model_alone_cannot_be_balanced():
    class RmOnly:
        def score(self, prompts, responses, meta=None):
            return torch.zeros(len(responses))

    with pytest.raises(HalluguardError, match="reward.scorer=hybrid or rules"):
        reward_parts(RmOnly(), [[]], ["x"], [{"label": "ik"}])


def test_config_refuses_balancing_a_reward_without_rule_terms(compose):
    from halluguard.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.balance_reward"):
        compose(["ppo.balance_reward=true", "reward.scorer=rm"], stage="ppo")
    with pytest.raises(ConfigError, match="ppo.balance_prompts"):
        compose(["ppo.balance_reward=true", "ppo.balance_prompts=1"], stage="ppo")


class ParityDetector:
    """Calls a response a refusal by the parity of its checksum: a deterministic mix of both kinds on both labels."""

    def is_refusal(self, responses):
        return np.array([zlib.crc32(r.encode()) % 2 == 0 for r in responses])


def test_balancing_a_tiny_policy_sets_the_scorer_and_repeats_under_the_seed(tiny_policy):
    from conftest import TINY_QUESTIONS

    from halluguard.config import ModelConfig
    from halluguard.ppo.policy import load_start_policy
    from halluguard.ppo.prompts import build_prompt_set
    from halluguard.ppo.value_head import PolicyWithValue

    torch.set_num_threads(1)
    rules_w = OmegaConf.create({"refuse_ook": 1.0, "answer_ook": 1.0, "refuse_ik": 1.5, "support": 1.0})
    questions = [q["question"] for q in TINY_QUESTIONS] * 4  # enough prompts of each label
    messages = [[{"role": "user", "content": q}] for q in questions]
    meta = [{"label": "ook" if i % 2 else "ik", "evidence": "the plan costs 25 euros", "answers": []}
            for i in range(len(questions))]
    settings = OmegaConf.structured(PpoConfig(start="base", batch_size=4, mini_batch_size=2, max_new_tokens=6,
                                              balance_reward=True, balance_prompts=16,
                                              lora=LoraSettings(r=4, alpha=8, dropout=0.0)))
    values = []
    for _ in range(2):
        policy, tokenizer = load_start_policy(str(tiny_policy), ModelConfig(name_or_path=str(tiny_policy)),
                                              settings.lora, seed=0)
        prompts = build_prompt_set(messages, meta, tokenizer, 1000)
        scorer = RuleScorer(rules_w, ParityDetector())
        model = PolicyWithValue(policy)
        balance = balance_reward(model, tokenizer, scorer, prompts, settings, ParityDetector(), seed=3)
        values.append(balance.to_dict())
    assert values[0] == values[1]  # the same samples under the same seed
    b = values[0]
    assert b["prompts"] == 16 and b["refused"]["ik"][1] == 8 and b["refused"]["ook"][1] == 8
    assert scorer.answer_ook == b["answer_ook"] and b["answer_ook_before"] == 1.0
    assert b["answer_ook"] == pytest.approx(max(0.0, 1.0 + 2 * b["drift_before"]), abs=1e-3)
    if b["answer_ook"] > 0:
        assert b["drift_after"] == pytest.approx(0.0, abs=1e-3)


class AnyDetector(ParityDetector):
    def __init__(self, *args, **kwargs):
        pass


def test_the_stage_balances_before_training_and_reports_it(tiny_policy, tmp_path, monkeypatch, capsys):
    from conftest import built_tiny_overrides, compose_cfg

    import halluguard.refusal
    from halluguard.artifacts import Manifest
    from halluguard.stages import build, ppo

    torch.set_num_threads(1)
    overrides = built_tiny_overrides(tmp_path, tiny_policy)
    build.run(compose_cfg(overrides, "build"))
    monkeypatch.setattr(halluguard.refusal, "RefusalDetector", AnyDetector)  # the tiny model's gibberish refuses
                                                                           # nothing by the real detector
    manifest = ppo.run(compose_cfg([*overrides, "reward.scorer=rules", "ppo.start=base", "ppo.steps=1",
                                    "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.max_new_tokens=4",
                                    "ppo.probe_prompts=0", "ppo.max_prompt_length=1000", "ppo.lora.top_layers=1",
                                    "ppo.balance_reward=true", "ppo.balance_prompts=8"], "ppo"))
    b = Manifest.load(manifest.path.parent).metrics["reward_balance"]
    assert b["prompts"] == 8 and b["answer_ook_before"] == 2.7
    assert "reward balanced on 8 samples of the start policy: reward.rules.answer_ook 2.7 -> " in capsys.readouterr().out
    assert "Reward balanced before training" in (manifest.path.parent / "summary.md").read_text()
