"""PPO's arithmetic against hand-computed values and the definitions (no model involved)."""

import math

import pytest
import torch

from halluguard.ppo.advantages import gae, kl_penalised_rewards, last_token_index
from halluguard.ppo.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k3,
    kl_per_token,
    make_kl_controller,
    over_budget,
)
from halluguard.ppo.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
)
from halluguard.ppo.masked import masked_mean, masked_whiten
from halluguard.errors import HalluguardError
from halluguard.ppo.prompts import PromptSet
from halluguard.ppo.rollout import Rollout, left_pad, mask_through_first_eos

# ---------------------------------------------------------------- GAE

def test_gae_and_returns_match_a_hand_computed_example_with_masks():
    # Row 0: three real tokens, score 1 at the end. Row 1: two real tokens; position 2 is padding whose
    # reward (99) and value (42) must not leak in.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 42.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # Row 0, gamma * lam = 0.45:
    #   t=2: delta = 1 - 0.7 = 0.3                    A = 0.3
    #   t=1: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03       A = 0.03 + 0.45 * 0.3 = 0.165
    #   t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04       A = 0.04 + 0.45 * 0.165 = 0.11425
    # Row 1 (terminal after t=1):
    #   t=1: delta = 2 + 0 - 0.5 = 1.5                A = 1.5
    #   t=0: delta = 0 + 0.9 * 0.5 - 1.0 = -0.55      A = -0.55 + 0.45 * 1.5 = 0.125
    expected_adv = torch.tensor([[0.11425, 0.165, 0.3], [0.125, 1.5, 0.0]])
    expected_ret = torch.tensor([[0.61425, 0.765, 1.0], [1.125, 2.0, 0.0]])  # A + V on real tokens
    assert torch.allclose(adv, expected_adv, atol=1e-6)
    assert torch.allclose(ret, expected_ret, atol=1e-6)


def test_gae_with_lambda_one_and_gamma_one_gives_monte_carlo_returns():
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, torch.tensor([[1.2, 1.1, 1.3, 1.0]]), atol=1e-6)  # reward-to-go
    assert torch.allclose(adv, ret - values, atol=1e-6)


def test_rewards_put_the_score_on_the_last_real_token_and_the_kl_penalty_everywhere():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.4, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = kl_penalised_rewards(torch.tensor([2.0, -1.0]), kl, mask, beta=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 2.0], [-0.25, -0.2 - 1.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)
    assert last_token_index(mask).tolist() == [2, 1]


def test_whitening_uses_only_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    white = masked_whiten(x, mask)
    real = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(white[mask.bool()], (real - real.mean()) / real.std(), atol=1e-5)
    assert white[1, 1] == 0 and white[1, 2] == 0
    assert masked_mean(x, mask) == pytest.approx(2.5)


# ---------------------------------------------------------------- losses

def test_clipped_policy_loss_matches_hand_computed_values_and_gradients():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 3.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.0]])
    logprobs = (old + ratios.log()).requires_grad_()
    advantages = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the fourth token is padding
    out = clipped_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped: ratio 1.5 > 1.2 with A > 0)
    # token 1: max(-0.5, -0.8) = -0.5 (unclipped: a ratio below 1 - eps is not clipped when A > 0)
    # token 2: max(1.1, 1.1) = 1.1 (inside the range)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(1 / 3)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert out.approx_kl.item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    out.loss.backward()
    # d/dlogp of -A * ratio is -A * ratio; the clipped token and the padding get no gradient.
    assert torch.allclose(logprobs.grad, torch.tensor([[0.0, -0.5 / 3, 1.1 / 3, 0.0]]), atol=1e-6)


