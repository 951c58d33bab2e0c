"""DPO and GRPO baselines on the tiny model: a couple of steps each, adapters saved and loadable,
pairs counted, the KL term enforced, and the scorer fed each completion's own prompt meta."""

import pytest
import torch

from halluguard.errors import HalluguardError

from conftest import TINY_PASSAGES


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cfg(tiny_policy):
    from omegaconf import OmegaConf

    from halluguard.config import RootConfig

    cfg = OmegaConf.structured(RootConfig)
    cfg.model.name_or_path = str(tiny_policy)
    cfg.ppo.lora.top_layers = 1  # adapters in one block of two: the top_layers path is exercised too
    return cfg


def prompt(i: int):
    p = TINY_PASSAGES[i % len(TINY_PASSAGES)]
    return [{"role": "system", "content": "Answer only from the passages."},
            {"role": "user", "content": f"Passages:\n[1] {p['title']}\n{p['text']}\n\nQuestion: question {i}?"}]


def conv(text):
    return [{"role": "assistant", "content": text}]


def _pairs():
    rows = [{"prompt": prompt(i), "chosen": conv("Sorry, the passages do not say."),
             "rejected": conv(f"It costs {i} euros."), "label": "ook", "kind": "ook_refusal_vs_fabrication"}
            for i in range(8)]
    rows.append({**rows[0], "rejected": conv(" ")})
    rows.append({**rows[1], "rejected": rows[1]["chosen"]})
    rows.append({**rows[2], "prompt": [{"role": "user", "content": "word " * 300}]})
    return rows


def _adapter_moved(folder, base_path) -> bool:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), folder)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b, "no LoRA weights in the saved adapter"
    return any(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: non-zero means it trained


def test_dpo_trains_an_adapter_and_counts_the_pairs(cfg, tiny_policy, tmp_path):
    from datasets import Dataset

    from halluguard.baselines.dpo import train_dpo

    d = cfg.ppo.dpo
    d.max_steps, d.batch_size, d.max_length, d.learning_rate = 2, 4, 200, 1e-3
    summary = train_dpo(str(tiny_policy), cfg.model, cfg.ppo, Dataset.from_list(_pairs()), tmp_path, seed=0)
    assert summary["steps"] == 2 and summary["seconds_per_step"] > 0
    assert summary["pairs"] == {"seen": 11, "skipped_empty_side": 1, "skipped_identical": 1, "dropped_too_long": 1,
                                "kept": 8}
    logged = [h for h in summary["log_history"] if "loss" in h]
    assert len(logged) == 2 and "rewards/margins" in logged[0]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert _adapter_moved(tmp_path / "adapter", tiny_policy)


def test_dpo_beta_must_be_positive(cfg, tiny_policy, tmp_path):
    from halluguard.baselines.dpo import train_dpo

    cfg.ppo.dpo.beta = 0.0
    with pytest.raises(HalluguardError, match="ppo.dpo.beta must be > 0"):
        train_dpo(str(tiny_policy), cfg.model, cfg.ppo, _pairs(), tmp_path, seed=0)


class RecordingScorer:
    """Scores by response length (so groups have variance) and records what it was given."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses, meta):
        self.calls.append((prompts, responses, meta))
        return torch.tensor([0.1 * len(r) for r in responses], dtype=torch.float32)


def _grpo_inputs(n=4):
    prompts = [prompt(i) for i in range(n)]
    meta = [{"label": "ik" if i % 2 else "ook", "evidence": TINY_PASSAGES[i % 4]["text"], "answers": [], "row": i}
            for i in range(n)]
    return prompts, meta


def test_grpo_trains_an_adapter_and_scores_each_completion_with_its_prompt_meta(cfg, tiny_policy, tmp_path):
    from halluguard.baselines.grpo import train_grpo

    p, g = cfg.ppo, cfg.ppo.grpo
    p.batch_size, p.max_new_tokens = 2, 6
    g.max_steps, g.num_generations, g.learning_rate, g.beta = 2, 2, 1e-3, 0.05
    prompts, meta = _grpo_inputs()
    scorer = RecordingScorer()
    summary = train_grpo(str(tiny_policy), cfg.model, p, prompts, scorer, meta, tmp_path, seed=0)
    assert summary["steps"] == 2 and summary["prompts"]["seen"] == 4
    assert scorer.calls, "the scorer was never called"
    seen = 0
    for call_prompts, responses, metas in scorer.calls:
        assert len(call_prompts) == len(responses) == len(metas) == p.batch_size * g.num_generations
        for pr, m in zip(call_prompts, metas):
            assert pr == prompts[m["row"]]  # the meta is that of the completion's own prompt
            assert m["evidence"] in pr[-1]["content"]
            seen += 1
        assert all(isinstance(r, str) for r in responses)
    assert seen == 2 * p.batch_size * g.num_generations
    logged = [h for h in summary["log_history"] if "reward" in h]
    assert logged and "kl" in logged[0]  # beta > 0: TRL computes and logs the KL to the reference
    assert _adapter_moved(tmp_path / "adapter", tiny_policy)


@pytest.mark.parametrize("key, value, message", [
    ("beta", 0.0, "ppo.grpo.beta must be > 0"),
    ("beta", -0.1, "ppo.grpo.beta must be > 0"),
    ("num_generations", 1, "ppo.grpo.num_generations must be >= 2"),
])
def test_grpo_bad_settings_are_errors_before_loading(cfg, tmp_path, key, value, message):
    from halluguard.baselines.grpo import train_grpo

    cfg.ppo.grpo[key] = value
    prompts, meta = _grpo_inputs()
    with pytest.raises(HalluguardError, match=message):
        train_grpo("/nonexistent", cfg.model, cfg.ppo, prompts, RecordingScorer(), meta, tmp_path, seed=0)


def test_grpo_prompts_and_meta_must_be_parallel_and_fit(cfg, tiny_policy, tmp_path):
    from halluguard.baselines.grpo import train_grpo

    prompts, meta = _grpo_inputs()
    with pytest.raises(HalluguardError, match="4 prompts but 3 meta"):
        train_grpo(str(tiny_policy), cfg.model, cfg.ppo, prompts, RecordingScorer(), meta[:3], tmp_path, seed=0)
    cfg.ppo.max_prompt_length = 10
    with pytest.raises(HalluguardError, match="longer than ppo.max_prompt_length=10"):
        train_grpo(str(tiny_policy), cfg.model, cfg.ppo, prompts, RecordingScorer(), meta, tmp_path, seed=0)
