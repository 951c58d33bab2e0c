"""``halluguard eval``: every model on the same held-out questions, before and after, with the metrics the
literature uses.

Inputs: the ``build`` manifest of the experiment (``heldout``, ``pairs``, ``ppo_prompts``, ``index``) and,
for each trained model, its stage's output (see :mod:`halluguard.evaluation.models`).
Outputs (``runs/<exp>/eval/``, written atomically):

* ``results.json`` - the schema below; ``samples.jsonl`` - one line per question: the question, its
  labels and, under ``models``, each model's answer, refusal decision and score, EM, F1, correctness;
* ``report.html`` (self-contained, charts embedded) and ``report.md``; ``chart_<metric>.png``;
  ``ppo_curves.png`` when the ppo stage drew one; ``manifest.json``.

``results.json`` (``schema: halluguard.eval/1``)::

    schema, exp, created, git, versions, duration_s, config   # provenance; config = the resolved config
    data: {n_heldout, n_questions, sampled, by_label, by_kind, with_gold_answers, context_holds_answer,
           overlap: {policy, count, by_question_id, by_text_and_evidence, case_ids},
           gate: {max_top1, refusal, top1_from: {build, evidence, undecided}}}
    definitions: {positive_class, refusal, correct, honesty_reference, comparison_baseline}
    metrics: {name: {direction, definition, source, group}}          # the registry, once
    models: {name: {status: ok|unavailable|failed, reason, kind: policy|gated|baseline, description,
                    source, seconds, questions_per_s,
                    summary: halluguard.evaluation.summarize() output | null}}
              # summary.metrics[name] = {value, ci: [low, high] | null, n, direction, definition, source, group}
    comparisons: {after_name: {before, after, ...halluguard.evaluation.compare() output
                  (n_questions, metrics{before, after, diff, ci, direction, change}, mcnemar, transitions),
                  changed: {count, wrong_way, answer_to_refusal: [case_id], refusal_to_answer: [case_id],
                            wrong_way_case_ids: [case_id]}}}
    key_metrics: [names printed in the console table]
    reward_audit: {status: ok|skipped|failed, reason, scorer, warnings: [str],      # with eval.reward_audit
                   models: {name: {ik|ook: {refused|answered: {n, rm, rules, hybrid}, gap: {rm, rules, hybrid}},
                                   drift: {rm, rules, hybrid}}}}
    sampled: {status: ok, settings, groups: [ook, ik_context_has_answer, ik], better,   # eval.sampled.samples > 0
              models: {name: {status, seconds, groups: {group: {n, mean}}}},
              comparisons: {after_name: {before, after, groups: {group: {n, before, after, diff, ci, p_value,
                                                                         questions_up, questions_down,
                                                                         questions_for_80pct_power, change}}}}}
      (halluguard.evaluation.sampled_refusal; each question's rates and answers in sampled.jsonl)

A value of ``null`` is "n/a" (e.g. accuracy without gold answers, honesty without the reference model).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import (
    Manifest,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    write_jsonl,
)
from halluguard.config import plain_text, stage_dir, to_plain
from halluguard.errors import ConfigError, HalluguardError

log = logging.getLogger("halluguard.eval")

SCHEMA = "halluguard.eval/1"
CORRECT_DEFINITION = ("an answer (not a refusal) to an IK question whose normalised text contains a normalised gold "
                      "answer as whole words (SQuAD normalisation); a refusal is never correct; model-free "
                      "baselines without answer text are not judged")


def run(cfg: DictConfig) -> Manifest:
    from halluguard.evaluation.models import selected_specs
    from halluguard.retrieval import Encoder

    start = time.perf_counter()
    specs = selected_specs(cfg)  # an unknown model name fails here, before anything loads
    build = Manifest.load(stage_dir(cfg, "build"))
    encoder = Encoder.from_config(cfg.retriever)  # one encoder for the gate's similarities and the detector
    questions, data = prepare_questions(cfg, build, encoder)
    detector = refusal_detector(cfg, encoder)
    results_by_name = evaluate(cfg, specs, questions, detector)
    comparisons, changes = compare_models(cfg, results_by_name, questions)
    results = assemble_results(cfg, data, results_by_name, comparisons)
    if cfg.eval.reward_audit:
        from halluguard.evaluation.reward_audit import run_audit

        results["reward_audit"] = run_audit(cfg, results_by_name, questions, build, detector)
    sampled_per_model = None
    if cfg.eval.sampled.samples > 0:
        import torch

        from halluguard.evaluation.sampled_refusal import run_sampled

        device = "cuda" if torch.cuda.is_available() else "cpu"
        results["sampled"], sampled_per_model = run_sampled(cfg, results_by_name, questions, detector,
                                                            comparisons, device)

    manifest = Manifest(stage="eval", exp=cfg.exp, config=to_plain(cfg))
    manifest.add_input("build_manifest", build.path)
    manifest.add_input("heldout", build.output_path("heldout", verify=False))
    final = stage_dir(cfg, "eval")
    with atomic_dir(final) as out:
        written = write_outputs(cfg, out, results, results_by_name, questions, changes)
        if sampled_per_model is not None:
            from halluguard.evaluation.sampled_refusal import sampled_rows

            written["sampled"] = out / "sampled.jsonl"
            write_jsonl(written["sampled"], sampled_rows(questions, sampled_per_model))
        results["duration_s"] = round(time.perf_counter() - start, 3)
        atomic_write_json(out / "results.json", results)
        for name, path in {"results": out / "results.json", **written}.items():
            manifest.add_output(name, path, out)
        manifest.metrics = key_metrics(results)
        manifest.duration_s = results["duration_s"]
        manifest.write(out)
    manifest.path = final / "manifest.json"
    print_summary(results, final)
    return manifest


# ---------------------------------------------------------------- settings and questions

def prepare_questions(cfg, build: Manifest, encoder):
    """The held-out questions, checked against training, sampled, with the gate's similarity filled in."""
    from datasets import load_from_disk

    from halluguard.evaluation.heldout import (
        fill_gate_similarity,
        find_overlap,
        load_heldout,
        sample_questions,
    )
    from halluguard.retrieval import KnowledgeIndex, passage_text

    ecfg = cfg.eval
    questions = load_heldout(build.output_path("heldout"))
    questions, validation = leave_out_validation(cfg, questions)
    training = list(load_from_disk(str(build.output_path("pairs")))["train"])
    training += list(load_from_disk(str(build.output_path("ppo_prompts"))))
    overlap = find_overlap(questions, training)
    overlap["policy"] = str(ecfg.overlap)
    if overlap["count"]:
        message = (f"{overlap['count']} of {len(questions)} held-out questions also appear in training "
                   f"({overlap['by_question_id']} by question_id, {overlap['by_text_and_evidence']} by the same "
                   f"question with the same evidence; e.g. {', '.join(overlap['case_ids'][:3])})")
        if ecfg.overlap == "error":
            raise HalluguardError(f"{message}: a model would be judged on what it was trained on. Rebuild the "
                                  "split (`halluguard build`), or set eval.overlap=warn to evaluate anyway and "
                                  "flag them in samples.jsonl")
        log.warning("%s; evaluating anyway (eval.overlap=warn), flagged in samples.jsonl", message)
    n_heldout = len(questions)
    questions = sample_questions(questions, int(ecfg.max_questions), int(ecfg.seed))

    index = KnowledgeIndex.load(build.output_path("index"), nprobe=cfg.retriever.nprobe)
    gate_counts = fill_gate_similarity(questions, {p.id: passage_text(p) for p in index.passages}, encoder)
    data = {
        "build_manifest": str(build.path),
        "n_heldout": n_heldout,
        "validation_left_out": validation,
        "n_questions": len(questions),
        "sampled": len(questions) < n_heldout,
        "by_label": dict(Counter(q.label for q in questions)),
        "by_kind": dict(Counter(q.kind for q in questions)),
        "with_gold_answers": sum(1 for q in questions if q.answers),
        "context_holds_answer": sum(1 for q in questions if q.evidence_holds_answer),
        "overlap": overlap,
        "gate": {"max_top1": float(ecfg.gate_max_top1), "refusal": plain_text(ecfg.gate_refusal), "top1_from": gate_counts},
    }
    return questions, data


