"""Reward, KL and refusal-rate curves of a run on one figure (what a person checks first: did reward
rise while KL stayed inside the budget, and did OOK refusal rise without IK refusal rising with it?).

Rollout batches are small, so each per-step series gets a trailing moving average beside it: the trend
is what to read, not the step-to-step swing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def moving_average(values: Sequence[float | None], window: int = 5) -> list[float | None]:
    """Trailing mean over the last ``window`` steps that have a value (None where none has yet)."""
    out, seen = [], []
    for v in values:
        if v is not None:
            seen.append(v)
        recent = seen[-window:]
        out.append(sum(recent) / len(recent) if recent and v is not None else None)
    return out


def plot_curves(rows: Sequence[dict], png: Path, budget: float | None = None,
                chosen_step: int | None = None, title: str = "PPO") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_r, ax_k, ax_f) = plt.subplots(1, 3, figsize=(16, 4))
    window = 5
    for key, style in (("reward", "-o"), ("score", "--")):
        ax_r.plot(steps, [r.get(key) for r in rows], style, label=key, markersize=3, alpha=0.5)
    ax_r.plot(steps, moving_average([r.get("reward") for r in rows], window), "-", color="black", linewidth=2,
              label=f"reward, mean of last {window}")
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
    for key, color, name in (("refusal_rate_ook", "tab:green", "OOK prompts (should rise)"),
                             ("refusal_rate_ik", "tab:red", "IK prompts (should not rise)")):
        values = [r.get(key) for r in rows]
        ax_f.plot(steps, values, "o", color=color, markersize=3, alpha=0.4)
        ax_f.plot(steps, moving_average(values, window), "-", color=color, linewidth=2,
                  label=f"{name}, mean of last {window}")
    for key, color in (("probe_refusal_rate_ook", "tab:green"), ("probe_refusal_rate_ik", "tab:red")):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax_f.plot(*zip(*points), "s--", color=color, markersize=6, alpha=0.8,
                      label=f"{key.split('_')[-1].upper()} probe prompts, greedy")
    ax_f.set_ylim(-0.05, 1.05)
    ax_f.set_xlabel("step (updates done)")
    ax_f.set_ylabel("share of the batch's responses refused")
    ax_f.set_title("refusal rate: batch (sampled), probes (greedy)")
    for ax in (ax_r, ax_k, ax_f):
        if chosen_step is not None:
            ax.axvline(chosen_step, color="green", alpha=0.4, label=f"result: step {chosen_step}")
    return _save(fig, (ax_r, ax_k, ax_f), png, title)


def _save(fig, axes, png: Path, title: str) -> Path:
    """Grid and legend on each panel, the title, the PNG written, the figure closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_selection(selection, png: Path, title: str = "PPO checkpoints on validation questions") -> Path:
    """Each candidate checkpoint's validation scores against its step, the chosen one marked: does the boundary
    (balanced accuracy) trend, or do both refusal rates walk together?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = selection.scores
    steps = [s.step for s in scores]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [s.balanced_accuracy for s in scores], "-o", color="black", label="balanced accuracy (chooses)")
    ax.plot(steps, [s.ook_refusal for s in scores], "--o", color="tab:green", markersize=4,
            label="OOK refusal (should rise)")
    over = [(s.step, s.over_refusal) for s in scores if s.over_refusal is not None]
    if over:
        ax.plot(*zip(*over), "--o", color="tab:red", markersize=4, label="over-refusal, ctx has answer (should not)")
    ax.axvline(selection.chosen_step, color="green", alpha=0.4, label=f"result: step {selection.chosen_step}")
    if selection.budget_step != selection.chosen_step:
        ax.axvline(selection.budget_step, color="grey", linestyle=":", label=f"last within KL budget: step {selection.budget_step}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("rate on the validation questions")
    n, k = selection.validation.get("n"), selection.validation.get("samples")
    ax.set_title(f"{n or ''} validation questions, " + (f"{k} sampled answers each" if k else "greedy answers"),
                 fontsize=9)
    return _save(fig, (ax,), png, title)
