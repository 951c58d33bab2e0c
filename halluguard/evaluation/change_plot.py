"""One chart of the changes a set of eval runs made against a baseline (``compare_evals.py --plot``).

Two panels, OOK refusal and over-refusal (IK questions whose context holds the answer); one row per run and
measure (greedy, greedy pooled over the runs, sampled, sampled pooled), each a point at the mean change with
its 95% interval. #5's held-out criterion reads off it: the left panel's intervals right of zero, the right
panel's not right of zero.
"""

from __future__ import annotations

from pathlib import Path

# compare_evals.py's result keys -> the two panels
GREEDY_METRICS = {"ook": "abstention_recall", "over": "over_refusal_context_has_answer"}
SAMPLED_GROUPS = {"ook": "ook", "over": "ik_context_has_answer"}
PANEL_TITLES = {"ook": "OOK refusal (higher is better)", "over": "over-refusal, answer in context (lower is better)"}
COLOURS = {"greedy": "tab:blue", "sampled": "tab:orange"}


def change_rows(result: dict) -> list[tuple[str, str, dict[str, tuple[float, tuple[float, float] | None] | None]]]:
    """``[(run name, measure, {panel: (change, interval) or None}), ...]`` from compare_evals.py's result, in the
    order the tables print: greedy runs, greedy pooled, sampled runs, sampled pooled."""
    rows = []
    for name, run in result.get("runs", {}).items():
        values = {}
        for panel, metric in GREEDY_METRICS.items():
            diff = run["diff"][metric]
            values[panel] = None if diff["value"] is None else (diff["value"], _interval(diff["ci"]))
        rows.append((name, "greedy", values))
    for section, measure in (("greedy_pooled", "greedy"), ("sampled", "sampled")):
        for name, groups in result.get(section, {}).get("runs", {}).items():
            values = {}
            for panel, group in SAMPLED_GROUPS.items():
                change = groups[group]
                values[panel] = None if change["diff"] is None else (change["diff"], _interval(change["ci"]))
            rows.append((name, measure, values))
    return rows


def _interval(ci) -> tuple[float, float] | None:
    return None if ci is None else (float(ci[0]), float(ci[1]))


def plot_changes(rows: list, path: Path, baseline_name: str = "baseline") -> Path:
    """Draw :func:`change_rows`' rows to ``path`` (PNG), written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no changes to plot")
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.4 + 0.38 * len(rows)), sharey=True)
    ys = list(range(len(rows)))[::-1]
    for ax, panel in zip(axes, PANEL_TITLES):
        for y, (name, measure, values) in zip(ys, rows):
            if values[panel] is None:
                continue
            diff, ci = values[panel]
            err = None if ci is None else [[diff - ci[0]], [ci[1] - diff]]
            ax.errorbar(diff, y, xerr=err, fmt="o", color=COLOURS[measure], capsize=3,
                        markerfacecolor="white" if name.startswith("mean of") else COLOURS[measure])
        ax.axvline(0.0, color="grey", linewidth=1, linestyle="--")
        ax.set_title(PANEL_TITLES[panel], fontsize=10)
        ax.set_xlabel(f"change from {baseline_name} (95% interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([f"{name} · {measure}" for name, measure, _ in rows], fontsize=9)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=m) for m, c in COLOURS.items()]
    handles.append(plt.Line2D([], [], marker="o", linestyle="", color="black", markerfacecolor="white",
                              label="runs pooled question by question"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