def leave_out_validation(cfg, questions: list) -> tuple[list, dict | None]:
    """The held-out questions less those PPO chose its checkpoint on (``ppo.select.by=validation``), for every
    model alike: a result chosen on a question must not be judged on it. ``(questions, None)`` when the PPO run
    of this experiment (if any) chose by the KL budget."""
    from halluguard.ppo.checkpoint_selection import validation_case_ids

    path = stage_dir(cfg, "ppo") / "manifest.json"
    if not path.is_file():
        return questions, None
    ids = set(validation_case_ids(Manifest.load(path.parent)))
    if not ids:
        return questions, None
    kept = [q for q in questions if q.case_id not in ids]
    missing = len(ids) - (len(questions) - len(kept))
    if missing:
        raise HalluguardError(f"the PPO run in {path.parent} chose its checkpoint on {len(ids)} held-out questions, "
                              f"{missing} of which this build's held-out set does not have: it was trained on "
                              "another build; re-run `halluguard ppo` on this one")
    log.info("leaving out the %d validation questions PPO chose its checkpoint on (%s)", len(ids), path)
    print(f"evaluating {len(kept)} held-out questions: the {len(ids)} that `ppo.select.by=validation` chose PPO's "
          f"checkpoint on are left out for every model")
    return kept, {"n": len(ids), "ppo_manifest": str(path)}


