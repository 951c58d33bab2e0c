"""The reward: rule terms and hybrid weights by hand, reward-model training on a tiny model, the stage."""

import json

import pytest
import torch

from halluguard.errors import HalluguardError
from halluguard.refusal import RefusalDetector
from halluguard.reward.rules import RuleScorer, content_tokens, support_score
from halluguard.reward.scoring import HybridScorer, RewardModelScorer, check_tokenizer_match

from conftest import TINY_PASSAGES


class W:  # rule weights of the rule-only table (conf/reward/default.yaml's answer_ook is tuned for the hybrid)
    refuse_ook, answer_ook, refuse_ik, support = 1.0, 1.0, 1.5, 1.0


EVIDENCE = "The Orbit plan costs 25 euros a month and includes 40 GB of data."
PROMPT = [{"role": "system", "content": "Answer from the passages."},
          {"role": "user", "content": f"Passages: {EVIDENCE}\nQuestion: How much is the Orbit plan?"}]


def meta(label, answers=()):
    return {"label": label, "evidence": EVIDENCE, "answers": list(answers)}


@pytest.fixture(scope="module")
def rules():
    return RuleScorer(W, RefusalDetector())  # patterns only: deterministic and fast


def test_rule_only_reward_warns_when_needless_refusal_is_cheaper_than_fabrication(compose, caplog):
    cfg = compose(stage="reward")
    # the default hybrid penalises fabrication above needless refusal on purpose: its RM pulls towards answering
    assert cfg.reward.scorer == "hybrid" and cfg.reward.rules.answer_ook > cfg.reward.rules.refuse_ik
    assert "refuse everywhere" not in caplog.text
    with caplog.at_level("WARNING", logger="halluguard.config"):
        compose(["reward.scorer=rules"], stage="reward")
    assert "refuse everywhere" in caplog.text and "reward.scorer=rules" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="halluguard.config"):
        compose(["reward.scorer=rules", "reward.rules.answer_ook=1.0"], stage="reward")
    assert "refuse everywhere" not in caplog.text


def test_support_is_share_of_content_tokens_in_evidence_or_one_for_gold():
    assert content_tokens("The Orbit plan includes 40 GB data roaming.") == [
        "orbit", "plan", "includes", "40", "gb", "data", "roaming"]
    assert support_score("The Orbit plan includes 40 GB data roaming.", EVIDENCE) == pytest.approx(6 / 7)
    assert support_score("It is 25 euros.", EVIDENCE, ["25 euros"]) == 1.0
    assert support_score("Nothing at all.", EVIDENCE) == 0.0  # 'nothing' is a content token not in the evidence
    assert support_score("", EVIDENCE) == 0.0


def test_rule_terms_by_hand(rules):
    responses = ["I don't know.", "It costs 99 euros a month.", "I don't know.", "It is 25 euros a month.",
                 "The Orbit plan includes 40 GB data roaming.", ""]
    metas = [meta("ook"), meta("ook"), meta("ik", ["25 euros"]), meta("ik", ["25 euros"]), meta("ik"), meta("ik")]
    scores = rules.score([PROMPT] * 6, responses, metas)
    assert scores.dtype == torch.float32 and scores.shape == (6,)
    expected = [+1.0, -1.0, -1.5, +1.0, 6 / 7, -1.5]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    terms = rules.terms([PROMPT] * 6, responses, metas)
    assert terms["refuse_ik"][2] == -1.5 and terms["support"][4] == pytest.approx(6 / 7)


def test_rule_weights_come_from_config():
    class Heavy:
        refuse_ook, answer_ook, refuse_ik, support = 2.0, 3.0, 4.0, 0.5

    s = RuleScorer(Heavy, RefusalDetector()).score(
        [PROMPT] * 4, ["I don't know.", "It is 7 euros.", "I don't know.", "It is 25 euros."],
        [meta("ook"), meta("ook"), meta("ik"), meta("ik", ["25 euros"])])
    assert s.tolist() == pytest.approx([2.0, -3.0, -4.0, 0.5])


def test_bad_meta_is_a_clear_error(rules):
    with pytest.raises(HalluguardError, match="'ik' or 'ook'"):
        rules.score([PROMPT], ["x"], [{"label": "maybe"}])
    with pytest.raises(HalluguardError, match="meta entries"):
        rules.score([PROMPT], ["x"], [])


class FixedRM:
    name = "rm"

    def __init__(self, values):
        self.values = values

    def score(self, prompts, responses, meta=None):
        return torch.tensor(self.values, dtype=torch.float32)


