"""Reward and KL curves of a run on one figure (what a person checks first: did reward rise while KL
stayed inside the budget?)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_curves(rows: Sequence[dict], png: Path, budget: float | None = None,
                chosen_step: int | None = None, title: str = "PPO") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_r, ax_k) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("reward", "-o"), ("score", "--")):
        ax_r.plot(steps, [r.get(key) for r in rows], style, label=key, markersize=3)
    ax_r.set_xlabel("step (updates done)")
    ax_r.set_ylabel("mean per response")
    ax_r.set_title("reward (score - beta * KL) and score")
    for key, style in (("kl_k1", "-o"), ("kl_k3", "--")):
        ax_k.plot(steps, [r.get(key) for r in rows], style, label=key, markersize=3)
    if budget is not None:
        ax_k.axhline(budget, color="red", linestyle=":", label=f"budget {budget:g}")
    ax_k.set_xlabel("step (updates done)")
    ax_k.set_ylabel("KL to the reference (nats per response)")
    ax_k.set_title("KL to the reference")
    beta_ax = ax_k.twinx()
    beta_ax.plot(steps, [r.get("beta") for r in rows], color="grey", alpha=0.5, label="beta")
    beta_ax.set_ylabel("beta", color="grey")
    for ax in (ax_r, ax_k):
        if chosen_step is not None:
            ax.axvline(chosen_step, color="green", alpha=0.4, label=f"result: step {chosen_step}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