def refusal_detector(cfg, encoder):
    """The project's one detector; the gate's fixed refusal must be one by its judgement too."""
    from halluguard.refusal import RefusalDetector

    detector = RefusalDetector(encoder=encoder, threshold=cfg.reward.refusal_threshold)
    texts = plain_text(cfg.eval.gate_refusal)
    for lang, text in (texts.items() if isinstance(texts, dict) else [("", texts)]):
        if not bool(detector.is_refusal([text])[0]):
            key = f"eval.gate_refusal.{lang}" if lang else "eval.gate_refusal"
            raise ConfigError(f"config key '{key}' ({text!r}) is not a refusal to the refusal detector; write a "
                              "sentence that declines to answer (e.g. \"I'm sorry, the documents I have do not "
                              "contain the answer.\")")
    return detector


# ---------------------------------------------------------------- models

def evaluate(cfg, specs, questions, detector) -> dict:
    """A :class:`~halluguard.evaluation.runner.ModelResult` per model, in the configured order."""
    import torch

    from halluguard.evaluation.models import parse_spec
    from halluguard.evaluation.runner import (
        attach_outcomes,
        gated,
        model_free,
        run_policy,
    )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ecfg = cfg.eval
    max_top1, refusal_text = float(ecfg.gate_max_top1), plain_text(ecfg.gate_refusal)
    policies = {}
    for spec in specs:  # each policy runs once, even when a gated model also needs it
        if spec.policy and spec.policy not in policies:
            log.info("evaluating %s on %d questions", spec.policy, len(questions))
            policies[spec.policy] = run_policy(cfg, parse_spec(spec.policy), questions, detector, device)
    results = {}
    for spec in specs:
        if spec.kind == "policy":
            result = policies[spec.name]
        elif spec.kind == "gated":
            result = gated(spec, policies[spec.policy], questions, max_top1, refusal_text)
        else:
            result = model_free(spec, questions, max_top1, refusal_text)
        results[spec.name] = attach_outcomes(result, questions)
        if not result.ok:
            log.warning("%s: %s", spec.name, result.reason)
    return results


