"""What a person reads after a build: ``stats.json``, ``summary.md`` and three plots.

``summary.md`` holds the counts (labels, kinds, pair kinds), each filter with its threshold and
how much it dropped, the probe's agreement with the dataset labels, and a handful of sample
pairs written out in full. The plots show where the knowledge probe's thresholds cut the
retrieval similarities, how much each filter removed, and how the pairs divide by kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from data_builders.filters import REASONS
from halluguard.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text

SUMMARY = "summary.md"
SIMILARITY_PLOT = "similarity_hist.png"
FILTER_PLOT = "filter_counts.png"
PAIR_KIND_PLOT = "pair_kinds.png"
AMBIGUOUS_WARN_SHARE = 0.9
LABEL_COLOURS = {"ik": "#2a7ab0", "ook": "#d1495b", "ambiguous": "#8d8d8d"}


def _plain(obj: Any) -> Any:
    """JSON-able copy: numpy arrays and scalars, dataclasses, sets and tuples made plain."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_plain(v) for v in obj), key=str)
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return _plain(obj.tolist())
    return obj


def write_stats(path: Path, stats: dict) -> Path:
    """Write ``stats`` as indented JSON, atomically (numpy values, dataclasses and sets made plain)."""
    path = Path(path)
    atomic_write_json(path, _plain(stats))
    return path


# ---------------------------------------------------------------- reading loose inputs

def _get(item: Any, key: str, default: Any = None) -> Any:
    """``item.key`` or ``item[key]``: records may arrive as dataclasses or as JSON dicts."""
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def _probe_labels(probe_results: Sequence[Any]) -> Counter:
    return Counter(str(_get(r, "label", "unknown")) for r in probe_results)


def warn_if_all_ambiguous(probe_results: Sequence[Any]) -> Optional[str]:
    """A warning with the counts when >= 90 % of the questions have the final label ``ambiguous``.

    That many ambiguous questions means the probe thresholds leave almost nothing to train on
    (``builder.probe.ook_max_top1`` too low, ``ik_min_top1``/``ik_min_gap`` too high for this encoder
    and knowledge base). Returns None when fewer are ambiguous or there are no questions.
    """
    n = len(probe_results)
    if not n:
        return None
    labels = _probe_labels(probe_results)
    share = labels.get("ambiguous", 0) / n
    if share < AMBIGUOUS_WARN_SHARE:
        return None
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items()))
    return (f"{labels['ambiguous']} of {n} questions ({share:.0%}) are ambiguous ({counts}): the knowledge-probe "
            "thresholds are probably too tight for this encoder and knowledge base; look at similarity_hist.png "
            "and move builder.probe.ook_max_top1 up or builder.probe.ik_min_top1 / ik_min_gap down")


def _probe_thresholds(stats: Mapping[str, Any]) -> dict[str, float]:
    """The probe thresholds to draw: ``stats["probe_thresholds"]``, ``stats["probe"]`` or the config's."""
    candidates = [stats.get("probe_thresholds"), stats.get("probe")]
    config = stats.get("config")
    if isinstance(config, Mapping):
        builder = config.get("builder")
        candidates.append(builder.get("probe") if isinstance(builder, Mapping) else None)
    for cand in candidates:
        if isinstance(cand, Mapping):
            found = {k: float(cand[k]) for k in ("ook_max_top1", "ik_min_top1")
                     if isinstance(cand.get(k), (int, float))}
            if found:
                return found
    return {}


def _filter_rows(stats: Mapping[str, Any]) -> list[dict]:
    """Filter rows from ``stats["filters"]``: a list of summarize() rows, or a dict name -> row."""
    rows = stats.get("filters") or []
    if isinstance(rows, Mapping):
        rows = [{"name": k, **(v if isinstance(v, Mapping) else {"dropped": v})} for k, v in rows.items()]
    out = []
    for r in rows:
        if is_dataclass(r):
            r = r.to_dict() if hasattr(r, "to_dict") else asdict(r)
        if isinstance(r, Mapping):
            out.append(dict(r))
    return out


