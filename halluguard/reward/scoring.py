"""One scoring interface for the whole project: ``Scorer.score(prompts, responses, meta) -> tensor``.

Arguments (one entry per response, all lists of the same length):

* ``prompts`` - the conversation the response answers: a list of ``{"role", "content"}`` messages
  (system + user, as in the build's ``prompt`` column), without the response.
* ``responses`` - the assistant's text.
* ``meta`` - a dict per response:
    - ``"label"``: ``"ik"`` (the evidence shown holds the answer) or ``"ook"`` (it does not);
    - ``"evidence"``: the evidence text shown to the model (passages joined by newlines);
    - ``"answers"``: gold answers (list of strings, may be empty).
  The reward model ignores ``meta``; the rule terms need it.

Returns a float32 CPU tensor of shape ``(len(responses),)``: higher is better.

Implementations: :class:`~halluguard.reward.rules.RuleScorer` (rule terms only),
:class:`RewardModelScorer` (trained reward model, normalised ``(raw - mean) / std`` with the
mean/std saved beside it) and :class:`HybridScorer` (``rm_weight * RM + rule terms``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from halluguard.errors import HalluguardError

NORMALISATION = "normalisation.json"
INFO = "reward_model.json"
TRUNCATE_HEAD = 16  # prompt tokens kept at the start when the middle of a long prompt is cut


class Scorer(Protocol):
    name: str

    def score(self, prompts: Sequence[list[dict]], responses: Sequence[str], meta: Sequence[dict]) -> "Any":
        """One float32 score per response (see the module docstring)."""


# ---------------------------------------------------------------- tokenization shared by training and scoring

def encode(tokenizer, prompt: list[dict], response: str, max_length: int, overlong: str = "truncate"):
    """Token ids of ``prompt`` + the assistant ``response`` in the chat format, and what happened.

    Returns ``(ids, status)`` with status ``ok``, ``truncated`` (the prompt's middle was cut: its first
    ``TRUNCATE_HEAD`` tokens and its end, which holds the question and the assistant header, stay) or
    ``dropped`` (``overlong="drop"``, or the response alone leaves no room for the prompt); ids is None
    when dropped.
    """
    messages = list(prompt) + [{"role": "assistant", "content": response}]
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        head = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    else:
        head = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt) + "\n\nAssistant:"
        full = f"{head} {response}{tokenizer.eos_token or ''}"
    if not full.startswith(head):
        head = ""
    p_ids = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    r_ids = tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
    if len(p_ids) + len(r_ids) <= max_length:
        return p_ids + r_ids, "ok"
    budget = max_length - len(r_ids)
    if overlong == "drop" or budget < 2 * TRUNCATE_HEAD:
        return None, "dropped"
    return p_ids[:TRUNCATE_HEAD] + p_ids[-(budget - TRUNCATE_HEAD):] + r_ids, "truncated"


def check_tokenizer_match(rm_tokenizer, policy_tokenizer, where: str = "") -> None:
    """Raise unless the reward model reads the policy's tokens the same way (vocabulary, eos, chat format)."""
    problems = []
    if rm_tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        a, b = rm_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
        problems.append(f"vocabularies differ ({len(a)} vs {len(b)} tokens, {len(set(a.items()) ^ set(b.items()))} "
                        "entries not shared)")
    if rm_tokenizer.eos_token != policy_tokenizer.eos_token:
        problems.append(f"eos {rm_tokenizer.eos_token!r} vs {policy_tokenizer.eos_token!r}")
    if (getattr(rm_tokenizer, "chat_template", None) or "") != (getattr(policy_tokenizer, "chat_template", None) or ""):
        problems.append("chat templates differ")
    if problems:
        raise HalluguardError(
            f"the reward model{(' at ' + where) if where else ''} does not use the policy's tokenizer: "
            + "; ".join(problems) + ". Train the reward model on the policy's backbone (`halluguard reward` "
            "with the same model.name_or_path), or point model.name_or_path at the policy it was trained for")


# ---------------------------------------------------------------- reward model

def keep_first_layers(model, keep: int, key: str = "reward.train.keep_layers"):
    """Cut a decoder backbone to its first ``keep`` blocks (0 = all) and return the model.

    Why: a reward model that judges whether a response fits the evidence leans on lexical overlap
    features of the lower blocks; cutting the upper two thirds makes every forward and backward that
    much cheaper on a CPU, and it still reads the policy's own tokens.
    """
    if not keep:
        return model
    inner = getattr(model, "model", None) or getattr(model, "base_model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise HalluguardError(f"{key}={keep}: cannot find the transformer blocks of {type(model).__name__} "
                              "(expected model.model.layers); set it to 0")
    if keep < 0:
        raise HalluguardError(f"{key} must be >= 0 (0 keeps every block), got {keep}")
    if keep >= len(layers):  # a smaller model than the default was sized for: nothing to cut
        import logging

        logging.getLogger("halluguard.reward").warning("%s=%d but the backbone has %d blocks: keeping all of them",
                                                       key, keep, len(layers))
        return model
    inner.layers = layers[:keep]
    model.config.num_hidden_layers = keep
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:keep]
    return model