def baseline_for(name: str, results: dict):
    """Whom a model is compared with: what it was made from. sft, prompt_only and the gate against the
    untrained reference; a trained policy (ppo, dpo, grpo) against the SFT reference it started from (the
    reference when there is no SFT); ``gated_<x>`` against ``<x>``. None for the reference itself and
    for always/never-refuse, which are bounds, not changes."""
    from halluguard.evaluation.models import GATED_PREFIX

    if name in ("reference", "always_refuse", "never_refuse"):
        return None
    if name.startswith(GATED_PREFIX):
        candidates = (name[len(GATED_PREFIX):],)
    elif name in ("sft", "prompt_only", "gate"):
        candidates = ("reference",)
    else:
        candidates = ("sft", "reference")
    for candidate in candidates:
        found = results.get(candidate)
        if candidate != name and found is not None and found.ok:
            return candidate
    return None


def compare_models(cfg, results: dict, questions) -> tuple[dict, dict]:
    """Paired before/after comparisons and the rows of questions whose behaviour changed."""
    from halluguard.evaluation import compare
    from halluguard.evaluation.report import changed_rows

    ecfg = cfg.eval
    reference = honesty_reference(results)
    comparisons, changes = {}, {}
    for name, result in results.items():
        before_name = baseline_for(name, results)
        if not result.ok or before_name is None:
            continue
        before = results[before_name]
        comp = compare(before.outcomes, result.outcomes, reference=reference, ci=ecfg.bootstrap > 0,
                       n_boot=max(1, int(ecfg.bootstrap)), seed=int(ecfg.seed))
        rows = changed_rows(questions, before, result)
        comparisons[name] = {"before": before_name, "after": name, **comp, "changed": {
            "count": len(rows), "wrong_way": sum(r["wrong_way"] for r in rows),
            "answer_to_refusal": [r["case_id"] for r in rows if r["direction"] == "answer_to_refusal"],
            "refusal_to_answer": [r["case_id"] for r in rows if r["direction"] == "refusal_to_answer"],
            "wrong_way_case_ids": [r["case_id"] for r in rows if r["wrong_way"]]}}
        # The side-by-side table is for models that write text; a model-free one's rows say nothing new.
        if result.spec.kind != "baseline":
            changes[name] = rows
    return comparisons, changes


def honesty_reference(results: dict):
    """The untrained reference's outcomes: "known" questions for the Alignment-for-Honesty metrics."""
    reference = results.get("reference")
    return reference.outcomes if reference is not None and reference.ok else None


def assemble_results(cfg, data: dict, results: dict, comparisons: dict) -> dict:
    """``results.json`` (schema in the module docstring)."""
    import datetime as dt

    from halluguard.artifacts import git_revision, library_versions
    from halluguard.evaluation import METRICS, summarize
    from halluguard.evaluation.report import KEY_METRICS

    ecfg = cfg.eval
    reference = honesty_reference(results)
    models = {}
    for name, result in results.items():
        summary = None
        if result.ok:
            summary = summarize(result.outcomes, reference=reference, ci=ecfg.bootstrap > 0,
                                n_boot=max(1, int(ecfg.bootstrap)), seed=int(ecfg.seed))
        models[name] = {"status": result.status, "reason": result.reason, "kind": result.spec.kind,
                        "description": result.spec.description, "source": result.source,
                        "seconds": None if result.seconds is None else round(result.seconds, 3),
                        "questions_per_s": result.questions_per_s, "summary": summary}
    return {
        "schema": SCHEMA, "exp": cfg.exp,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(), "versions": library_versions(), "duration_s": None, "config": to_plain(cfg),
        "data": data,
        "definitions": {
            "positive_class": "should abstain (OOK); a refusal is the positive prediction",
            "refusal": f"halluguard.refusal.RefusalDetector, threshold reward.refusal_threshold="
                       f"{cfg.reward.refusal_threshold}; model-free baselines decide by construction",
            "correct": CORRECT_DEFINITION,
            "honesty_reference": "reference" if reference is not None else None,
            "comparison_baseline": "sft when it ran, else reference (sft and prompt_only: reference)",
        },
        "metrics": {name: {"direction": m.direction, "definition": m.definition, "source": m.source,
                           "group": m.group} for name, m in METRICS.items()},
        "models": models,
        "comparisons": comparisons,
        "key_metrics": list(KEY_METRICS),
    }


