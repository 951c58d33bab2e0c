"""The models an evaluation can compare, by name, and where each one's weights come from.

| name | what it is |
|---|---|
| ``reference`` | ``model.name_or_path``, untrained, with the training prompt |
| ``prompt_only`` | the reference told in its system message to say it does not know (``eval.prompt_only_system``) |
| ``sft`` | the SFT reference (``halluguard sft``; a merged model folder) |
| ``ppo``, ``dpo``, ``grpo`` | the PEFT adapter in ``<runs>/<exp>/<algo>/adapter/`` on its ``base_model_name_or_path`` |
| ``gated_<name>`` | the retrieval gate refuses (top-1 < ``eval.gate_max_top1``), otherwise ``<name>`` answers |
| ``always_refuse``, ``never_refuse`` | no model: refuse every question / answer every question |
| ``gate`` | no model: refuse exactly when the retrieval gate says out-of-knowledge |

A model whose stage output is missing raises :class:`Unavailable` from :func:`resolve_source`; the
evaluation records the reason in that model's column and goes on with the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from halluguard.errors import HalluguardError, did_you_mean

POLICIES = ("reference", "prompt_only", "sft", "ppo", "dpo", "grpo")
TRAINED = ("sft", "ppo", "dpo", "grpo")
ADAPTER_STAGES = ("ppo", "dpo", "grpo")
MODEL_FREE = ("always_refuse", "never_refuse", "gate")
GATED_PREFIX = "gated_"

DESCRIPTIONS = {
    "reference": "the start model, untrained, with the training prompt",
    "prompt_only": "the reference told in its system message to say it does not know",
    "sft": "the SFT reference (supervised refusal training)",
    "ppo": "PPO policy (LoRA adapter on the SFT reference)",
    "dpo": "DPO baseline (TRL DPOTrainer)",
    "grpo": "GRPO baseline (TRL GRPOTrainer, beta > 0)",
    "always_refuse": "no model: refuses every question",
    "never_refuse": "no model: answers every question (no answer text, so no accuracy)",
    "gate": "no model: refuses when the retrieval similarity is below eval.gate_max_top1",
}


class Unavailable(HalluguardError):
    """A model's stage output is missing: its column says why, the other models still run."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "policy" (generates), "baseline" (model-free) or "gated" (gate + a policy)
    policy: str | None = None  # the policy that generates: itself, or the gated one

    @property
    def description(self) -> str:
        if self.kind == "gated":
            return f"the retrieval gate refuses, otherwise {self.policy} answers"
        return DESCRIPTIONS[self.name]


@dataclass(frozen=True)
class PolicySource:
    """Where a policy's weights are: a ``from_pretrained`` folder or id, and an optional PEFT adapter."""

    base: str
    adapter: str | None = None
    system: str | dict | None = None  # replaces the prompt's system message (prompt_only); may be one per language
    revision: str | None = None

    def to_dict(self) -> dict:
        return {"base": self.base, "adapter": self.adapter, "system": self.system}


def known_names() -> list[str]:
    return [*POLICIES, *MODEL_FREE, *(GATED_PREFIX + p for p in POLICIES)]


def parse_spec(name: str) -> ModelSpec:
    """The spec of one configured model name; an unknown name fails with the closest known one."""
    if name in POLICIES:
        return ModelSpec(name, "policy", name)
    if name in MODEL_FREE:
        return ModelSpec(name, "baseline")
    if name.startswith(GATED_PREFIX) and name[len(GATED_PREFIX):] in POLICIES:
        return ModelSpec(name, "gated", name[len(GATED_PREFIX):])
    raise HalluguardError(f"unknown model '{name}' in eval.models{did_you_mean(name, known_names())}; "
                          f"known: {', '.join(known_names())}, or auto")


