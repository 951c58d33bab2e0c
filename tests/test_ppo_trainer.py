"""halluguard's PPO loop on a tiny local model with a rule reward: it learns, the KL holds, it resumes.

The reward: 1 when a response starts with one given token's text (the token the untrained model
already picks ~10% of the time at the first position), else 0. The model: the ``tiny_policy`` fixture
with an untied output layer of larger random weights. The fixture's own tied embeddings give almost
uniform next-token distributions (entropy ~ log V) that LoRA on the attention cannot sharpen; the
larger output layer makes them as peaked as a real model's (first-token entropy ~4 nats).
"""

import sys

import pytest
import torch
from omegaconf import OmegaConf

from halluguard.config import LoraSettings, ModelConfig, PpoConfig
from halluguard.errors import HalluguardError
from halluguard.ppo.checkpoint import list_checkpoints
from halluguard.ppo.policy import load_start_policy
from halluguard.ppo.prompts import build_prompt_set
from halluguard.ppo.rollout import left_pad
from halluguard.ppo.trainer import PpoTrainer

QUESTIONS = [("How long does a refund take?", "ik"), ("How much is the Orbit plan each month?", "ik"),
             ("Who won the 1998 football World Cup?", "ook"), ("What is the phone number of the mayor?", "ook")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from threads, and on a shared 2-core machine they spin against each
    other: 20 steps took 1.6 s on one thread and 24 s on two here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sharp_policy(tiny_policy, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_policy))
    model.config.tie_word_embeddings = False
    torch.manual_seed(0)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    torch.nn.init.normal_(head.weight, std=0.3)
    model.lm_head = head
    folder = tmp_path_factory.mktemp("sharp-policy")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_policy)).save_pretrained(folder)
    return folder


def settings(**overrides):
    base = PpoConfig(start="base", steps=30, batch_size=8, mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3,
                     max_new_tokens=4, save_every=10, probe_every=10, probe_prompts=2, resume=False,
                     lora=LoraSettings(r=8, alpha=16, dropout=0.0))
    cfg = OmegaConf.structured(base)
    cfg.kl.beta, cfg.kl.adaptive, cfg.kl.target, cfg.kl.horizon, cfg.kl.budget = 0.05, True, 2.0, 64, 20.0
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def load(folder, s):
    return load_start_policy(str(folder), OmegaConf.structured(ModelConfig(name_or_path=str(folder))), s.lora, seed=0)


def prompt_set(tokenizer, max_prompt_length=64):
    messages = [[{"role": "user", "content": q}] for q, _ in QUESTIONS]
    meta = [{"label": label, "evidence": "", "answers": []} for _, label in QUESTIONS]
    return build_prompt_set(messages, meta, tokenizer, max_prompt_length, case_ids=[f"q{i}" for i in range(4)],
                            questions=[q for q, _ in QUESTIONS])


class StartsWith:
    """Rule reward: 1 for a response that starts with ``word``."""

    name = "starts-with"

    def __init__(self, word):
        self.word = word

    def score(self, prompts, responses, meta):
        return torch.tensor([1.0 if r.startswith(self.word) else 0.0 for r in responses])