# ---------------------------------------------------------------- outputs

def sample_rows(questions, results: dict):
    """One samples.jsonl line per question, every model that ran side by side."""
    for i, q in enumerate(questions):
        row = {"case_id": q.case_id, "question_id": q.question_id, "question": q.question, "label": q.label,
               "kind": q.kind, "answers": q.answers, "evidence_ids": q.evidence_ids,
               "evidence_holds_answer": q.evidence_holds_answer, "top1": q.top1, "gate_top1": q.gate_top1,
               "gate_top1_source": q.gate_top1_source, "overlaps_training": q.overlaps_training, "models": {}}
        for name, result in results.items():
            if not result.ok:
                continue
            entry = {"answer": result.answers[i], "refused": result.refused[i],
                     "refusal_score": None if result.refusal_scores[i] is None else round(result.refusal_scores[i], 4),
                     "em": result.em[i], "f1": None if result.f1[i] is None else round(result.f1[i], 4),
                     "correct": result.correct[i]}
            if result.gate_refused is not None:
                entry["gate_refused"] = result.gate_refused[i]
            row["models"][name] = entry
        yield row


def write_outputs(cfg, out: Path, results: dict, results_by_name: dict, questions, changes: dict) -> dict[str, Path]:
    """samples.jsonl, charts, the PPO curves when present, and the reports; returns name -> path."""
    from halluguard.evaluation.report import render_html, render_markdown, write_charts

    written = {"samples": out / "samples.jsonl"}
    write_jsonl(written["samples"], sample_rows(questions, results_by_name))
    charts = write_charts(results, out)
    written.update({f"chart_{m}": out / f for m, f in charts.items()})
    curves = None
    ppo_curves = stage_dir(cfg, "ppo") / "curves.png"
    if ppo_curves.is_file():
        curves = "ppo_curves.png"
        shutil.copyfile(ppo_curves, out / curves)
        written["ppo_curves"] = out / curves
    rows = int(cfg.eval.changed_rows)
    if "md" in cfg.eval.report_formats:
        atomic_write_text(out / "report.md", render_markdown(results, changes, charts, curves, rows))
        written["report_md"] = out / "report.md"
    if "html" in cfg.eval.report_formats:
        atomic_write_text(out / "report.html", render_html(results, changes, charts, out, curves, rows))
        written["report_html"] = out / "report.html"
    return written


def print_summary(results: dict, folder: Path) -> None:
    from halluguard.evaluation.report import format_console_table

    data = results["data"]
    print(f"\neval: {data['n_questions']} held-out questions ({data['by_label'].get('ik', 0)} ik, "
          f"{data['by_label'].get('ook', 0)} ook), overlap with training {data['overlap']['count']}")
    print(format_console_table(results))
    for name, comp in results["comparisons"].items():
        if comp["changed"]["count"]:
            print(f"  {comp['before']} -> {name}: {comp['changed']['count']} changed, "
                  f"{comp['changed']['wrong_way']} the wrong way; McNemar p (refusals) = "
                  f"{comp['mcnemar']['refused']['p_value']:.3g}")
    if "reward_audit" in results:
        from halluguard.evaluation.reward_audit import format_audit

        print(format_audit(results["reward_audit"]))
    if "sampled" in results:
        from halluguard.evaluation.sampled_refusal import format_sampled

        print(format_sampled(results["sampled"]))
    report = folder / ("report.html" if (folder / "report.html").is_file() else "report.md")
    print(f"report: {report}")


def key_metrics(results: dict) -> dict:
    from halluguard.evaluation.report import KEY_METRICS

    return {name: ({k: model["summary"]["metrics"][k]["value"] for k in KEY_METRICS}
                   if model["status"] == "ok" else {"status": model["status"], "reason": model["reason"]})
            for name, model in results["models"].items()}
