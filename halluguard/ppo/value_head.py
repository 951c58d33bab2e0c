"""The policy and its value head: one forward pass through the shared backbone gives both.

Why a head on the policy's backbone rather than a separate value model: a separate critic (and the
separate reward and reference copies trl 1.12's PPOTrainer held) is where its time and memory went -
132 s and 14.7 GB per step for a 135M policy, measured here. With the value head reading the same last
hidden state as the language-model head, the rollout needs one forward pass for log-probs and values,
each update minibatch one forward and one backward, and no second set of weights exists. The reference
is the same weights with PPO's LoRA adapter switched off (``disable_adapter``), so it costs no memory
either.

The head reads the hidden state *detached*: the value loss trains the head only, never the adapter.
With a shared trunk, a batch with large returns (a big beta, an unnormalised score, early value errors)
makes the value gradient dwarf the policy's and moves the policy where no reward points; measured on the
tiny test model, beta=1000 then pushed the KL to 26 nats per response instead of holding it near 0.
The head is a linear probe of the policy's own features: enough for GAE over a few dozen tokens.

The head is a single ``Linear(hidden, 1)``, zero-initialised so the first values are 0 and the first
value loss is the plain return scale rather than noise.

Only the positions that predict response tokens go through the heads: the vocabulary projection of a
250-token prompt would cost as much as a fifth of the forward pass and most of its memory, and PPO
never reads it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.ppo")


class ValueHead(nn.Module):
    """``V(s_t)`` from the last hidden state at position ``t``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` counts them (so logits match the sampling)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PolicyWithValue(nn.Module):
    """A PEFT causal LM (PPO's adapter on the start model) and a value head on its last hidden state.

    One ``nn.Module`` so that ``accelerator.prepare`` wraps both for DDP and one optimiser sees every
    trainable parameter (the adapter and the head).

    The frozen trunk: with ``ppo.lora.top_layers=k`` the blocks below the adapted ones are the same
    function for the policy, the reference and every minibatch of the update. Their output (the input
    of the first adapted block, ``trunk_hidden``) is captured once per rollout during the policy pass;
    the reference pass and the update then run only the top ``k`` blocks from it. Counted in blocks, a
    step's forward passes drop from ``2 + ppo_epochs`` whole-model passes to ``1 + (1 + ppo_epochs) * k / n``
    (SmolLM2, n=30, k=8, 2 epochs: from 4 to 1.8); the backward already stopped at block ``n - k``.
    Used only where it is exact: the split is checked against the full forward when the model is
    wrapped, and skipped for models whose blocks differ in kind (``config.layer_types``, e.g.
    sliding-window layers).
    """

    def __init__(self, policy, value_head: ValueHead | None = None):
        super().__init__()
        self.policy = policy
        lm = policy.get_base_model()
        self.value_head = value_head or ValueHead(lm.get_output_embeddings().in_features)
        check_head_split(lm)
        self.trunk_layers = frozen_trunk_depth(policy)
        if self.trunk_layers and not self._split_is_exact():
            self.trunk_layers = 0

    # -- the backbone, whole or from the trunk
    def _body(self):
        return self.policy.get_base_model().base_model  # e.g. LlamaModel: the LoRA layers live inside it

    def _last_hidden(self, input_ids, attention_mask, trunk_hidden=None, capture_trunk: bool = False):
        """``(last hidden states (B, L, H), trunk hidden or None)``; from ``trunk_hidden`` when given."""
        body = self._body()
        positions = position_ids_for(attention_mask)
        if trunk_hidden is not None:
            every = body.layers
            body.layers = every[self.trunk_layers:]  # the same modules: parameters and DDP hooks unchanged
            try:
                out = body(inputs_embeds=trunk_hidden, attention_mask=attention_mask, position_ids=positions,
                           use_cache=False).last_hidden_state
            finally:
                body.layers = every
            return out, trunk_hidden
        captured: dict = {}

        def keep_input(_module, args, kwargs) -> None:
            captured["h"] = args[0] if args else kwargs["hidden_states"]

        handle = None
        if capture_trunk and self.trunk_layers:
            handle = body.layers[self.trunk_layers].register_forward_pre_hook(keep_input, with_kwargs=True)
        try:
            out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       use_cache=False).last_hidden_state
        finally:
            if handle is not None:
                handle.remove()
        return out, captured.get("h")

    def _heads(self, hidden, response_start: int, response_width: int):
        # Position i predicts token i + 1: the response's tokens are predicted from start - 1 onward.
        hidden = hidden[:, response_start - 1: response_start - 1 + response_width]
        logits = self.policy.get_base_model().get_output_embeddings()(hidden)
        return logits.float(), self.value_head(hidden.detach())

    # -- the three passes a step makes
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                response_width: int, trunk_hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, R, V)`` over each response token and values ``(B, R)`` of the state before it."""
        hidden, _ = self._last_hidden(input_ids, attention_mask, trunk_hidden if self.trunk_layers else None)
        return self._heads(hidden, response_start, response_width)

    @torch.no_grad()
    def rollout_pass(self, input_ids, attention_mask, response_start: int, response_width: int):
        """``(logits, values, trunk_hidden)``: the policy pass of a rollout, keeping the trunk's output."""
        hidden, trunk = self._last_hidden(input_ids, attention_mask, capture_trunk=True)
        logits, values = self._heads(hidden, response_start, response_width)
        return logits, values, trunk

    @torch.no_grad()
    def reference_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                         response_width: int, trunk_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The reference's logits over the response tokens: the same weights with PPO's adapter off."""
        with self.policy.disable_adapter():
            hidden, _ = self._last_hidden(input_ids, attention_mask, trunk_hidden if self.trunk_layers else None)
            return self._heads(hidden, response_start, response_width)[0]

    @torch.no_grad()
    def _split_is_exact(self) -> bool:
        config = self.policy.get_base_model().config
        if len(set(getattr(config, "layer_types", None) or ["same"])) > 1:
            return False
        device = self.policy.get_base_model().get_output_embeddings().weight.device
        ids = torch.arange(2, 10, device=device).reshape(2, 4) % config.vocab_size
        mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], device=device)
        try:
            full, trunk = self._last_hidden(ids, mask, capture_trunk=True)
            split, _ = self._last_hidden(ids, mask, trunk_hidden=trunk)
        except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError) as exc:
            log.info("PPO runs every block in every pass: %s cannot start from the frozen trunk (%s)",
                     type(config).__name__, exc)
            return False
        exact = trunk is not None and torch.allclose(full[mask.bool()], split[mask.bool()], atol=1e-4, rtol=1e-3)
        if not exact:
            log.info("PPO runs every block in every pass: the frozen-trunk split does not reproduce %s's forward",
                     type(config).__name__)
        return exact


def frozen_trunk_depth(policy) -> int:
    """How many leading transformer blocks hold no adapter (0 when any adapter sits outside the blocks)."""
    import re

    adapted = []
    for name, module in policy.named_modules():
        if hasattr(module, "lora_A") and len(module.lora_A):
            found = re.search(r"\.layers\.(\d+)\.", name)
            if found is None:
                return 0
            adapted.append(int(found.group(1)))
    return min(adapted) if adapted else 0


@torch.no_grad()
def check_head_split(lm) -> None:
    """Refuse a model whose logits are more than ``lm_head(last hidden state)`` (soft-capping, scaling).

    The heads above read the backbone's hidden states directly; on such a model the log-probs would
    silently differ from what ``generate`` sampled.
    """
    ids = torch.tensor([[1, 2, 3]], device=lm.get_output_embeddings().weight.device) % lm.config.vocab_size
    mask = torch.ones_like(ids)
    full = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    hidden = lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    split = lm.get_output_embeddings()(hidden).float()
    if not torch.allclose(full, split, atol=1e-4, rtol=1e-3):
        raise HalluguardError(
            f"{type(lm).__name__}'s logits are not its output layer applied to its last hidden state (logit "
            "soft-capping or scaling?); halluguard's PPO reads the hidden states directly and does not support "
            "this architecture yet: use a Llama-, Qwen- or Mistral-style model (model.name_or_path)")
