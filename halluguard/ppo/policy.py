"""The policy PPO trains: the start model (SFT reference or base) plus a fresh LoRA adapter.

The reference is the same object with the adapter disabled, so there is one copy of the weights.
Training is in float32 (LoRA's small updates vanish in bfloat16 on CPU).
"""

from __future__ import annotations

from halluguard.errors import HalluguardError


def start_source(cfg) -> str:
    """The folder (or hub id) PPO starts from and holds its KL to: ``ppo.start=sft`` or ``base``."""
    from halluguard.config import resolve_cache_dir
    from halluguard.models import resolve_policy_source

    if cfg.ppo.start == "base":
        return resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    try:
        from halluguard.sft import reference_source
    except ImportError as exc:  # pragma: no cover - the sft module ships with the project
        raise HalluguardError(f"ppo.start=sft needs halluguard.sft ({exc}); use ppo.start=base") from None
    return reference_source(cfg)


def load_start_policy(source: str, model_cfg, lora_settings, seed: int = 0, revision=None):
    """``(peft_model, tokenizer)``: the start model with PPO's adapter (``ppo.lora``), ready to sample."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from halluguard.lora import lora_config
    from halluguard.models import _load_failure, configure_padding, load_tokenizer

    tokenizer = load_tokenizer(source, model_cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=torch.float32,
                                                     trust_remote_code=bool(model_cfg.trust_remote_code))
    except (OSError, ValueError) as exc:
        raise HalluguardError(_load_failure("model", source, exc)) from None
    configure_padding(model, tokenizer, model_cfg.pad_token)
    torch.manual_seed(seed)  # the adapter's random A matrices
    policy = get_peft_model(model, lora_config(lora_settings, "CAUSAL_LM", model, key="ppo.lora"))
    policy.eval()  # dropout off for good: PPO's ratio must compare the same function it sampled from
    return policy, tokenizer