def test_clipped_value_loss_matches_hand_computed_values():
    values = torch.tensor([[1.0, 0.0, 9.0]])
    old = torch.tensor([[0.5, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 0.4, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = clipped_value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 0: clipped value 0.7; max((1 - 2)^2, (0.7 - 2)^2) = 1.69 (clipped term larger)
    # token 1: clipped value 0.3; max((0 - 0.4)^2, (0.3 - 0.4)^2) = 0.16
    assert out.loss.item() == pytest.approx(0.5 * (1.69 + 0.16) / 2, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(0.5)


def test_entropy_of_uniform_and_one_hot_distributions():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    ent = entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- KL

def _categoricals():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    return p, q


def test_k1_and_k3_have_the_exact_kl_as_their_expectation():
    p, q = _categoricals()
    exact = float((p * (p / q).log()).sum())
    logp, logq = p.log(), q.log()
    # Expectation under p by enumerating the outcomes (no sampling noise).
    assert float((p * kl_k1(logp, logq)).sum()) == pytest.approx(exact, rel=1e-12)
    assert float((p * kl_k3(logp, logq)).sum()) == pytest.approx(exact, rel=1e-12)
    # Definitions, per outcome.
    r = q / p
    assert torch.allclose(kl_k1(logp, logq), logp - logq)
    assert torch.allclose(kl_k3(logp, logq), (r - 1) - r.log())
    assert (kl_k3(logp, logq) >= 0).all() and (kl_k1(logp, logq) < 0).any()
    assert torch.equal(kl_per_token(logp, logq, "k3"), kl_k3(logp, logq))
    with pytest.raises(ValueError, match="ppo.kl.penalty"):
        kl_per_token(logp, logq, "k2")


def test_k3_has_lower_variance_than_k1_when_policy_and_reference_are_close():
    p = torch.tensor([0.26, 0.24, 0.25, 0.25], dtype=torch.float64)
    q = torch.full((4,), 0.25, dtype=torch.float64)
    k1, k3 = kl_k1(p.log(), q.log()), kl_k3(p.log(), q.log())
    var = lambda k: float((p * k ** 2).sum() - (p * k).sum() ** 2)
    assert var(k3) < var(k1) / 100


def test_adaptive_controller_follows_the_ziegler_update_rule():
    ctl = AdaptiveKLController(beta=0.1, target=1.0, horizon=100)
    ctl.update(current_kl=1.5, n_steps=10)   # error clip(0.5) = 0.2 -> beta * (1 + 0.2 * 10 / 100)
    assert ctl.beta == pytest.approx(0.1 * 1.02)
    ctl.update(current_kl=0.9, n_steps=10)   # error -0.1 -> * (1 - 0.01)
    assert ctl.beta == pytest.approx(0.1 * 1.02 * 0.99)
    ctl.update(current_kl=0.0, n_steps=100)  # error clipped at -0.2 -> * 0.8
    assert ctl.beta == pytest.approx(0.1 * 1.02 * 0.99 * 0.8)
    restored = AdaptiveKLController(beta=5.0, target=1.0, horizon=100)
    restored.load_state_dict(ctl.state_dict())
    assert restored.beta == ctl.beta


def test_fixed_controller_keeps_beta_and_the_config_picks_the_controller():
    ctl = FixedKLController(0.3)
    ctl.update(100.0, 64)
    assert ctl.beta == 0.3
    from omegaconf import OmegaConf

    from halluguard.config import KLConfig

    assert type(make_kl_controller(OmegaConf.structured(KLConfig(adaptive=True)))) is AdaptiveKLController
    assert type(make_kl_controller(OmegaConf.structured(KLConfig(adaptive=False)))) is FixedKLController


def test_budget_is_passed_strictly_above_it_and_by_nan():
    assert not over_budget(3.0, 3.0)
    assert over_budget(3.0001, 3.0)
    assert over_budget(float("nan"), 3.0)


# ---------------------------------------------------------------- rollouts and prompts

def test_response_mask_ends_at_the_first_eos_and_pads_can_be_real_tokens():
    eos, pad = 2, 0
    ids = torch.tensor([[5, 2, 0, 0], [0, 7, 2, 2], [5, 6, 7, 8]])  # row 1 sampled the pad id as a token
    mask = mask_through_first_eos(ids, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    q_ids, q_mask = left_pad([[1, 2, 3], [4]], pad)
    assert q_ids.tolist() == [[1, 2, 3], [0, 0, 4]] and q_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_rollout_select_cuts_columns_that_are_padding_in_every_row():
    q_ids, q_mask = left_pad([[1, 2, 3, 4], [5], [6, 7]], 0)
    r_ids = torch.tensor([[9, 2, 0], [9, 9, 2], [2, 0, 0]])
    rollout = Rollout(q_ids, q_mask, r_ids, mask_through_first_eos(r_ids, 2), ["a", "b", "c"], [10, 11, 12])
    part = rollout.select([1, 2])
    assert part.query_ids.tolist() == [[0, 5], [6, 7]]  # two leading all-pad columns gone
    assert part.response_width == 3 and part.texts == ["b", "c"] and part.prompt_index == [11, 12]
    short = rollout.select([0, 2])
    assert short.response_width == 2 and short.response_start == 4
    ids, mask = short.model_inputs()
    assert ids.shape == (2, 6) and mask[1].tolist() == [0, 0, 1, 1, 1, 0]


def _prompt_set(labels):
    return PromptSet([[{"role": "user", "content": str(i)}] for i in range(len(labels))],
                     [[i] for i in range(len(labels))], [{"label": x} for x in labels])


def test_step_batches_are_a_function_of_seed_and_step_and_cover_every_prompt_each_epoch():
    prompts = _prompt_set(["ik", "ook"] * 5)
    seen = [i for step in range(5) for i in prompts.step_indices(seed=3, step=step, batch_size=2)]
    assert sorted(seen) == list(range(10))  # one epoch = 5 steps of 2
    assert prompts.step_indices(3, 7, 2) == prompts.step_indices(3, 7, 2)
    other_seed = [i for step in range(5) for i in prompts.step_indices(seed=4, step=step, batch_size=2)]
    assert other_seed != seen and sorted(other_seed) == list(range(10))
    # Two processes get disjoint halves of the step's prompts.
    a, b = prompts.step_indices(3, 1, 2, rank=0, world=2), prompts.step_indices(3, 1, 2, rank=1, world=2)
    assert not set(a) & set(b)


def test_balanced_batches_hold_both_kinds_and_cover_each_kind_every_epoch():
    prompts = _prompt_set(["ik"] * 6 + ["ook"] * 3 + ["ik"] * 2)  # 8 ik, 3 ook
    labels = [prompts.meta[i]["label"] for i in prompts.step_indices(1, 0, 4, balance=True)]
    assert labels == ["ik", "ook", "ik", "ook"]
    ook = [i for step in range(3) for i in prompts.step_indices(1, step, 2, balance=True) if i in (6, 7, 8)]
    assert sorted(ook) == [6, 7, 8]  # the smaller kind is walked through once in 3 steps of 1
    ik = [i for step in range(8) for i in prompts.step_indices(1, step, 2, balance=True) if i not in (6, 7, 8)]
    assert sorted(ik) == [0, 1, 2, 3, 4, 5, 9, 10]
    assert prompts.step_indices(1, 5, 4, balance=True) == prompts.step_indices(1, 5, 4, balance=True)
    odd = [prompts.meta[i]["label"] for i in prompts.step_indices(1, 0, 3, balance=True)]
    assert sorted(odd) == ["ik", "ik", "ook"]
    a, b = (prompts.step_indices(1, 2, 2, rank=r, world=2, balance=True) for r in (0, 1))
    assert not set(a) & set(b)


def test_balanced_batches_without_one_kind_are_an_error_that_says_what_to_set():
    with pytest.raises(HalluguardError, match="no ook prompt.*ppo.balance_labels=false"):
        _prompt_set(["ik"] * 4).step_indices(0, 0, 2, balance=True)


def test_probe_prompts_alternate_out_of_and_in_knowledge():
    prompts = _prompt_set(["ik"] * 6 + ["ook"] * 3)
    probes = prompts.probe_indices(4, seed=0)
    assert [prompts.meta[i]["label"] for i in probes] == ["ook", "ik", "ook", "ik"]
    assert probes == prompts.probe_indices(4, seed=0)
    assert len(prompts.probe_indices(20, seed=0)) == 9


def test_moving_average_trails_and_skips_missing_values():
    from halluguard.ppo.plots import moving_average

    assert moving_average([1.0, 3.0, None, 5.0], window=2) == [1.0, 2.0, None, 4.0]
    assert moving_average([None, None]) == [None, None]


def test_probe_refusal_change_counts_judged_rows_per_label():
    from halluguard.stages.ppo import probe_refusal_change

    rows = [{"step": 0, "label": "ook", "refusal": False}, {"step": 0, "label": "ook", "refusal": True},
            {"step": 0, "label": "ik", "refusal": False}, {"step": 4, "label": "ook", "refusal": True},
            {"step": 4, "label": "ook", "refusal": True}, {"step": 4, "label": "ik", "refusal": None},
            {"step": 4, "label": "ik", "refusal": True}, {"step": 2, "label": "ik", "refusal": True}]
    assert probe_refusal_change(rows, chosen_step=4) == {"ook": [[1, 2], [2, 2]], "ik": [[0, 1], [1, 1]]}
    assert probe_refusal_change(rows, chosen_step=3) is None  # no probes at the result step
    no_detector = [{**r, "refusal": None} for r in rows]
    assert probe_refusal_change(no_detector, chosen_step=4) is None
