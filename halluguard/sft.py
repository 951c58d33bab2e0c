"""The SFT reference: supervised refusal training (R-Tuning's recipe) with TRL's ``SFTTrainer``.

One example per distinct training prompt: the prompt and its chosen response (a grounded answer on
in-knowledge prompts, a calibrated refusal on out-of-knowledge ones). Examples are tokenized here,
not by TRL, so that every example left out is counted and the loss mask is ours to check: labels are
-100 on the prompt, and the response with its end-of-turn token carries the loss. The prompt is
tokenized exactly as :func:`halluguard.prompting.render_prompt` renders it for generation, so the
model is trained on the token boundary it sees in use.

LoRA by default (the adapter is saved, then merged into the base so PPO loads a plain model), or
full fine-tuning. :func:`reference_source` is how later stages find that model.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.sft")

IGNORE_INDEX = -100  # label value the loss skips (transformers' convention)
COUNT_KEYS = ("rows_seen", "duplicate_prompt", "duplicate_prompt_other_chosen", "reserved_for_ppo", "empty_chosen",
              "dropped_too_long", "not_balanced", "not_sampled", "used")


@dataclass
class PreparedExamples:
    rows: list[dict]  # {"input_ids", "labels"} plus label, case_id, question_id, chosen_kind, token counts
    counts: Counter = field(default_factory=Counter)

    def by_label(self) -> dict[str, int]:
        return dict(sorted(Counter(r["label"] for r in self.rows).items()))


# ---------------------------------------------------------------- examples

def assistant_text(side) -> str:
    """The assistant's text of a TRL conversational column (a list of messages) or a plain string."""
    if isinstance(side, list):
        return "".join(str(m.get("content") or "") for m in side if m.get("role") == "assistant")
    return "" if side is None else str(side)