def selected_specs(cfg) -> list[ModelSpec]:
    """``eval.models`` as specs; ``auto`` expands to the always-available models, every trained
    model whose stage output exists, and the gate in front of each trained one."""
    names = [str(n) for n in cfg.eval.models]
    if not names:
        raise HalluguardError("eval.models is empty: name the models to compare, or use [auto]")
    expanded: list[str] = []
    for name in names:
        expanded += auto_names(cfg) if name == "auto" else [name]
    specs = [parse_spec(n) for n in dict.fromkeys(expanded)]
    return specs


def auto_names(cfg) -> list[str]:
    present = [name for name in TRAINED if stage_exists(cfg, name)]
    return ["reference", "prompt_only", *present, "gate", *(GATED_PREFIX + p for p in present),
            "always_refuse", "never_refuse"]


def stage_exists(cfg, name: str) -> bool:
    from halluguard.artifacts import MANIFEST
    from halluguard.config import stage_dir

    return (stage_dir(cfg, name) / MANIFEST).is_file()


def resolve_source(cfg, name: str) -> PolicySource:
    """Where policy ``name``'s weights are; raises :class:`Unavailable` with the reason when absent."""
    from halluguard.config import plain_text, resolve_cache_dir
    from halluguard.models import resolve_policy_source

    if name in ("reference", "prompt_only"):
        base = resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
        system = plain_text(cfg.eval.prompt_only_system) if name == "prompt_only" else None
        return PolicySource(base=base, system=system, revision=cfg.model.revision)
    if name == "sft":
        from halluguard.sft import (
            reference_source,  # written alongside; imported only when asked for
        )

        try:
            return PolicySource(base=reference_source(cfg))
        except HalluguardError as exc:
            raise Unavailable(str(exc)) from None
    if name in ADAPTER_STAGES:
        return adapter_source(cfg, name)
    raise HalluguardError(f"'{name}' is not a policy with weights")


def adapter_source(cfg, algo: str) -> PolicySource:
    """The PEFT adapter of the ``ppo``/``dpo``/``grpo`` stage, found through its manifest."""
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir

    folder = stage_dir(cfg, algo)
    try:
        manifest = Manifest.load(folder)
        adapter = manifest.output_path("adapter") if "adapter" in manifest.outputs else folder / "adapter"
    except HalluguardError as exc:
        raise Unavailable(f"no {algo} policy for experiment '{cfg.exp}': {exc}") from None
    config_file = Path(adapter) / "adapter_config.json"
    if not config_file.is_file():
        raise Unavailable(f"the {algo} stage output {adapter} holds no adapter_config.json; "
                          f"re-run `halluguard ppo ppo.algo={algo} exp={cfg.exp}`")
    try:
        base = json.loads(config_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise Unavailable(f"{config_file} has no readable base_model_name_or_path ({exc})") from None
    if not base:
        raise Unavailable(f"{config_file} names no base model (base_model_name_or_path is empty)")
    return PolicySource(base=str(base), adapter=str(adapter))


def load_model(source: PolicySource, cfg, device: str):
    """The policy (adapter merged in) and its left-padding tokenizer, ready for generation."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from halluguard.models import configure_padding, load_tokenizer

    hf_logging.disable_progress_bar()
    model_cfg = OmegaConf.merge(cfg.model, {"revision": source.revision, "name_or_path": source.base})
    # An adapter saved with its tokenizer (e.g. with an added pad token) speaks for the vocabulary.
    has_own_tokenizer = source.adapter and (Path(source.adapter) / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(source.adapter if has_own_tokenizer else source.base, model_cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.base, revision=source.revision,
                                                     dtype=_dtype(cfg.model.dtype),
                                                     trust_remote_code=bool(cfg.model.trust_remote_code))
    except (OSError, ValueError) as exc:
        raise HalluguardError(f"could not load the model at {source.base}: {_first_line(exc)}") from None
    configure_padding(model, tokenizer, cfg.model.pad_token)
    if source.adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise HalluguardError(f"could not load the adapter at {source.adapter} on {source.base}: "
                                  f"{_first_line(exc)}") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def _dtype(name):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(getattr(name, "value", name))]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