def _sample_view(sample: Any) -> dict:
    """A sample as {question, evidence, chosen, rejected, pair_kind, case_id, label, kind}.

    Accepts a dict with those keys (``evidence_titles`` or ``evidence``: titles, Passages or
    passage dicts), or a ``(Case, Pair)`` tuple, or a bare Pair.
    """
    case, pair = None, sample
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        case, pair = sample
    src = case if case is not None else sample
    evidence = _get(sample, "evidence_titles") if isinstance(sample, Mapping) else None
    if evidence is None:
        evidence = _get(src, "evidence") or []
    titles = []
    for p in evidence:
        if isinstance(p, str):
            titles.append(p)
        else:
            titles.append(str(_get(p, "title") or _get(p, "id") or "?"))
    return {
        "question": _get(src, "question", ""),
        "evidence": titles,
        "chosen": _get(pair, "chosen", ""),
        "rejected": _get(pair, "rejected", ""),
        "pair_kind": _get(pair, "pair_kind", ""),
        "rejected_kind": _get(pair, "rejected_kind", ""),
        "case_id": _get(pair, "case_id") or _get(src, "id", ""),
        "label": _get(src, "label", ""),
        "kind": _get(src, "kind", ""),
    }


# ---------------------------------------------------------------- Markdown

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _counts_table(title: str, counts: Mapping[str, Any]) -> list[str]:
    total = sum(v for v in counts.values() if isinstance(v, (int, float)))
    rows = [(k, v, f"{v / total:.0%}" if total and isinstance(v, (int, float)) else "")
            for k, v in sorted(counts.items(), key=lambda kv: (-kv[1] if isinstance(kv[1], (int, float)) else 0, kv[0]))]
    return [f"**{title}**", "", *_table(("", "count", "share"), rows), ""]


def _short(text: Any, limit: int = 500) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _agreement_table(agreement: Any) -> list[str]:
    """Nested dict {dataset label: {probe label: count}} as a table; anything else as JSON."""
    if isinstance(agreement, Mapping) and agreement and all(isinstance(v, Mapping) for v in agreement.values()):
        cols = sorted({c for v in agreement.values() for c in v})
        rows = [(r, *[agreement[r].get(c, 0) for c in cols]) for r in sorted(agreement)]
        return ["Rows: the dataset's label; columns: the probe's label.", "",
                *_table(("dataset \\ probe", *cols), rows), ""]
    import json

    return ["```json", json.dumps(agreement, indent=2, ensure_ascii=False, default=str), "```", ""]