@pytest.fixture(scope="module")
def target_word(sharp_policy):
    """The alphanumeric token the untrained model most often puts first (about 10% of samples)."""
    policy, tokenizer = load(sharp_policy, settings())
    prompts = prompt_set(tokenizer)
    ids, mask = left_pad(prompts.token_ids, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    probs = logits[:, -1].softmax(-1).mean(0)
    best = max((float(probs[i]), i) for i in range(len(probs)) if tokenizer.decode([i]).strip().isalnum())
    assert best[0] > 0.05
    return tokenizer.decode([best[1]]).strip()


def run(folder, work, word, detector=None, on_step_end=None, **overrides):
    s = settings(**overrides)
    policy, tokenizer = load(folder, s)
    trainer = PpoTrainer(policy, tokenizer, StartsWith(word), prompt_set(tokenizer), s, work, seed=0,
                         detector=detector, on_step_end=on_step_end, progress=False)
    return trainer, trainer.train()


def mean(values):
    values = list(values)
    return sum(values) / len(values)


# ---------------------------------------------------------------- log-probs

def test_logprobs_are_those_of_the_distribution_generate_sampled_from(sharp_policy):
    from halluguard.ppo.logprobs import (
        policy_logprobs_and_values,
        reference_logprobs,
        token_logprobs,
    )
    from halluguard.ppo.rollout import (
        Rollout,
        generation_config,
        mask_through_first_eos,
    )
    from halluguard.ppo.value_head import PolicyWithValue

    policy, tokenizer = load(sharp_policy, settings())
    with torch.no_grad():  # move the adapter away from zero so policy and reference differ
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    prompts = prompt_set(tokenizer)
    q_ids, q_mask = left_pad(prompts.token_ids, tokenizer.pad_token_id)  # rows of different lengths
    torch.manual_seed(0)
    config = generation_config(tokenizer, 6, temperature=0.7)
    config.output_logits, config.return_dict_in_generate = True, True
    out = policy.generate(input_ids=q_ids, attention_mask=q_mask, generation_config=config)
    response = out.sequences[:, q_ids.shape[1]:]
    mask = mask_through_first_eos(response, tokenizer.eos_token_id)
    rollout = Rollout(q_ids, q_mask, response, mask)
    model = PolicyWithValue(policy)
    old = policy_logprobs_and_values(model, rollout, temperature=0.7, chunk_size=3)
    sampled_from = token_logprobs(torch.stack(out.logits, 1).float(), response, 0.7) * mask
    assert torch.allclose(old.logprobs, sampled_from, atol=1e-4)
    assert (old.values == 0).all()  # zero-initialised value head
    ref = reference_logprobs(model, rollout, temperature=0.7, chunk_size=2)
    with policy.disable_adapter(), torch.no_grad():
        ids, attention = rollout.model_inputs()
        logits = policy(input_ids=ids, attention_mask=attention,
                        position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).logits
    base = token_logprobs(logits[:, q_ids.shape[1] - 1:-1], response, 0.7) * mask
    assert torch.allclose(ref, base, atol=1e-4)
    assert (ref - old.logprobs).abs().max() > 0.1


# ---------------------------------------------------------------- learning and KL

def test_reward_rises_while_kl_stays_under_the_budget(sharp_policy, target_word, tmp_path):
    from halluguard.refusal import RefusalDetector

    _, result = run(sharp_policy, tmp_path / "work", target_word, detector=RefusalDetector())
    rows = result.rows
    scores = [r["score"] for r in rows]
    assert len(rows) == 31 and rows[0]["kl"] == 0.0  # row 0 is the reference itself
    assert mean(scores[-5:]) >= mean(scores[:5]) + 0.4, scores
    assert not result.stopped_early and result.stop_reason == "completed" and result.chosen_step == 30
    assert max(r["kl"] for r in rows) <= 20.0
    assert rows[-1]["beta"] != rows[0]["beta"]  # the adaptive controller moved
    for key in ("reward", "kl_k1", "kl_k3", "entropy", "clip_frac", "approx_kl", "policy_loss", "value_loss",
                "response_length", "refusal_rate_ook", "refusal_rate_ik", "time_generate", "time_score",
                "time_policy_forward", "time_ref_forward", "time_update"):
        assert rows[5][key] is not None, key
    assert "policy_loss" not in rows[-1]  # the last row measures the final policy, no update
    assert sorted({p["step"] for p in result.probes}) == [0, 10, 20, 30]
    assert {p["label"] for p in result.probes} == {"ook", "ik"}


def test_a_huge_beta_keeps_the_policy_at_the_reference(sharp_policy, target_word, tmp_path):
    _, result = run(sharp_policy, tmp_path / "work", target_word, steps=20, kl__beta=1000.0, kl__adaptive=False)
    rows = result.rows
    assert mean(r["kl_k3"] for r in rows) < 0.3, [r["kl_k3"] for r in rows]
    scores = [r["score"] for r in rows]
    assert mean(scores[-5:]) < mean(scores[:5]) + 0.3


def test_the_kl_budget_stops_training_and_keeps_the_last_checkpoint_within_it(sharp_policy, target_word, tmp_path):
    from safetensors.torch import load_file

    trainer, result = run(sharp_policy, tmp_path / "work", target_word, save_every=2, kl__adaptive=False,
                          kl__beta=0.01, kl__budget=0.5)
    rows = result.rows
    last = rows[-1]
    assert result.stopped_early and result.stop_reason == "kl_budget"
    assert last["step"] == result.last_step < 30 and last["kl"] > 0.5 and "stop" in last
    assert "policy_loss" not in last  # no update after the budget was passed
    assert all(r["kl"] <= 0.5 for r in rows[:-1])
    saved = [n for n, _ in list_checkpoints(tmp_path / "work" / "checkpoints")]
    assert result.chosen_step == max(n for n in saved if n < result.last_step)
    assert result.chosen_step % 2 == 0
    # The trainer leaves the chosen checkpoint's weights in the model.
    saved_adapter = load_file(str(result.chosen_checkpoint / "adapter" / "adapter_model.safetensors"))
    live = {k: v for k, v in trainer.unwrapped.policy.state_dict().items() if "lora_" in k}
    assert len(saved_adapter) == len(live)
    for key, value in saved_adapter.items():
        match = [v for k, v in live.items() if k.replace(".default", "") == key]
        assert match and torch.equal(match[0], value), key
    assert any(p["step"] == result.chosen_step for p in result.probes)


# ---------------------------------------------------------------- checkpoints and resume

class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_result(sharp_policy, target_word, tmp_path):
    from safetensors.torch import load_file

    common = {"steps": 5, "save_every": 2, "probe_every": 2}
    _, whole = run(sharp_policy, tmp_path / "whole", target_word, **common)

    def stop_at_3(step, row):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(sharp_policy, tmp_path / "cut", target_word, on_step_end=stop_at_3, **common)
    assert [n for n, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [0, 2, 4]
    # A changed setting that alters the computation is refused, not silently mixed in.
    with pytest.raises(HalluguardError, match=r"ppo\.learning_rate"):
        run(sharp_policy, tmp_path / "cut", target_word, resume=True, learning_rate=5e-3, **common)
    _, resumed = run(sharp_policy, tmp_path / "cut", target_word, resume=True, **common)
    assert resumed.resumed_from == 4 and whole.resumed_from is None

    a = load_file(str(whole.chosen_checkpoint / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.chosen_checkpoint / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # it trained
    va = torch.load(whole.chosen_checkpoint / "value_head.pt")
    vb = torch.load(resumed.chosen_checkpoint / "value_head.pt")
    assert all(torch.allclose(va[k], vb[k], atol=1e-6) for k in va)

    def comparable(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]

    assert len(resumed.rows) == 6 and [r["step"] for r in resumed.rows] == list(range(6))
    for x, y in zip(comparable(whole.rows), comparable(resumed.rows)):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=1e-5), key
    assert [p["completion"] for p in whole.probes] == [p["completion"] for p in resumed.probes]


def test_checkpoint_adapters_load_with_peft(sharp_policy, target_word, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer, result = run(sharp_policy, tmp_path / "work", target_word, steps=2, save_every=1)
    assert [n for n, _ in list_checkpoints(tmp_path / "work" / "checkpoints")] == [0, 1, 2]
    base = AutoModelForCausalLM.from_pretrained(str(sharp_policy))
    loaded = PeftModel.from_pretrained(base, str(result.chosen_checkpoint / "adapter"))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = trainer.unwrapped.policy(input_ids=ids).logits
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)


# ---------------------------------------------------------------- bad input, before training

def test_overlong_prompts_fail_before_training_naming_the_key(sharp_policy):
    _, tokenizer = load(sharp_policy, settings())
    with pytest.raises(HalluguardError, match=r"4 of 4 PPO prompts are longer than ppo\.max_prompt_length=5"):
        prompt_set(tokenizer, max_prompt_length=5)
    messages = [[{"role": "user", "content": q}] for q, _ in QUESTIONS]
    with pytest.raises(HalluguardError, match="context window of 20 tokens"):
        build_prompt_set(messages, [{"label": "ik"}] * 4, tokenizer, 64, max_new_tokens=16, context_window=20)


def test_a_missing_report_to_package_fails_before_training(sharp_policy, target_word, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(HalluguardError, match="ppo.report_to includes 'wandb'.*pip install wandb"):
        run(sharp_policy, tmp_path / "work", target_word, report_to=["wandb"])
    assert not (tmp_path / "work").exists()


def test_with_top_layers_the_frozen_trunk_is_computed_once_and_changes_nothing(sharp_policy, target_word,
                                                                               tmp_path):
    from halluguard.ppo.logprobs import policy_logprobs_and_values, reference_logprobs
    from halluguard.ppo.rollout import sample_responses
    from halluguard.ppo.value_head import PolicyWithValue

    s = settings(lora__top_layers=1)
    policy, tokenizer = load(sharp_policy, s)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    model = PolicyWithValue(policy)
    assert model.trunk_layers == 1  # block 0 has no adapter: its output is shared
    prompts = prompt_set(tokenizer)
    torch.manual_seed(0)
    rollout = sample_responses(policy, tokenizer, prompts.token_ids, 5)
    old = policy_logprobs_and_values(model, rollout, 1.0, chunk_size=3)
    assert rollout.trunk_hidden is not None and rollout.trunk_hidden.shape[:2] == (4, rollout.model_inputs()[0].shape[1])
    ref = reference_logprobs(model, rollout, 1.0, chunk_size=2)
    part = rollout.select([3, 1])
    ids, mask = part.model_inputs()
    with torch.no_grad():
        split = model(ids, mask, part.response_start, part.response_width, part.trunk_hidden)
        model.trunk_layers = 0  # the plain full forward
        full = model(ids, mask, part.response_start, part.response_width)
        rollout.trunk_hidden = None
        ref_full = reference_logprobs(model, rollout, 1.0, chunk_size=4)
    real = part.response_mask.bool()
    assert torch.allclose(split[0][real], full[0][real], atol=1e-4)
    assert torch.allclose(ref, ref_full, atol=1e-4) and (ref - old.logprobs).abs().max() > 0.1
    _, result = run(sharp_policy, tmp_path / "work", target_word, steps=3, lora__top_layers=1)
    assert result.rows[-1]["kl_k3"] > 0  # it trains through the top block alone
