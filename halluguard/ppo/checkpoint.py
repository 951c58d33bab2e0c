"""Checkpoints: ``step-N/`` holds everything needed to continue exactly where step N left off.

* ``adapter/`` - PPO's LoRA adapter in PEFT's format (``PeftModel.from_pretrained(base, path)`` loads it)
* ``value_head.pt``, ``optimizer.pt`` - state dicts
* ``trainer_state.json`` - the step, the KL controller (beta) and the row of metrics it was saved after
* ``rng.pt`` - torch's generator state (each step reseeds from ``(seed, step)``, so this is a record, not a need)

``step-N`` is the policy after N updates; metrics row N measured that policy. Each folder is written
through ``atomic_dir``, so an interruption mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from halluguard.artifacts import atomic_dir, atomic_write_json
from halluguard.errors import HalluguardError

PREFIX = "step-"
STATE = "trainer_state.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, by step."""
    found = []
    for path in Path(root).glob(f"{PREFIX}*"):
        suffix = path.name[len(PREFIX):]
        if suffix.isdigit() and (path / STATE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def latest_checkpoint(root: Path, at_most: int | None = None) -> tuple[int, Path] | None:
    found = [c for c in list_checkpoints(root) if at_most is None or c[0] <= at_most]
    return found[-1] if found else None


def save_checkpoint(root: Path, step: int, model, optimizer, controller, extra: dict | None = None) -> Path:
    """Write ``root/step-N`` atomically. ``model``: the unwrapped :class:`PolicyWithValue`."""
    import torch

    final = checkpoint_dir(root, step)
    with atomic_dir(final) as tmp:
        model.policy.save_pretrained(str(tmp / "adapter"))
        torch.save(model.value_head.state_dict(), tmp / "value_head.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        atomic_write_json(tmp / STATE, {"step": step, "kl_controller": controller.state_dict(), **(extra or {})})
    return final


def load_adapter_weights(policy, adapter_dir: Path) -> None:
    """Put a saved adapter's weights into ``policy`` (a PeftModel with the same adapter layout)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    files = [Path(adapter_dir) / name for name in ("adapter_model.safetensors", "adapter_model.bin")]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise HalluguardError(f"no adapter weights in {adapter_dir}; delete that checkpoint or set ppo.resume=false")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        import torch

        state = torch.load(path, map_location="cpu")
    result = set_peft_model_state_dict(policy, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise HalluguardError(f"the adapter in {adapter_dir} does not fit the policy (unexpected keys such as "
                              f"{unexpected[0]}); it was made with other ppo.lora settings: set ppo.resume=false")


def load_checkpoint(path: Path, model, optimizer=None, controller=None) -> dict:
    """Restore a checkpoint into ``model`` (unwrapped), ``optimizer`` and ``controller``; returns its state."""
    import torch

    path = Path(path)
    load_adapter_weights(model.policy, path / "adapter")
    device = next(model.value_head.parameters()).device
    model.value_head.load_state_dict(torch.load(path / "value_head.pt", map_location=device))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if controller is not None:
        controller.load_state_dict(state["kl_controller"])
    if (path / "rng.pt").is_file():
        torch.set_rng_state(torch.load(path / "rng.pt"))
    return state


def remove_checkpoints_after(root: Path, step: int) -> None:
    """Drop checkpoints past ``step`` (a resumed run recomputes them; stale ones would be chosen by mistake)."""
    for n, path in list_checkpoints(root):
        if n > step:
            shutil.rmtree(path, ignore_errors=True)