def _markdown(stats: Mapping[str, Any], probe_results: Sequence[Any], pairs: Sequence[Any],
              samples: Sequence[Any], warning: Optional[str], max_samples: int) -> str:
    lines = ["# Build summary", ""]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]

    lines += ["## Counts", ""]
    for key in ("questions", "cases"):
        block = stats.get(key)
        if isinstance(block, Mapping):
            for sub, title in (("by_label", "label"), ("by_kind", "kind")):
                if isinstance(block.get(sub), Mapping) and block[sub]:
                    lines += _counts_table(f"{key.capitalize()} by {title}", block[sub])
    if probe_results:
        lines += _counts_table("Questions by final probe label", _probe_labels(probe_results))
    pair_kinds = Counter(str(_get(p, "pair_kind", "?")) for p in pairs)
    if pair_kinds:
        lines += _counts_table(f"Pairs by kind ({len(pairs)} in all)", pair_kinds)
        rejected = Counter(str(_get(p, "rejected_kind", "?")) for p in pairs)
        lines += _counts_table("Pairs by rejected response kind", rejected)
    else:
        lines += ["No pairs were built.", ""]

    rows = _filter_rows(stats)
    lines += ["## Filters", ""]
    if rows:
        lines += _table(("filter", "threshold", "seen", "dropped", "kept", "why"),
                        [(r.get("name", "?"), r.get("threshold"), r.get("seen"), r.get("dropped"),
                          r.get("kept", (r.get("seen") or 0) - (r.get("dropped") or 0)),
                          r.get("reason") or REASONS.get(str(r.get("name")), ""))
                         for r in rows])
        lines.append("")
    else:
        lines += ["No filter counts were recorded.", ""]

    if "probe_agreement" in stats:
        lines += ["## Probe agreement", "", *_agreement_table(stats["probe_agreement"])]

    split = stats.get("split")
    if isinstance(split, Mapping):
        lines += ["## Split", ""]
        for side in ("train", "heldout"):
            info = split.get(side)
            groups = split.get(f"{side}_groups")
            if isinstance(info, Mapping):
                lines.append(f"- **{side}**: {info.get('cases', 0)} cases, {len(groups or [])} group(s), "
                             f"labels {dict(info.get('by_label', {}))}")
        lines.append("")

    lines += ["## Sample pairs", ""]
    views = [_sample_view(s) for s in samples[:max_samples]]
    if not views:
        lines += ["No samples were given.", ""]
    for n, v in enumerate(views, start=1):
        what = " · ".join(x for x in (v["pair_kind"], v["kind"], f"case {v['case_id']}" if v["case_id"] else "") if x)
        lines += [f"### {n}. {what}", ""]
        if v["question"]:
            lines.append(f"- **Question:** {_short(v['question'])}")
        lines.append(f"- **Evidence:** {_short('; '.join(v['evidence'])) if v['evidence'] else '(none)'}")
        lines.append(f"- **Chosen:** {_short(v['chosen'])}")
        rk = f" ({v['rejected_kind']})" if v["rejected_kind"] else ""
        lines += [f"- **Rejected{rk}:** {_short(v['rejected'])}", ""]

    lines += ["## Plots", "", f"![retrieval similarity]({SIMILARITY_PLOT})", "",
              f"![filter counts]({FILTER_PLOT})", "", f"![pair kinds]({PAIR_KIND_PLOT})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def _figure(figsize: tuple[float, float]):
    """A figure drawn by the Agg canvas, outside pyplot: no global backend switch, nothing left open."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        fig.clear()  # release the artists (the figure is not registered with pyplot)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_thresholds(ax, thresholds: Mapping[str, float]) -> None:
    styles = {"ook_max_top1": ("#d1495b", "--", "ook below"), "ik_min_top1": ("#2a7ab0", ":", "ik from")}
    for key, value in thresholds.items():
        colour, style, words = styles.get(key, ("black", "-.", key))
        ax.axvline(value, color=colour, linestyle=style, linewidth=2, label=f"{words} {value:g} ({key})")


def _similarity_plot(path: Path, probe_results: Sequence[Any], thresholds: Mapping[str, float],
                     kinds: Mapping[str, str]) -> Path:
    import numpy as np
    from matplotlib import colormaps

    top1 = [float(_get(r, "top1", float("nan"))) for r in probe_results]
    labels = [str(_get(r, "label", "unknown")) for r in probe_results]
    qkinds = [str(_get(r, "kind") or kinds.get(str(_get(r, "question_id", "")), "") or "") for r in probe_results]
    has_kinds = any(qkinds)
    fig = _figure((13 if has_kinds else 7.5, 4.8))
    axes = fig.subplots(1, 2 if has_kinds else 1, squeeze=False)
    finite = [v for v in top1 if np.isfinite(v)]
    if not finite:
        _no_data(axes[0][0], "no probe results")
        axes[0][0].set_title("Top-1 retrieval similarity")
        return _save(fig, path)
    lo, hi = min(finite + list(thresholds.values())), max(finite + list(thresholds.values()))
    bins = np.linspace(lo - 0.02, hi + 0.02, 31)

    def panel(ax, keys: list[str], title: str, colours: Mapping[str, str]) -> None:
        groups: dict[str, list[float]] = {}
        for key, v in zip(keys, top1):
            if np.isfinite(v):
                groups.setdefault(key or "unknown", []).append(v)
        palette = colormaps["tab10"]
        order = sorted(groups, key=lambda k: (-len(groups[k]), k))
        for n, key in enumerate(order):
            colour = colours.get(key, palette(n % 10))
            ax.hist(groups[key], bins=bins, histtype="stepfilled", alpha=0.25, color=colour)
            ax.hist(groups[key], bins=bins, histtype="step", linewidth=1.8, color=colour,
                    label=f"{key} (n={len(groups[key])})")
        _draw_thresholds(ax, thresholds)
        ax.set_title(title)
        ax.set_xlabel("top-1 cosine similarity (question vs best passage)")
        ax.set_ylabel("questions")
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
        ax.grid(alpha=0.3)

    panel(axes[0][0], labels, "Top-1 retrieval similarity by final label", LABEL_COLOURS)
    if has_kinds:
        panel(axes[0][1], qkinds, "Top-1 retrieval similarity by question kind", {})
    fig.tight_layout()
    return _save(fig, path)


def _filter_plot(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    fig = _figure((8.5, 0.5 * max(len(rows), 3) + 1.5))
    ax = fig.subplots()
    if not rows:
        _no_data(ax, "no filter counts recorded")
    else:
        names = [str(r.get("name", "?")) for r in rows][::-1]
        dropped = [int(r.get("dropped") or 0) for r in rows][::-1]
        seen = [int(r.get("seen") or 0) for r in rows][::-1]
        thr = [r.get("threshold") for r in rows][::-1]
        bars = ax.barh(names, dropped, color="#d1495b")
        top = max(dropped + [1])
        for bar, d, s, t in zip(bars, dropped, seen, thr):
            note = f"{d} of {s}" + (f" ({d / s:.0%})" if s else "") + (f"  thr={t:g}" if isinstance(t, (int, float)) else "")
            ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=9)
        ax.set_xlim(0, top * 1.45)
        ax.set_xlabel("items dropped (questions or pairs, as the filter sees them)")
        ax.grid(axis="x", alpha=0.3)
    ax.set_title("Items dropped by each filter (in pipeline order, top first)")
    fig.tight_layout()
    return _save(fig, path)


def _pair_kind_plot(path: Path, pairs: Sequence[Any]) -> Path:
    from matplotlib import colormaps

    fig = _figure((8.5, 4.8))
    ax = fig.subplots()
    table = Counter((str(_get(p, "pair_kind", "?")), str(_get(p, "rejected_kind", "?"))) for p in pairs)
    if not table:
        _no_data(ax, "no pairs built")
    else:
        kinds = sorted({k for k, _ in table})
        rejected = sorted({r for _, r in table})
        palette = colormaps["tab10"]
        bottom = [0] * len(kinds)
        for n, r in enumerate(rejected):
            heights = [table.get((k, r), 0) for k in kinds]
            ax.bar(kinds, heights, bottom=bottom, color=palette(n % 10), label=f"rejected: {r}")
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, total in enumerate(bottom):
            ax.text(x, total, str(total), ha="center", va="bottom", fontsize=10)
        ax.set_ylim(0, max(bottom) * 1.15)
        ax.set_ylabel("pairs")
        ax.set_xlabel("pair kind")
        ax.tick_params(axis="x", labelsize=9)
        ax.legend(fontsize=8, title="stacked by", title_fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Preference pairs by kind ({sum(table.values())} in all)")
    fig.tight_layout()
    return _save(fig, path)


def write_summary(folder: Path, stats: Mapping[str, Any], probe_results: Sequence[Any], pairs: Sequence[Any],
                  samples: Sequence[Any], *, question_kinds: Optional[Mapping[str, str]] = None,
                  max_samples: int = 8) -> list[Path]:
    """Write ``summary.md``, ``similarity_hist.png``, ``filter_counts.png`` and ``pair_kinds.png``.

    ``stats`` keys read (all optional): ``questions`` / ``cases`` ({by_label, by_kind}),
    ``filters`` (rows of :func:`data_builders.filters.summarize`), ``probe_agreement`` (nested
    {dataset label: {probe label: count}}), ``split`` (info of :func:`group_split`) and the probe
    thresholds (``probe_thresholds``, ``probe`` or ``config.builder.probe``: ``ook_max_top1``,
    ``ik_min_top1``). ``probe_results``: ProbeResults or their dicts. ``pairs``: Pairs or dicts.
    ``samples``: dicts (question, evidence_titles, chosen, rejected, pair_kind, ...) or
    ``(Case, Pair)`` tuples; the first ``max_samples`` are written out. ``question_kinds`` maps
    question id -> kind for the second panel of the similarity plot. Every file is written
    atomically (a plot with a "no data" note when its data is empty). Plots are drawn on Agg
    canvases without pyplot, so the caller's matplotlib backend is left alone. Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    warning = warn_if_all_ambiguous(probe_results)
    summary = folder / SUMMARY
    atomic_write_text(summary, _markdown(stats, probe_results, pairs, samples, warning, max_samples))
    return [
        summary,
        _similarity_plot(folder / SIMILARITY_PLOT, probe_results, _probe_thresholds(stats), question_kinds or {}),
        _filter_plot(folder / FILTER_PLOT, _filter_rows(stats)),
        _pair_kind_plot(folder / PAIR_KIND_PLOT, pairs),
    ]
