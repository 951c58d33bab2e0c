"""One place that turns ``LoraSettings`` into a peft ``LoraConfig`` (reward model, SFT and PPO share it)."""

from __future__ import annotations

from halluguard.errors import HalluguardError


def num_layers(model) -> int:
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not n:
        raise HalluguardError(f"cannot tell how many transformer blocks {type(model).__name__} has "
                              "(no config.num_hidden_layers); set lora.top_layers=0")
    return int(n)


def lora_config(settings, task_type: str, model, key: str = "lora"):
    """peft ``LoraConfig`` for ``model``; ``settings.top_layers=N`` puts adapters only in the last N blocks."""
    from peft import LoraConfig

    top = int(getattr(settings, "top_layers", 0) or 0)
    layers = None
    if top < 0:
        raise HalluguardError(f"{key}.top_layers must be >= 0 (0 = every block), got {top}")
    if top:
        n = num_layers(model)
        if top > n:
            raise HalluguardError(f"{key}.top_layers={top} but the model has only {n} transformer blocks")
        layers = list(range(n - top, n))
    return LoraConfig(task_type=task_type, r=int(settings.r), lora_alpha=int(settings.alpha),
                      lora_dropout=float(settings.dropout), target_modules=list(settings.target_modules),
                      layers_to_transform=layers, layers_pattern="layers" if layers else None)