def test_hybrid_is_rm_weight_times_rm_plus_rule_terms(rules):
    responses = ["I don't know.", "It costs 99 euros a month.", "I don't know."]
    metas = [meta("ook"), meta("ook"), meta("ik")]
    hybrid = HybridScorer(FixedRM([0.2, 1.0, -0.4]), rules, rm_weight=0.5)
    # 0.5 * rm + rules: [0.1 + 1, 0.5 - 1, -0.2 - 1.5]
    assert hybrid.score([PROMPT] * 3, responses, metas).tolist() == pytest.approx([1.1, -0.5, -1.7])
    assert HybridScorer(None, rules, rm_weight=0.0).score([PROMPT] * 3, responses, metas).tolist() == \
        pytest.approx([1.0, -1.0, -1.5])
    with pytest.raises(HalluguardError, match="needs a reward model"):
        HybridScorer(None, rules, rm_weight=1.0)


def _pairs():
    rows = []
    for i in range(16):
        p = TINY_PASSAGES[i % 4]
        prompt = [{"role": "system", "content": "Answer only from the passages."},
                  {"role": "user", "content": f"Passages: {p['text']}\nQuestion: question {i}?"}]
        rows.append({"prompt": prompt, "kind": "ook_refusal_vs_fabrication", "label": "ook",
                     "chosen": [{"role": "assistant", "content": "Sorry, the passages do not say."}],
                     "rejected": [{"role": "assistant", "content": f"It costs {i} euros."}]})
    rows.append({**rows[0], "rejected": [{"role": "assistant", "content": "  "}]})
    rows.append({**rows[1], "rejected": rows[1]["chosen"]})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_policy):
    from datasets import Dataset
    from omegaconf import OmegaConf

    from halluguard.config import RootConfig
    from halluguard.reward.train import train_reward_model

    cfg = OmegaConf.structured(RootConfig)
    cfg.model.name_or_path = str(tiny_policy)
    cfg.reward.train.max_steps = 3
    cfg.reward.train.batch_size = 4
    cfg.reward.train.max_length = 96
    out = tmp_path_factory.mktemp("rm")
    summary = train_reward_model(Dataset.from_list(_pairs()), str(tiny_policy), cfg.model, cfg.reward, out)
    return cfg, out, summary


