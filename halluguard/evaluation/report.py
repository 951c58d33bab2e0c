"""The evaluation report: the trade-off chart, bar charts per metric, and the same content as Markdown and HTML.

Inputs are the ``results.json`` dictionary the eval stage writes and the rows of its table of
changed behaviour (:func:`changed_rows`). The HTML embeds every chart as a base64 data URI, so the
file can be mailed or archived alone; the Markdown links the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

KEY_METRICS = ("abstention_recall", "over_refusal_context_has_answer", "balanced_accuracy", "abstention_f1",
               "exact_match", "hallucination_rate")
KEY_LABELS = {"abstention_recall": "abst. recall", "over_refusal_context_has_answer": "over-refusal (ctx has ans.)",
              "balanced_accuracy": "bal. acc.", "abstention_f1": "abst. F1", "exact_match": "IK EM",
              "hallucination_rate": "halluc. rate"}
KIND_COLOURS = {"policy": "#4C72B0", "gated": "#55A868", "baseline": "#9A9A9A"}


# ---------------------------------------------------------------- changed behaviour

AUDIT_NOTE = ("The reward (what PPO maximises) on each trained model's own held-out answers, split by label and by "
              "whether the model refused. A positive OOK gap means the reward prefers answering questions that "
              "should be refused: a policy can raise it by fabricating.")
SAMPLED_NOTE = ("Each question answered several times by sampling (eval.sampled); a question's rate is the fraction "
                "of its answers judged refusals. Changes are paired per question: the mean change, its 95% paired "
                "bootstrap interval and a sign-flip permutation p-value. PPO trains on sampled answers, so a "
                "change it made shows here before it flips a greedy answer.")

def changed_rows(questions, before, after) -> list[dict]:
    """Questions whose refusal decision differs between two runs, the wrong-way changes first.

    Wrong way: an in-knowledge question whose context holds the answer went answer -> refusal, or
    an out-of-knowledge question went refusal -> answer.
    """
    rows = []
    for i, q in enumerate(questions):
        if before.refused[i] == after.refused[i]:
            continue
        direction = "answer_to_refusal" if after.refused[i] else "refusal_to_answer"
        wrong = ((direction == "answer_to_refusal" and not q.should_abstain and q.evidence_holds_answer is True)
                 or (direction == "refusal_to_answer" and q.should_abstain))
        rows.append({"case_id": q.case_id, "question": q.question, "label": q.label, "kind": q.kind,
                     "direction": direction, "wrong_way": wrong, "before": before.answers[i],
                     "after": after.answers[i]})
    rows.sort(key=lambda r: not r["wrong_way"])
    return rows


# ---------------------------------------------------------------- charts

def write_charts(results: dict, out: Path) -> dict[str, str]:
    """The trade-off chart (:mod:`halluguard.evaluation.tradeoff`) and one bar chart per metric (value per model,
    95% interval as error bars); returns chart name (``tradeoff`` or the metric) -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from halluguard.evaluation.tradeoff import draw_tradeoff, tradeoff_points

    ok = {name: m for name, m in results["models"].items() if m["status"] == "ok"}
    charts = {}
    points = tradeoff_points(results)
    if points:  # first: where each model sits between refusing too little and too much
        draw_tradeoff({"models": points}, out / "chart_tradeoff.png",
                      title=f"refusal trade-off, experiment {results.get('exp', '')}".strip())
        charts["tradeoff"] = "chart_tradeoff.png"
    for metric, meta in results["metrics"].items():
        names, values, lows, highs, colours = [], [], [], [], []
        for name, model in ok.items():
            entry = model["summary"]["metrics"][metric]
            if entry["value"] is None:
                continue
            value = entry["value"]
            low, high = entry["ci"] or (value, value)
            names.append(name)
            values.append(value)
            lows.append(max(0.0, value - low))
            highs.append(max(0.0, high - value))
            colours.append(KIND_COLOURS.get(model["kind"], "#4C72B0"))
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.0))
        ax.bar(range(len(names)), values, yerr=[lows, highs], color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, max(1.0, max(v + h for v, h in zip(values, highs)) * 1.05))
        arrow = "higher is better" if meta["direction"] == "higher" else "lower is better"
        ax.set_title(f"{metric} ({arrow})", fontsize=9)
        fig.tight_layout()
        name = f"chart_{metric}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        charts[metric] = name
    return charts


# ---------------------------------------------------------------- shared tables

