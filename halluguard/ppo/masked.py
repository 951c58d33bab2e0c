"""Statistics over the response tokens only (``mask`` is 1 on real response tokens, 0 on padding)."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Sums across processes (``accelerate``'s reduce), so whitening uses the whole batch under DDP.
Reduce = Callable[[torch.Tensor], torch.Tensor] | None


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (a mask of all zeros gives 0, not NaN)."""
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  reduce_sum: Reduce = None) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (masked entries come back as 0).

    ``shift_mean=False`` only rescales. ``reduce_sum`` sums the statistics across processes first.
    """
    stats = torch.stack([masked_sum(x, mask), masked_sum(x * x, mask), mask.sum()]).double()
    if reduce_sum is not None:
        stats = reduce_sum(stats)
    total, total_sq, n = stats.unbind()
    n = n.clamp(min=1)
    mean = total / n
    var = (total_sq / n - mean * mean).clamp(min=0)
    if n > 1:  # unbiased, as the advantage normalisation in PPO implementations
        var = var * n / (n - 1)
    out = (x - mean.to(x.dtype)) if shift_mean else x
    out = out * torch.rsqrt(var.to(x.dtype) + eps)
    return out * mask
