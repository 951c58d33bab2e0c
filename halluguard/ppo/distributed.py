"""Training with several processes (``accelerate launch``): who writes, who waits, and what is checked first.

The training stages (``sft``, ``reward``, ``ppo``) run unchanged under::

    accelerate launch --config_file conf/accelerate/multi_cpu.yml -m halluguard.cli reward exp=demo

Every process composes the same config and trains on its shard of the data (TRL's trainers and the PPO
loop all-reduce gradients and the logged statistics); process 0 alone writes the stage's outputs while
the others wait at a barrier. A plain ``halluguard <stage>`` is process 0 of 1, and every function here
is then a no-op or answers as a single process would.

The process index comes from the launcher's environment (``torchrun``/``accelerate launch`` set ``RANK``
and ``WORLD_SIZE``; ``mpirun`` its own names), so it is known before any process group exists. The
barrier is ``torch.distributed``'s, once the trainers have started the group.

``HALLUGUARD_WEIGHTS_DIGEST_DIR``: when set, each process writes ``<stage>-rank<N>.json`` there at the end
of training: a sha256 of its trainable parameters (and, for PPO, its prompts and metric rows). The
two-process test compares them: identical weights on every process is what data parallelism promises.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from halluguard.errors import HalluguardError

RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")
WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMI_SIZE")
DIGEST_ENV = "HALLUGUARD_WEIGHTS_DIGEST_DIR"


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def rank() -> int:
    """This process's index among all training processes (0 without a launcher)."""
    return _first_int(RANK_VARS, 0)


def world_size() -> int:
    """How many training processes the launcher started (1 without a launcher)."""
    return _first_int(WORLD_VARS, 1)


def is_main() -> bool:
    """Process 0: the one that writes outputs and prints."""
    return rank() == 0


def wait_for_everyone() -> None:
    """A barrier across the training processes; nothing to wait for in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def quiet_unless_main() -> None:
    """Other processes log warnings only: one copy of the stage's progress, from process 0."""
    if not is_main():
        logging.getLogger("halluguard").setLevel(logging.WARNING)


# ---------------------------------------------------------------- DeepSpeed

def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def deepspeed_zero_stage() -> int | None:
    """The ZeRO stage when ``accelerate launch`` started this process with a DeepSpeed config, else None."""
    if not _flag("ACCELERATE_USE_DEEPSPEED"):
        return None
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or 2)  # accelerate's own default


def check_launch(stage: str) -> None:
    """Checks that cost nothing and fail before any model loads: DeepSpeed asked for but not installed.

    (``accelerate launch`` itself refuses a DeepSpeed config without the package; this catches the other
    ways the same environment reaches a process, e.g. ``torchrun`` with the variables exported.)
    """
    if deepspeed_zero_stage() is not None and importlib.util.find_spec("deepspeed") is None:
        raise HalluguardError(
            f"`halluguard {stage}` was launched with a DeepSpeed accelerate config (ACCELERATE_USE_DEEPSPEED=true), "
            "but the deepspeed package is not installed: `pip install deepspeed` (it needs a CUDA toolkit), or "
            "launch with conf/accelerate/ddp_gpu.yml (GPUs) or conf/accelerate/multi_cpu.yml (CPU) instead")


PPO_ZERO3 = ("halluguard's PPO does not run under DeepSpeed ZeRO-3 (each step samples from the whole policy, which "
             "ZeRO-3 splits across processes): launch it with conf/accelerate/zero2.yml or ddp_gpu.yml; ZeRO-3 is "
             "for the sft and reward stages")


# ---------------------------------------------------------------- the weights digest (tests)

def trainable_digest(module) -> dict:
    """sha256 over the names, shapes and float32 bytes of ``module``'s trainable parameters, in name order."""
    h = hashlib.sha256()
    count = numel = 0
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        tensor = param.detach().float().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.numpy().tobytes())
        count += 1
        numel += tensor.numel()
    return {"sha256": h.hexdigest(), "tensors": count, "numel": numel}


def write_weights_digest(stage: str, module, extra: dict[str, Any] | None = None) -> Path | None:
    """``<HALLUGUARD_WEIGHTS_DIGEST_DIR>/<stage>-rank<N>.json`` when that variable is set (tests), else nothing."""
    folder = os.environ.get(DIGEST_ENV)
    if not folder:
        return None
    from halluguard.artifacts import atomic_write_json

    path = Path(folder) / f"{stage}-rank{rank()}.json"
    atomic_write_json(path, {"stage": stage, "rank": rank(), "world_size": world_size(),
                             **trainable_digest(module), **(extra or {})})
    return path