def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci")
    return _fmt(entry["value"]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def _ok_models(results: dict) -> list[str]:
    return [name for name, m in results["models"].items() if m["status"] == "ok"]


def key_table(results: dict) -> list[list[str]]:
    """Header + one row per model of the key metrics (the console's before/after table)."""
    rows = [["model", *(KEY_LABELS[k] for k in KEY_METRICS)]]
    for name, model in results["models"].items():
        if model["status"] != "ok":
            rows.append([name, f"{model['status']}: {model['reason']}"])
            continue
        metrics = model["summary"]["metrics"]
        rows.append([name, *(_fmt(metrics[k]["value"]) for k in KEY_METRICS)])
    return rows


def format_console_table(results: dict, reason_width: int = 90) -> str:
    rows = key_table(results)
    width = len(rows[0])
    widths = [max(len(r[i]) for r in rows if len(r) == width) for i in range(width)]
    lines = []
    for row in rows:
        if len(row) != width:  # a model that did not run: its reason instead of numbers
            reason = row[1] if len(row[1]) <= reason_width else row[1][:reason_width - 3] + "..."
            lines.append(f"{row[0]:<{widths[0]}}  {reason}")
            continue
        lines.append("  ".join(f"{c:<{widths[0]}}" if i == 0 else f"{c:>{widths[i]}}" for i, c in enumerate(row)))
    return "\n".join(lines)


# ---------------------------------------------------------------- Markdown

def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(results: dict, changes: dict[str, list[dict]], charts: dict[str, str],
                    curves: str | None, max_rows: int) -> str:
    ok = _ok_models(results)
    data = results["data"]
    lines = [f"# Abstention evaluation - experiment `{results['exp']}`", "",
             (f"{data['n_questions']} held-out questions ({data['by_label'].get('ik', 0)} in-knowledge, "
             f"{data['by_label'].get('ook', 0)} out-of-knowledge) of {data['n_heldout']}; "
             f"{data['with_gold_answers']} with gold answers. Overlap with training: {data['overlap']['count']} "
             f"(policy `{data['overlap']['policy']}`). Git {results['git']}.{_validation_note(data)}"), "",
             "## Models", ""]
    lines += _md_table(["model", "status", "what it is", "questions/s"],
                       [[n, m["status"] if m["status"] == "ok" else f"{m['status']}: {m['reason']}", m["description"],
                         _fmt(m.get("questions_per_s"))] for n, m in results["models"].items()])
    lines += ["", "## Key metrics", ""]
    table = key_table(results)
    lines += _md_table(table[0], [r for r in table[1:] if len(r) == len(table[0])])
    lines += ["", "## Every metric (95% bootstrap interval)", ""]
    for group in dict.fromkeys(m["group"] for m in results["metrics"].values()):
        lines += [f"### {group}", ""]
        names = [n for n, m in results["metrics"].items() if m["group"] == group]
        header = ["metric", "better", *ok]
        rows = [[n, results["metrics"][n]["direction"],
                 *(_with_ci(results["models"][m]["summary"]["metrics"][n]) for m in ok)] for n in names]
        lines += _md_table(header, rows)
        lines += [""] + [f"- **{n}**: {results['metrics'][n]['definition']} ({results['metrics'][n]['source']})"
                         for n in names] + [""]
    lines += ["## Per question kind", ""] + _md_table(*_kind_table(results)) + [""]
    lines += ["## Before / after", ""]
    for name, comp in results["comparisons"].items():
        lines += _md_comparison(name, comp, changes.get(name), max_rows)
    lines += ["## Charts", ""] + [f"![{m}]({f})" for m, f in charts.items()] + [""]
    if curves:
        lines += ["## PPO reward and KL", "", f"![ppo curves]({curves})", ""]
    if "reward_audit" in results:
        from halluguard.evaluation.reward_audit import format_audit

        lines += ["## Reward audit", "", AUDIT_NOTE, "", "```text", format_audit(results["reward_audit"]), "```", ""]
    if "sampled" in results:
        from halluguard.evaluation.sampled_refusal import format_sampled

        lines += ["## Sampled refusal rates", "", SAMPLED_NOTE, "", "```text", format_sampled(results["sampled"]),
                  "```", ""]
    return "\n".join(lines) + "\n"


def _kind_table(results: dict) -> tuple[list[str], list[list[str]]]:
    ok = _ok_models(results)
    header = ["kind", "n", "should abstain", *(f"{m} refused" for m in ok)]
    kinds: dict[str, dict] = {}
    for m in ok:
        for kind, entry in results["models"][m]["summary"]["by_kind"].items():
            kinds.setdefault(kind, entry)
    rows = []
    for kind, entry in kinds.items():
        refused = []
        for m in ok:
            per = results["models"][m]["summary"]["by_kind"].get(kind, {}).get("metrics", {})
            # The refusal rate on a kind is its abstention recall (OOK) or its over-refusal (IK).
            rate = per.get("abstention_recall") or per.get("over_refusal")
            refused.append(_fmt(rate["value"]) if rate else "n/a")
        rows.append([kind, str(entry["n_questions"]), _fmt(entry["should_abstain"], 2), *refused])
    return header, rows


def _md_comparison(name: str, comp: dict, rows: list[dict] | None, max_rows: int) -> list[str]:
    tests = comp["mcnemar"]
    lines = [f"### {comp['before']} -> {name}", "",
             (f"McNemar on refusals: all p = {_fmt(tests['refused']['p_value'])}, OOK p = "
             f"{_fmt((tests['refused_should_abstain'] or {}).get('p_value'))}, IK p = "
             f"{_fmt((tests['refused_in_knowledge'] or {}).get('p_value'))}; on IK correctness p = "
             f"{_fmt((tests['correct'] or {}).get('p_value'))}. Changed: {comp['changed']['count']} questions, "
             f"{comp['changed']['wrong_way']} the wrong way."), ""]
    diffs = [[m, _fmt(e["before"]), _fmt(e["after"]), _fmt(e["diff"]),
              f"[{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e["ci"] else "n/a", e["change"] or "n/a"]
             for m, e in comp["metrics"].items() if m in KEY_METRICS]
    lines += _md_table(["metric", "before", "after", "diff", "95% CI", "change"], diffs) + [""]
    if rows:
        shown = rows[:max_rows]
        lines += _md_table(["", "case", "kind", "change", "question", comp["before"], name],
                           [["WRONG WAY" if r["wrong_way"] else "", r["case_id"], r["kind"],
                             r["direction"].replace("_", " "), r["question"], r["before"], r["after"]] for r in shown])
        if len(rows) > len(shown):
            lines.append(f"\n({len(rows) - len(shown)} more in samples.jsonl)")
        lines.append("")
    return lines


# ---------------------------------------------------------------- HTML

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f2f2f2} td.num{text-align:right;white-space:nowrap}
tr.wrong td{background:#fde2e2} .defn{color:#555;font-size:0.85em}
.charts img{margin:4px;border:1px solid #eee} .failed{color:#a00}"""

# Records each image's decoded width in the DOM, so a headless browser can prove the charts render.
IMAGE_CHECK = ("<script>window.addEventListener('load',function(){var n=0;"
               "for(var i=0;i<document.images.length;i++){var im=document.images[i];"
               "im.setAttribute('data-natural-width',im.naturalWidth);if(im.naturalWidth>0)n++;}"
               "document.body.setAttribute('data-images-loaded',n);});</script>")


def _h(text) -> str:
    return html.escape(str(text))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_h(alt)}" src="data:image/png;base64,{data}">'


def render_html(results: dict, changes: dict[str, list[dict]], charts: dict[str, str], folder: Path,
                curves: str | None, max_rows: int) -> str:
    ok = _ok_models(results)
    data = results["data"]
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>halluguard eval - {_h(results['exp'])}</title>"
             f"<style>{CSS}</style></head><body>"),
             f"<h1>Abstention evaluation - experiment <code>{_h(results['exp'])}</code></h1>",
             (f"<p>{data['n_questions']} held-out questions ({data['by_label'].get('ik', 0)} in-knowledge, "
             f"{data['by_label'].get('ook', 0)} out-of-knowledge) of {data['n_heldout']}; "
             f"{data['with_gold_answers']} with gold answers. Overlap with training: {data['overlap']['count']} "
             f"(policy <code>{_h(data['overlap']['policy'])}</code>). Git {_h(results['git'])}."
             f"{_h(_validation_note(data))}</p>"),
             "<h2>Models</h2>"]
    parts.append(_html_table(["model", "status", "what it is", "questions/s"],
                             [[n, m["status"] if m["status"] == "ok" else f"{m['status']}: {m['reason']}",
                               m["description"], _fmt(m.get("questions_per_s"))] for n, m in results["models"].items()],
                             ["" if m["status"] == "ok" else "failed" for m in results["models"].values()]))
    table = key_table(results)
    parts += ["<h2>Key metrics</h2>", _html_table(table[0], [r for r in table[1:] if len(r) == len(table[0])])]
    parts.append("<h2>Every metric (95% bootstrap interval)</h2>")
    for group in dict.fromkeys(m["group"] for m in results["metrics"].values()):
        names = [n for n, m in results["metrics"].items() if m["group"] == group]
        rows = [[n, results["metrics"][n]["direction"],
                 *(_with_ci(results["models"][m]["summary"]["metrics"][n]) for m in ok)] for n in names]
        parts += [f"<h3>{_h(group)}</h3>", _html_table(["metric", "better", *ok], rows)]
        parts.append("<ul class='defn'>" + "".join(
            f"<li><b>{_h(n)}</b> ({_h(results['metrics'][n]['direction'])} is better): "
            f"{_h(results['metrics'][n]['definition'])} <i>{_h(results['metrics'][n]['source'])}</i></li>"
            for n in names) + "</ul>")
    parts += ["<h2>Charts</h2><div class='charts'>"]
    parts += [_img(folder / f, m) for m, f in charts.items()]
    parts.append("</div>")
    if curves:
        parts += ["<h2>PPO reward and KL</h2>", _img(folder / curves, "ppo curves")]
    parts += ["<h2>Per question kind</h2>", _html_table(*_kind_table(results))]
    parts.append("<h2>Before / after: questions whose behaviour changed</h2>")
    for name, comp in results["comparisons"].items():
        parts.append(_html_comparison(name, comp, changes.get(name), max_rows))
    if "reward_audit" in results:
        from halluguard.evaluation.reward_audit import format_audit

        parts += ["<h2>Reward audit</h2>", f"<p>{html.escape(AUDIT_NOTE)}</p>",
                  f"<pre>{html.escape(format_audit(results['reward_audit']))}</pre>"]
    if "sampled" in results:
        from halluguard.evaluation.sampled_refusal import format_sampled

        parts += ["<h2>Sampled refusal rates</h2>", f"<p>{html.escape(SAMPLED_NOTE)}</p>",
                  f"<pre>{html.escape(format_sampled(results['sampled']))}</pre>"]
    parts.append(IMAGE_CHECK + "</body></html>")
    return "\n".join(parts) + "\n"


