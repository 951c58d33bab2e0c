"""Baselines on the same data as PPO, for the evaluation to compare against (``ppo.algo=dpo|grpo``).

* :func:`~halluguard.baselines.dpo.train_dpo` - TRL ``DPOTrainer`` on the build's train pairs;
* :func:`~halluguard.baselines.grpo.train_grpo` - TRL ``GRPOTrainer`` with the project's scorer as reward
  and a KL term to the start model (``beta > 0`` always).

Both train a LoRA adapter (``ppo.lora``) on the start model, use that start model with the adapter
disabled as the reference, save the adapter in PEFT's format to ``out_dir/adapter`` and return a summary
with ``steps``, ``train_seconds``, ``seconds_per_step``, ``final_loss`` and ``log_history`` (TRL's logs,
one per step), plus what was trained on (``pairs`` for DPO, ``prompts`` for GRPO).
"""

from __future__ import annotations

from pathlib import Path


def save_adapter(trainer, tokenizer, out_dir: Path) -> Path:
    """The trained PEFT adapter (and the tokenizer it was trained with) in ``out_dir/adapter``."""
    folder = Path(out_dir) / "adapter"
    trainer.model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def run_summary(trainer, result, seconds: float) -> dict:
    """The keys every baseline returns, from a finished TRL trainer."""
    history = list(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    steps = int(result.global_step)
    return {
        "steps": steps,
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(1, steps), 3),
        "final_loss": losses[-1] if losses else float(result.training_loss),
        "log_history": history,
    }