class RewardModelScorer:
    """A sequence-score model (``num_labels=1``) and its normalisation: ``(raw - mean) / std``."""

    name = "rm"

    def __init__(self, model, tokenizer, mean: float = 0.0, std: float = 1.0, max_length: int = 1024,
                 batch_size: int = 16, device: str = "cpu"):
        if not std > 0:
            raise HalluguardError(f"reward normalisation std must be positive, got {std}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean, self.std = float(mean), float(std)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device
        self.stats = {"scored": 0, "truncated": 0, "seconds": 0.0}

    # -- loading
    @classmethod
    def load(cls, folder: Path, policy_tokenizer=None, batch_size: int = 16, device: str = "cpu",
             base_source: Optional[str] = None) -> "RewardModelScorer":
        """Load a reward model saved by :func:`halluguard.reward.train.train_reward_model`.

        ``policy_tokenizer``: when given, the reward model's tokenizer must match it (else a clear error).
        ``base_source``: the backbone folder for an adapter (default: the one recorded at training).
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(folder)
        info_path, norm_path = folder / INFO, folder / NORMALISATION
        for path in (info_path, norm_path):
            if not path.is_file():
                raise HalluguardError(f"{folder} is not a reward model saved by `halluguard reward`: {path.name} is "
                                      "missing (re-run `halluguard reward`)")
        info = json.loads(info_path.read_text())
        norm = json.loads(norm_path.read_text())
        weights = folder / info["weights"]
        tokenizer = AutoTokenizer.from_pretrained(str(weights))
        if policy_tokenizer is not None:
            check_tokenizer_match(tokenizer, policy_tokenizer, str(folder))
        if info["finetune"] == "lora":
            from peft import PeftModel

            base = base_source or info["base"]
            if not Path(base).exists() and base.startswith(("/", "~", ".")):
                raise HalluguardError(f"the reward model's backbone {base} is gone; pass the policy folder it was "
                                      "trained on, or re-run `halluguard reward`")
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
            keep_first_layers(model, int(info.get("keep_layers") or 0))
            if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
                model.resize_token_embeddings(len(tokenizer))
            model = PeftModel.from_pretrained(model, str(weights)).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(weights), num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device)
        return cls(model, tokenizer, norm["mean"], norm["std"], max_length=info["max_length"],
                   batch_size=batch_size, device=device)

    # -- scoring
    def raw_scores(self, prompts: Sequence[list[dict]], responses: Sequence[str]):
        """Un-normalised model outputs (float32 tensor)."""
        import torch

        if len(prompts) != len(responses):
            raise HalluguardError(f"score(): {len(responses)} responses but {len(prompts)} prompts")
        start = time.perf_counter()
        encoded = []
        for prompt, response in zip(prompts, responses):
            ids, status = encode(self.tokenizer, prompt, "" if response is None else str(response), self.max_length)
            if ids is None:  # the response alone is longer than max_length: keep its start and the prompt's end
                full, _ = encode(self.tokenizer, prompt, str(response), 10**9)
                ids, status = full[: self.max_length], "truncated"
            self.stats["truncated"] += status == "truncated"
            encoded.append(ids)
        out = torch.empty(len(encoded), dtype=torch.float32)
        pad = self.tokenizer.pad_token_id
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # right padding, as the reward trainer's collator pads
                    ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, :len(encoded[i])] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out[idx] = logits[:, 0].float().cpu()
        self.stats["scored"] += len(encoded)
        self.stats["seconds"] += time.perf_counter() - start
        return out

    def score(self, prompts, responses, meta=None):
        return (self.raw_scores(prompts, responses) - self.mean) / self.std


# ---------------------------------------------------------------- hybrid

class HybridScorer:
    """``rm_weight * RewardModelScorer + RuleScorer`` (rule weights from ``reward.rules``)."""

    name = "hybrid"

    def __init__(self, rm: Optional[RewardModelScorer], rules, rm_weight: float = 1.0):
        if rm is None and rm_weight != 0:
            raise HalluguardError("the hybrid reward needs a reward model (or reward.rm_weight=0)")
        self.rm, self.rules, self.rm_weight = rm, rules, float(rm_weight)

    def score(self, prompts, responses, meta):
        total = self.rules.score(prompts, responses, meta)
        if self.rm is not None and self.rm_weight != 0:
            total = total + self.rm_weight * self.rm.score(prompts, responses, meta)
        return total.float()


def make_scorer(reward_cfg, reward_dir: Optional[Path] = None, policy_tokenizer=None, detector=None):
    """The scorer ``reward.scorer`` names, loading the reward model from ``reward_dir/reward_model``."""
    from halluguard.refusal import RefusalDetector
    from halluguard.reward.rules import RuleScorer

    detector = detector or RefusalDetector(threshold=reward_cfg.refusal_threshold)
    rules = RuleScorer(reward_cfg.rules, detector)
    if reward_cfg.scorer == "rules":
        return rules
    if reward_dir is None:
        raise HalluguardError(f"reward.scorer={reward_cfg.scorer} needs a trained reward model: run `halluguard reward`")
    rm = RewardModelScorer.load(Path(reward_dir) / "reward_model", policy_tokenizer=policy_tokenizer,
                                batch_size=reward_cfg.eval_batch_size)
    if reward_cfg.scorer == "rm":
        return rm
    return HybridScorer(rm, rules, reward_cfg.rm_weight)