def _html_comparison(name: str, comp: dict, rows: list[dict] | None, max_rows: int) -> str:
    tests = comp["mcnemar"]
    out = [f"<h3>{_h(comp['before'])} &rarr; {_h(name)}</h3>",
           (f"<p>McNemar on refusals: all p = {_fmt(tests['refused']['p_value'])}, OOK p = "
           f"{_fmt((tests['refused_should_abstain'] or {}).get('p_value'))}, IK p = "
           f"{_fmt((tests['refused_in_knowledge'] or {}).get('p_value'))}; on IK correctness p = "
           f"{_fmt((tests['correct'] or {}).get('p_value'))}. Changed: {comp['changed']['count']} questions, "
           f"<b>{comp['changed']['wrong_way']} the wrong way</b> (IK answer&rarr;refusal where the context holds "
           "the answer, OOK refusal&rarr;answer).</p>")]
    diffs = [[m, _fmt(e["before"]), _fmt(e["after"]), _fmt(e["diff"]),
              f"[{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e["ci"] else "n/a", e["change"] or "n/a"]
             for m, e in comp["metrics"].items() if m in KEY_METRICS]
    out.append(_html_table(["metric", "before", "after", "diff", "95% CI", "change"], diffs))
    if rows is not None:
        shown = rows[:max_rows]
        out.append(_html_table(
            ["", "case", "kind", "change", "question", f"{comp['before']} said", f"{name} said"],
            [["WRONG WAY" if r["wrong_way"] else "", r["case_id"], r["kind"], r["direction"].replace("_", " "),
              r["question"], r["before"], r["after"]] for r in shown],
            ["wrong" if r["wrong_way"] else "" for r in shown]).replace("<table>", "<table class='changed'>", 1))
        if len(rows) > len(shown):
            out.append(f"<p>({len(rows) - len(shown)} more in samples.jsonl)</p>")
    return "\n".join(out)


def _validation_note(data: dict) -> str:
    """Said when PPO's checkpoint was chosen on some held-out questions, which every model then skips."""
    left = data.get("validation_left_out")
    if not left:
        return ""
    return (f" Not counted: the {left['n']} held-out questions PPO's checkpoint was chosen on "
            "(`ppo.select.by=validation`), left out for every model.")