def test_training_on_a_tiny_model_saves_a_loadable_model_and_normalisation(trained, tiny_policy):
    from halluguard.models import load_tokenizer

    cfg, out, summary = trained
    assert summary["steps"] == 3
    assert summary["pairs"]["skipped_empty_side"] == 1 and summary["pairs"]["skipped_identical"] == 1
    assert summary["pairs"]["kept"] == 16
    norm = json.loads((out / "normalisation.json").read_text())
    assert norm["std"] > 0 and norm["n"] == 32
    assert (out / "weights" / "adapter_config.json").is_file()
    scorer = RewardModelScorer.load(out, policy_tokenizer=load_tokenizer(str(tiny_policy), cfg.model))
    rows = [r for r in _pairs()[:16]]
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"][0]["content"] for r in rows] + [r["rejected"][0]["content"] for r in rows]
    raw = scorer.raw_scores(prompts, responses)
    scores = scorer.score(prompts, responses, None)
    assert scores.dtype == torch.float32 and scores.shape == (32,)
    assert torch.allclose(scores, (raw - norm["mean"]) / norm["std"], atol=1e-5)
    # The normalisation was computed on these very responses: mean ~0, std ~1 after loading again.
    assert abs(float(scores.mean())) < 1e-3 and float(scores.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_overlong_pairs_are_counted(tiny_policy):
    from omegaconf import OmegaConf

    from halluguard.config import ModelConfig
    from halluguard.models import load_tokenizer
    from halluguard.reward.train import prepare_pairs

    tok = load_tokenizer(str(tiny_policy), OmegaConf.structured(ModelConfig))
    rows = _pairs()[:4]
    long = {**rows[0], "prompt": [{"role": "user", "content": "word " * 400 + "Question: what?"}]}
    dropped = prepare_pairs([long, *rows], tok, max_length=200, overlong="drop")
    assert dropped.counts["dropped_too_long"] == 1 and dropped.counts["kept"] == 4
    cut = prepare_pairs([long, *rows], tok, max_length=200, overlong="truncate")
    assert cut.counts["truncated_prompt"] == 1 and cut.counts["kept"] == 5
    assert all(len(r["chosen_ids"]) <= 200 and len(r["rejected_ids"]) <= 200 for r in cut.rows)


def test_tokenizer_mismatch_is_a_clear_error(tiny_policy, tmp_path):
    from omegaconf import OmegaConf

    from halluguard.config import ModelConfig
    from halluguard.models import load_tokenizer
    from halluguard.tiny import train_tiny_tokenizer

    tok = load_tokenizer(str(tiny_policy), OmegaConf.structured(ModelConfig))
    other = train_tiny_tokenizer(["completely different words here", "zebra quantum"], vocab_size=300)
    check_tokenizer_match(tok, tok)
    with pytest.raises(HalluguardError, match="does not use the policy's tokenizer"):
        check_tokenizer_match(other, tok)


def test_missing_build_manifest_names_it(compose, tiny_overrides):
    from halluguard.stages import reward

    cfg = compose([*tiny_overrides], stage="reward")
    with pytest.raises(HalluguardError, match=r"build.*manifest|manifest.*build"):
        reward.run(cfg)


def test_stage_end_to_end_on_the_tiny_kb(compose, tiny_overrides, capsys):
    from halluguard.artifacts import Manifest
    from halluguard.stages import build, reward

    overrides = [*tiny_overrides, "builder.split.heldout_fraction=0.5", "reward.train.max_steps=2",
                 "reward.train.batch_size=4", "reward.train.max_length=160"]
    build.run(compose(overrides, stage="build"))
    manifest = reward.run(compose(overrides, stage="reward"))
    folder = manifest.path.parent
    assert {"reward_model", "eval", "scores", "summary"} <= set(manifest.outputs)
    m = Manifest.load(folder).metrics
    assert "all" in m["rm_accuracy_by_kind"] and "all" in m["rules_accuracy_by_kind"]
    assert m["throughput_responses_per_s"] > 0
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["score_by_class"] and "ook_fabrication_above_median_refusal" in ev
    assert (folder / "scores.png").stat().st_size > 1000
    assert (folder / "reward_model" / "normalisation.json").is_file()
    summary = (folder / "summary.md").read_text()
    assert "rules only" in summary and "identical" in summary and "hybrid" in summary
    assert "hybrid_accuracy_by_kind" in m and isinstance(m["rm_meets_targets"], bool)
    assert "| pair kind |" in capsys.readouterr().out


def test_keep_layers_cuts_the_backbone_for_training_and_loading(tiny_policy, tmp_path):
    from datasets import Dataset
    from omegaconf import OmegaConf

    from halluguard.config import RootConfig
    from halluguard.reward.train import train_reward_model

    for finetune in ("lora", "full"):
        cfg = OmegaConf.structured(RootConfig)
        cfg.model.name_or_path = str(tiny_policy)
        t = cfg.reward.train
        t.max_steps, t.batch_size, t.max_length, t.keep_layers, t.finetune = 1, 4, 96, 1, finetune
        out = tmp_path / finetune
        train_reward_model(Dataset.from_list(_pairs()), str(tiny_policy), cfg.model, cfg.reward, out)
        assert json.loads((out / "reward_model.json").read_text())["keep_layers"] == 1
        scorer = RewardModelScorer.load(out)
        assert len(scorer.model.model.layers) == 1 and scorer.model.config.num_hidden_layers == 1
        assert scorer.score([[{"role": "user", "content": "q?"}]], ["an answer"], None).shape == (1,)


def test_keep_layers_beyond_the_backbone_keeps_all_and_negative_is_an_error(tiny_policy, caplog):
    from transformers import AutoModelForSequenceClassification

    from halluguard.reward.scoring import keep_first_layers

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_policy), num_labels=1)
    with caplog.at_level("WARNING", logger="halluguard.reward"):
        assert len(keep_first_layers(model, 5).model.layers) == 2
    assert "has 2 blocks: keeping all" in caplog.text
    with pytest.raises(HalluguardError, match=r"reward.train.keep_layers must be >= 0"):
        keep_first_layers(model, -1)


def test_accuracy_table_marks_targets_and_shows_all_three_scores():
    from halluguard.reward.evaluate import accuracy_table, meets_targets

    def acc(v):
        return {"n": 10, "accuracy": v}

    result = {"rm": {"ook_refusal_vs_fabrication": acc(0.95), "ik_grounded_vs_refusal": acc(0.7), "all": acc(0.8)},
              "rules": {"ook_refusal_vs_fabrication": acc(1.0), "ik_grounded_vs_refusal": acc(0.9), "all": acc(0.95)},
              "hybrid": {"ook_refusal_vs_fabrication": acc(1.0), "ik_grounded_vs_refusal": acc(0.85), "all": acc(0.9)}}
    table = accuracy_table(result)
    assert "| ook_refusal_vs_fabrication | 10 | 0.90 | 0.950 ✓ | 1.000 | 1.000 |" in table
    assert "| ik_grounded_vs_refusal | 10 | 0.80 | 0.700 ✗ | 0.900 | 0.850 |" in table
    assert not meets_targets(result["rm"]) and meets_targets(result["hybrid"])


def test_init_from_sft_without_the_sft_stage_says_to_run_it(compose, tiny_overrides):
    from halluguard.stages import build, reward

    overrides = [*tiny_overrides, "builder.split.heldout_fraction=0.5", "reward.train.init=sft"]
    build.run(compose(overrides, stage="build"))
    with pytest.raises(HalluguardError, match="halluguard sft"):
        reward.run(compose(overrides, stage="reward"))