def tokenize_example(tokenizer, prompt: list[dict], response: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of prompt + response; labels are -100 on the prompt.

    The sequence ends with the end-of-turn (eos) token, which is trained: it is how the model learns
    to stop. Whatever the chat template writes after it (a newline) is left out.
    """
    from halluguard.prompting import render_prompt

    head = render_prompt(tokenizer, list(prompt))
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}],
                                             tokenize=False)
        if not full.startswith(head):
            raise HalluguardError("the model's chat template renders a prompt differently with and without the "
                                  "assistant's answer, so the answer cannot be told apart from the prompt for SFT; "
                                  "use a model with a standard chat template (model.name_or_path)")
        tail = full[len(head):]
    else:
        tail = f" {response}"
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos in response_ids:
        response_ids = response_ids[: response_ids.index(eos) + 1]
    else:
        response_ids = response_ids + [eos]
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def prepare_examples(rows: Sequence[dict], tokenizer, max_length: int, max_examples: int = 0,
                     seed: int = 0, balance_labels: bool = False, reserve_ik_questions: int = 0) -> PreparedExamples:
    """One tokenized example per distinct prompt of ``rows`` (build pair rows); every row left out is counted.

    Counts: ``rows_seen``; ``duplicate_prompt`` (a later pair of a prompt already taken: the ik prompts
    carry one pair per kind of rejected response, all with the same chosen answer); of those,
    ``duplicate_prompt_other_chosen`` (the duplicate's chosen response differed: the first is kept);
    ``reserved_for_ppo`` (prompts of the ``reserve_ik_questions`` in-knowledge questions, picked by seed, that
    SFT leaves for PPO, their out-of-knowledge variants included: see :func:`reserved_questions`); ``empty_chosen``; ``dropped_too_long`` (prompt + response over ``max_length`` tokens);
    ``not_balanced`` (``balance_labels``: the larger of the ik / ook sets cut, by seed, to the size of the
    smaller); ``not_sampled`` (beyond ``max_examples``); ``used``.
    """
    out = PreparedExamples(rows=[], counts=Counter({k: 0 for k in COUNT_KEYS}))
    reserved = reserved_questions(rows, reserve_ik_questions, seed)
    first_chosen: dict[str, str] = {}
    for row in rows:
        out.counts["rows_seen"] += 1
        key = json.dumps(row.get("prompt"), sort_keys=True, ensure_ascii=False)
        chosen = assistant_text(row.get("chosen"))
        if key in first_chosen:
            out.counts["duplicate_prompt"] += 1
            if " ".join(chosen.split()) != " ".join(first_chosen[key].split()):
                out.counts["duplicate_prompt_other_chosen"] += 1
            continue
        first_chosen[key] = chosen
        if row.get("question_id") in reserved:
            out.counts["reserved_for_ppo"] += 1
            continue
        if not chosen.strip():
            out.counts["empty_chosen"] += 1
            continue
        input_ids, labels = tokenize_example(tokenizer, list(row.get("prompt") or []), chosen)
        if len(input_ids) > max_length:
            out.counts["dropped_too_long"] += 1
            continue
        n_response = sum(1 for x in labels if x != IGNORE_INDEX)
        out.rows.append({
            "input_ids": input_ids, "labels": labels, "label": row.get("label") or "unlabelled",
            "case_id": row.get("case_id"), "question_id": row.get("question_id"),
            "case_kind": row.get("case_kind"), "chosen_kind": row.get("chosen_kind"),
            "prompt_tokens": len(input_ids) - n_response, "response_tokens": n_response,
        })
    if balance_labels:
        out.rows = _balanced(out, seed)
    if max_examples and len(out.rows) > max_examples:
        keep = sorted(random.Random(seed).sample(range(len(out.rows)), max_examples))
        out.counts["not_sampled"] = len(out.rows) - max_examples
        out.rows = [out.rows[i] for i in keep]
    out.counts["used"] = len(out.rows)
    return out


def reserved_questions(rows: Sequence[dict], count: int, seed: int) -> set[str]:
    """``count`` in-knowledge question ids of ``rows``, picked by ``seed``, that SFT does not train on.

    Why: SFT trains on (nearly) every in-knowledge training question, so PPO's in-knowledge prompts are all
    ones the reference has fitted, while every held-out one is new. Measured on the demo build: PPO then
    raised refusal on new in-knowledge questions although its training batches kept in-knowledge refusal
    flat. Reserved questions give PPO in-knowledge prompts that look like held-out ones
    (``ppo.prompts=unseen_by_sft``). Every prompt of a reserved question is left out, the out-of-knowledge
    variants the builders made from it (context swap, entity swap) too, so SFT never sees the question.
    """
    if count <= 0:
        return set()
    ids = sorted({str(r["question_id"]) for r in rows if r.get("label") == "ik" and r.get("question_id") is not None})
    if count >= len(ids):
        raise HalluguardError(f"sft.reserve_ik_questions={count} would leave SFT no in-knowledge question: the training "
                              f"split has {len(ids)}; reserve fewer")
    return set(random.Random(f"reserve-{seed}").sample(ids, count))


def _balanced(out: PreparedExamples, seed: int) -> list[dict]:
    """Cut the larger of the ik / ook example sets to the size of the smaller, keeping the original order.

    Why: measured on the demo build, 40 strong steps on 61% refusals taught SmolLM2 to refuse every
    held-out question, answerable ones included (it learned to sound unsure, not to read the context).
    """
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(out.rows):
        by_label.setdefault(r["label"], []).append(i)
    ik, ook = by_label.get("ik", []), by_label.get("ook", [])
    if not ik or not ook:
        return out.rows
    n = min(len(ik), len(ook))
    rng = random.Random(seed)
    keep = set(ik if len(ik) == n else rng.sample(ik, n)) | set(ook if len(ook) == n else rng.sample(ook, n))
    keep |= {i for label, idx in by_label.items() if label not in ("ik", "ook") for i in idx}
    out.counts["not_balanced"] = len(out.rows) - len(keep)
    return [r for i, r in enumerate(out.rows) if i in keep]


# ---------------------------------------------------------------- model and trainer

def resolve_use_cpu(flag: Optional[bool]) -> bool:
    """``use_cpu`` for a TRL config: given, or CPU when no CUDA device is present (TRL raises on CPU otherwise)."""
    import torch

    return (not torch.cuda.is_available()) if flag is None else bool(flag)


def show_progress_bar() -> bool:
    """TRL's tqdm bar on a terminal; in a log file the Trainer prints each logged dict instead."""
    return sys.stderr.isatty()


def load_policy_for_training(source: str, model_cfg):
    """The causal LM (float32: CPU training) and its tokenizer, with the project's padding (pad != eos)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from halluguard.models import _load_failure, _torch_dtype, configure_padding, load_tokenizer

    hf_logging.disable_progress_bar()
    tokenizer = load_tokenizer(source, model_cfg)
    if _torch_dtype(model_cfg.dtype) != torch.float32:
        log.warning("training runs in float32 (model.dtype=%s is for inference)", model_cfg.dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32,
                                                     trust_remote_code=bool(model_cfg.trust_remote_code))
    except (OSError, ValueError) as exc:
        raise HalluguardError(_load_failure("model", model_cfg.name_or_path, exc)) from None
    configure_padding(model, tokenizer, model_cfg.pad_token)
    return model, tokenizer


def make_trainer(model, tokenizer, examples: PreparedExamples, sft_cfg, output_dir: str, seed: int = 0,
                 peft_config=None):
    """TRL ``SFTTrainer`` on our tokenized examples (TRL's own preparation is skipped: labels are ours)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in examples.rows])
    args = SFTConfig(
        output_dir=output_dir, use_cpu=resolve_use_cpu(sft_cfg.use_cpu), bf16=False, fp16=False, seed=seed,
        per_device_train_batch_size=sft_cfg.batch_size, gradient_accumulation_steps=sft_cfg.grad_accum,
        num_train_epochs=sft_cfg.epochs, max_steps=sft_cfg.max_steps, learning_rate=sft_cfg.learning_rate,
        weight_decay=sft_cfg.weight_decay, warmup_steps=sft_cfg.warmup_ratio, lr_scheduler_type="linear",
        logging_steps=sft_cfg.logging_steps, logging_first_step=True, save_strategy="no", report_to=[],
        disable_tqdm=not show_progress_bar(),
        # Checkpointing trades ~20% compute for memory: a 135M model needs no such trade.
        activation_checkpointing=False,
        max_length=None,  # over-long examples were dropped (and counted) by prepare_examples
        dataset_kwargs={"skip_prepare_dataset": True}, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.add_callback(log_last_step())
    return trainer


def log_last_step():
    """A Trainer callback that also logs the final step, so the reported final loss is the end of training."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return LogLastStep()


def train_sft(examples: PreparedExamples, source: str, model_cfg, sft_cfg, out_dir: Path | None,
              seed: int = 0) -> dict:
    """Train on ``examples``; save ``out_dir/model`` (merged, loadable with ``from_pretrained``) and, for LoRA,
    ``out_dir/adapter`` (PEFT format). Returns a summary with the loss history.

    Under ``accelerate launch`` every process calls this (TRL's trainer shards the examples and all-reduces
    the gradients); process 0 passes its ``out_dir``, the others None: they train and save nothing.
    """
    import torch

    from halluguard.ppo.distributed import deepspeed_zero_stage, write_weights_digest

    if not examples.rows:
        raise HalluguardError(f"no SFT examples left to train on ({dict(examples.counts)}); check the build's "
                              "pairs or raise sft.max_length")
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    # TRL adds the LoRA matrices (random) before it seeds anything: seed them here, or two runs with the
    # same seed differ.
    torch.manual_seed(seed)
    model, tokenizer = load_policy_for_training(source, model_cfg)
    use_cache = getattr(model.config, "use_cache", None)
    peft_config = None
    if sft_cfg.finetune == "lora":
        from halluguard.lora import lora_config

        peft_config = lora_config(sft_cfg.lora, "CAUSAL_LM", model, key="sft.lora")
    with tempfile.TemporaryDirectory(prefix="hg-sft-") as scratch:
        trainer = make_trainer(model, tokenizer, examples, sft_cfg, scratch, seed, peft_config)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        start = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - start
        history = list(trainer.state.log_history)
        model = trainer.model
        write_weights_digest("sft", model)
        if deepspeed_zero_stage() == 3:  # untested here (no GPU, no deepspeed)
            # ZeRO-3 leaves each process a slice of every weight: TRL's save gathers one whole copy (every
            # process must call it), and process 0 reloads that copy to merge and save below.
            gathered = Path(scratch) / "gathered"
            trainer.save_model(str(gathered))
            if out_dir is not None:
                model = _reload_gathered(source, model_cfg, gathered, peft_config is not None)
    losses = [h for h in history if "loss" in h]
    steps = int(result.global_step)
    summary = {
        "finetune": sft_cfg.finetune,
        "trainable_parameters": int(trainable),
        "steps": steps,
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / max(1, steps), 3),
        "final_loss": losses[-1]["loss"] if losses else float(result.training_loss),
        "train_loss": float(result.training_loss),
        "log_history": history,
    }
    if out_dir is None:  # a process other than 0: its shard is trained, process 0 saves
        return summary
    if peft_config is not None:
        model.save_pretrained(str(out_dir / "adapter"))
        tokenizer.save_pretrained(str(out_dir / "adapter"))
        model = model.merge_and_unload()
    model = model.to("cpu")
    # The Trainer writes use_cache=False into the config; the reference is for generation, so save the
    # start model's setting (generate() reads generation_config, but other callers read config.use_cache).
    if use_cache is not None:
        model.config.use_cache = use_cache
    model.save_pretrained(str(out_dir / "model"))
    tokenizer.save_pretrained(str(out_dir / "model"))
    return summary


def _reload_gathered(source: str, model_cfg, folder: Path, lora: bool):
    """The trained policy from the whole copy ``trainer.save_model`` gathered under ZeRO-3."""
    model, _ = load_policy_for_training(source if lora else str(folder), model_cfg)
    if lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    return model


# ---------------------------------------------------------------- the reference, for later stages

def reference_source(cfg) -> str:
    """Folder of the SFT reference model of ``cfg.exp`` (a plain ``from_pretrained`` folder with its tokenizer).

    Found through the sft stage's manifest and checked against its sha256; a missing or changed model,
    or one trained from another base than ``model.name_or_path``, is an error that says what to run.
    """
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir

    try:
        manifest = Manifest.load(stage_dir(cfg, "sft"))
        path = manifest.output_path("model")
    except HalluguardError as exc:
        raise HalluguardError(f"the SFT reference model of experiment '{cfg.exp}' is not available ({exc}). "
                              f"Run `halluguard sft exp={cfg.exp}` first.") from None
    trained_from = (manifest.config.get("model") or {}).get("name_or_path")
    if trained_from is not None and trained_from != cfg.model.name_or_path:
        raise HalluguardError(f"the SFT reference of experiment '{cfg.exp}' was trained from model '{trained_from}', "
                              f"but model.name_or_path is '{cfg.model.name_or_path}'; run `halluguard sft "
                              f"exp={cfg.exp}` again with this model, or set model.name_or_path={trained_from}")
    return str(path)
