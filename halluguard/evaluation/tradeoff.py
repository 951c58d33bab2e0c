"""The refusal trade-off chart: OOK refusal against over-refusal, one point per model.

A policy that refuses without regard to the label lies on the diagonal (refusing more raises both rates
together; balanced accuracy 0.5 everywhere on it). Training that moves a point along the diagonal changed
how often the model refuses; only a move up and to the left changed *when* it refuses. The shaded corner
is the goal of issue #7 (OOK refusal at least 0.80, over-refusal at most 0.10 on IK questions whose
context holds the answer).
"""

from __future__ import annotations

from pathlib import Path

X_METRIC = "over_refusal_context_has_answer"
Y_METRIC = "abstention_recall"
GOAL_X, GOAL_Y = 0.10, 0.80
KIND_MARKERS = {"policy": "o", "gated": "s", "baseline": "^"}
# always/never refuse sit at the corners by construction: they add nothing to read
SKIPPED = ("always_refuse", "never_refuse")


def tradeoff_points(results: dict) -> list[dict]:
    """``{name, kind, x, y}`` of every evaluated model with both rates."""
    points = []
    for name, model in results["models"].items():
        if model.get("status") != "ok" or name in SKIPPED:
            continue
        metrics = model["summary"]["metrics"]
        x, y = (metrics.get(X_METRIC) or {}).get("value"), (metrics.get(Y_METRIC) or {}).get("value")
        if x is not None and y is not None:
            points.append({"name": name, "kind": model.get("kind", "policy"), "x": float(x), "y": float(y)})
    return points


def draw_tradeoff(runs: dict[str, list[dict]], path: Path, title: str = "refusal trade-off") -> Path:
    """One figure: the points of each run (label -> :func:`tradeoff_points`), SFT -> PPO moves as arrows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--", label="refusal blind to the label (bal. acc. 0.5)")
    ax.fill_between([0, GOAL_X], GOAL_Y, 1.0, color="#55A868", alpha=0.15,
                    label=f"goal: OOK refusal >= {GOAL_Y:.2f}, over-refusal <= {GOAL_X:.2f}")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    named = set()  # a model at the same place in several runs (the gate, the reference) is named once
    for i, (label, points) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        by_name = {p["name"]: p for p in points}
        for p in points:
            ax.scatter(p["x"], p["y"], marker=KIND_MARKERS.get(p["kind"], "o"), color=colour, s=28, zorder=3)
            where = (p["name"], round(p["x"], 3), round(p["y"], 3))
            if where not in named:
                named.add(where)
                ax.annotate(p["name"], (p["x"], p["y"]), fontsize=7, xytext=(4, -3), textcoords="offset points")
        for start, end in (("sft", "ppo"), ("sft", "dpo"), ("sft", "grpo")):
            if start in by_name and end in by_name:
                a, b = by_name[start], by_name[end]
                ax.annotate("", (b["x"], b["y"]), (a["x"], a["y"]),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2})
        ax.scatter([], [], color=colour, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("over-refusal (IK refused, context holds the answer)")
    ax.set_ylabel("abstention recall (OOK refused)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, loc="lower right", title="colour: run; o policy, s gated, ^ baseline", title_fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
