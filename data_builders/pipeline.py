"""The build pipeline: knowledge base + questions -> probe, cases, preference pairs, splits, report.

    encode passages and questions (once) -> full FAISS index
    group of each question (its gold passage's group, else its best hit's) -> held-out groups
    training retrieval sees only training passages; held-out retrieval sees everything
    probe every question -> ik / ook / ambiguous (ambiguous leaves training, counted)
    cases: the questions, plus verified OOK cases synthesised from IK ones
    pairs per case (refusal vs fabrication; grounded vs needless refusal / wrong answer)
    optional: on-policy fabrications and NLL from the reference model
    filters (each counted) -> outputs + stats + summary

Everything is written into ``out_dir`` (the caller makes that folder atomic).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from data_builders import filters, parallel, report, responses, splits, synthesis
from data_builders.answer_types import contains_answer
from data_builders.probe import AMBIGUOUS, IK, OOK, agreement, probe_questions
from data_builders.records import (FABRICATION_ON_POLICY, OOK_REFUSAL_VS_FABRICATION, PAIR_KINDS, Case, Pair,
                                   ProbeResult)
from halluguard.artifacts import write_jsonl
from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question
from halluguard.language import check_language, count_languages, detect_language
from halluguard.models import language_warnings
from halluguard.prompting import build_messages, wants_retrieval_score
from halluguard.retrieval import Encoder, Hit, KnowledgeIndex, passage_text

log = logging.getLogger("halluguard.build")


class BuildResult:
    def __init__(self, stats: dict, index: KnowledgeIndex, outputs: dict[str, Path]):
        self.stats, self.index, self.outputs = stats, index, outputs


def build(cfg, passages: list[Passage], questions: list[Question], encoder: Encoder, out_dir: Path,
          policy: Optional[tuple[Any, Any]] = None, detector=None) -> BuildResult:
    """Run every builder step; ``policy`` = (model, tokenizer) for on-policy negatives and NLL."""
    bcfg, k = cfg.builder, int(cfg.prompt.passages)
    timings: dict[str, float] = {}
    rng = random.Random(cfg.seed)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    if bcfg.max_questions and len(questions) > bcfg.max_questions:
        questions = sorted(random.Random(cfg.seed).sample(questions, bcfg.max_questions), key=lambda q: q.id)

    language_of, language_stats = _languages(cfg, passages, questions)

    # 1. encode once; full index. Later steps (filters, detector) reuse vectors by text.
    encoder.enable_cache()
    encode_s0 = getattr(encoder, "encode_seconds", 0.0)
    shard_size = int(cfg.retriever.shard_size)
    if shard_size > 0 and len(passages) > shard_size:  # large KB: resumable shards in the cache
        from halluguard.config import resolve_cache_dir
        from halluguard.index_shards import encode_resumable

        p_vecs = encode_resumable(encoder, passages, resolve_cache_dir(cfg), shard_size)
    else:
        p_vecs = encoder.encode([passage_text(p) for p in passages], progress=True, desc="encoding passages")
    q_vecs = encoder.encode([q.question for q in questions], progress=True, desc="encoding questions")
    lap("encode")
    full = KnowledgeIndex.from_vectors(p_vecs, passages, encoder.name, cfg.retriever, seed=cfg.seed)
    by_id = {p.id: p for p in passages}

    # 2. split by group: whole articles / sections go to one side
    top1 = full.hits(*full.search_vectors(q_vecs, 1))
    groups = [by_id[q.passage_id].group if q.passage_id in by_id else (h[0].passage.group if h else "")
              for q, h in zip(questions, top1)]
    stubs = [Case(id=q.id, question=q.question, label=q.label or "", kind=q.kind, evidence=[], group=g)
             for q, g in zip(questions, groups)]
    train_stubs, held_stubs, split_info = splits.group_split(stubs, bcfg.split.heldout_fraction, bcfg.split.seed)
    held_ids = {c.id for c in held_stubs}
    heldout_groups = set(split_info.get("heldout_groups", [])) if isinstance(split_info, dict) else set()
    masked = splits.evidence_mask(passages, heldout_groups)
    train_rows = [i for i, p in enumerate(passages) if p.id not in masked]
    if not train_rows:
        raise HalluguardError("every passage is in a held-out group; lower builder.split.heldout_fraction")
    train_index = KnowledgeIndex.from_vectors(p_vecs[train_rows], [passages[i] for i in train_rows],
                                              encoder.name, cfg.retriever, seed=cfg.seed)
    lap("split")

    # 3. retrieval: the evidence each prompt shows, and a neighbour pool for synthesis
    pool = max(k, int(bcfg.synthesis.context_swap_pool))
    is_held = np.array([q.id in held_ids for q in questions])
    hits: list[list[Hit]] = [[] for _ in questions]
    for index, mask in ((train_index, ~is_held), (full, is_held)):
        rows = np.flatnonzero(mask)
        if len(rows):
            for row, h in zip(rows, index.hits(*index.search_vectors(q_vecs[rows], pool))):
                hits[row] = h
    lap("retrieve")

    # 4. probe
    results = probe_questions(questions, [h[:k] for h in hits], bcfg.probe)
    _, gray_counts = filters.gray_zone(results)
    agree = agreement(questions, results)
    model_probe = None
    if bcfg.probe.use_model and policy is not None:
        model_probe = _model_probe(cfg, questions, hits, results, policy)
    warning = report.warn_if_all_ambiguous(results)
    if warning:
        log.warning(warning)
    lap("probe")

    # 5-6. cases (+ synthesis from ik questions) and their pairs, per question: in shards over
    # builder.num_proc processes, each question with its own RNG, so the output does not depend on num_proc
    cases, pairs, synth_counts = _cases_and_pairs(cfg, questions, groups, hits, results, held_ids, language_of,
                                                  passages, by_id, int(bcfg.num_proc))
    case_by_id = {c.id: c for side in cases.values() for c in side}
    lap("cases_and_pairs")

    # 6b. the retrieval match each prompt states (prompt.retrieval_hint): what the gate would see
    if wants_retrieval_score(cfg.prompt):
        _set_retrieval_scores(list(case_by_id.values()), encoder)
        lap("retrieval_scores")

    # 7. the reference model's view (optional): on-policy fabrications, NLL of negatives
    prompt_text = {}
    nll_before_filters: dict[str, list[float]] = {}
    if policy is not None and (bcfg.negatives.on_policy or bcfg.filters.nll):
        from halluguard.prompting import render_prompt

        model, tokenizer = policy
        for c in case_by_id.values():
            prompt_text[c.id] = render_prompt(tokenizer, _messages(c, cfg.prompt))
        if bcfg.negatives.on_policy:
            pairs = _add_on_policy(pairs, cases, prompt_text, model, tokenizer, bcfg, detector, rng, cfg.seed)
            lap("on_policy")
        if bcfg.filters.nll:
            from data_builders.policy_scoring import mean_token_nll

            for side, side_pairs in pairs.items():
                nll = mean_token_nll(model, tokenizer, [prompt_text[p.case_id] for p in side_pairs],
                                     [p.rejected for p in side_pairs], progress=True)
                pairs[side] = [replace(p, scores={**p.scores, "nll": round(float(v), 4)})
                               for p, v in zip(side_pairs, nll)]
            nll_before_filters = _nll_by_kind(pairs)
            lap("nll")

    # 8. filters, each counted, on both sides
    filter_reports: dict[str, list] = {}
    kept_cases: dict[str, list[Case]] = {}
    for side in ("train", "heldout"):
        reps: list[dict] = []

        def timed(fn, *args, **kw):
            t0 = time.perf_counter()
            kept, counts = fn(*args, **kw)
            reps.append({**counts, "seconds": round(time.perf_counter() - t0, 3)})
            return kept

        side_cases = cases[side]
        vecs = encoder.encode([c.question for c in side_cases]) if side_cases else np.zeros((0, encoder.dim), np.float32)
        # Synthetic cases are verified minimal pairs of their own source (only the evidence or the
        # key entity differs): near-identical by design, not ambiguous.
        side_cases = timed(filters.opposite_label_near_duplicates, side_cases, vecs,
                           bcfg.filters.near_duplicate_question, exempt_kinds=synthesis.SYNTHETIC_KINDS)
        alive = {c.id for c in side_cases}
        sp = [p for p in pairs[side] if p.case_id in alive]
        if detector is not None:
            sp = timed(filters.refusal_in_negative, sp, detector)
            sp = timed(filters.positive_not_refusal, sp, detector)
            sp = timed(filters.indistinguishable, sp, detector, bcfg.filters.indistinguishable_margin)
        if bcfg.filters.off_type:
            sp = timed(filters.off_type, sp)
        if bcfg.filters.nll:
            sp = timed(filters.too_fake_nll, sp, bcfg.filters.max_nll)
        sp = timed(filters.duplicate_pairs, sp, {c.id: c.question for c in side_cases}, encoder,
                   bcfg.filters.duplicate_pair)
        pairs[side] = sp
        kept_cases[side] = side_cases
        filter_reports[side] = reps
    splits.check_no_leakage(kept_cases["train"], kept_cases["heldout"])
    lap("filters")

    # 9. outputs
    outputs = _write_outputs(out_dir, cfg, kept_cases, pairs, case_by_id, results, questions, held_ids, warning)
    filter_reports["train"].insert(0, gray_counts)
    stats = _stats(questions, results, kept_cases, pairs, filter_reports, synth_counts, agree, split_info,
                   timings, warning, bcfg)
    stats["model_probe"] = model_probe
    stats["languages"] = language_stats
    stats["language_warnings"] = language_warnings(cfg.model.name_or_path, cfg.retriever.encoder,
                                                   language_stats["templates_by_question"])
    # before the too-fake filter, so the distribution shows what the threshold cuts
    stats["nll_by_rejected_kind"] = {k: _describe(v) for k, v in sorted(nll_before_filters.items())} or None
    report.write_stats(out_dir / "stats.json", stats)
    samples = _samples(pairs["train"], case_by_id, rng)
    written = report.write_summary(out_dir, stats, results, pairs["train"], samples,
                                   question_kinds={q.id: q.kind for q in questions})
    outputs.update({Path(p).stem: Path(p) for p in written})
    outputs["stats"] = out_dir / "stats.json"
    lap("outputs")
    stats["timings_s"] = timings
    stats["encoder"] = {"texts": getattr(encoder, "texts_encoded", 0),
                        "seconds": round(getattr(encoder, "encode_seconds", 0.0) - encode_s0, 3)}
    report.write_stats(out_dir / "stats.json", stats)
    return BuildResult(stats, full, outputs)


def _cases_and_pairs(cfg, questions, groups, hits, results, held_ids, language_of, passages, by_id,
                     num_proc: int) -> tuple[dict[str, list[Case]], dict[str, list[Pair]], Counter]:
    """Steps 5 and 6 for every question the probe decided (ambiguous ones stay out), in question order."""
    k = int(cfg.prompt.passages)
    tasks = [{"question": q.to_dict(), "group": g, "side": "heldout" if q.id in held_ids else "train",
              "label": r.label, "language": language_of[q.id], "evidence": [x.passage.id for x in h[:k]],
              "neighbours": [x.passage.id for x in h]}
             for q, g, h, r in zip(questions, groups, hits, results) if r.label != AMBIGUOUS]
    cases: dict[str, list[Case]] = {"train": [], "heldout": []}
    pairs: dict[str, list[Pair]] = {"train": [], "heldout": []}
    counts: Counter = Counter()
    for done in parallel.run(tasks, passages, parallel.settings(cfg), num_proc):
        cases[done["side"]] += [parallel.case_from_dict(c, by_id) for c in done["cases"]]
        pairs[done["side"]] += [Pair(**p) for p in done["pairs"]]
        counts.update(done["counts"])
    return cases, pairs, counts


def _model_probe(cfg, questions, hits, results, policy) -> dict:
    """Sample the reference model on questions with gold answers; report known/unknown beside the labels."""
    from data_builders.policy_scoring import sampled_accuracy
    from halluguard.prompting import render_prompt

    model, tokenizer = policy
    k = int(cfg.prompt.passages)
    rows = [i for i, q in enumerate(questions) if q.answers]
    prompts = [render_prompt(tokenizer, build_messages(questions[i].question, [h.passage for h in hits[i][:k]],
                                                       cfg.prompt, retrieval_score=_top_score(hits[i][:k])))
               for i in rows]
    acc = sampled_accuracy(model, tokenizer, prompts, [questions[i].answers for i in rows],
                           samples=int(cfg.builder.probe.model_samples), seed=cfg.seed)
    for i, a in zip(rows, acc):
        results[i].model_correct = round(a, 4)
    known = {i for i, a in zip(rows, acc) if a >= 0.5}
    by_label = {lab: {"known": sum(1 for i in rows if results[i].label == lab and i in known),
                      "unknown": sum(1 for i in rows if results[i].label == lab and i not in known)}
                for lab in (IK, OOK, AMBIGUOUS)}
    return {"questions_probed": len(rows), "samples": int(cfg.builder.probe.model_samples),
            "known_share": round(len(known) / len(rows), 4) if rows else None, "by_final_label": by_label}


def _add_on_policy(pairs, cases, prompt_text, model, tokenizer, bcfg, detector, rng, seed):
    from data_builders.policy_scoring import sample_fabrications

    for side, side_cases in cases.items():
        ook = [c for c in side_cases if c.label == OOK]
        if not ook:
            continue
        samples = sample_fabrications(model, tokenizer, [prompt_text[c.id] for c in ook],
                                      max_new_tokens=bcfg.negatives.on_policy_max_new_tokens,
                                      temperature=bcfg.negatives.on_policy_temperature, seed=seed)
        refused = detector.is_refusal(samples) if detector is not None else np.zeros(len(samples), bool)
        for case, text, is_ref in zip(ook, samples, refused):
            if is_ref or not text.strip():
                continue  # the model already refuses here: nothing to push against
            chosen = responses.refusal(case, rng, n=1)[0]
            pairs[side].append(Pair(case_id=case.id, pair_kind=OOK_REFUSAL_VS_FABRICATION, chosen=chosen,
                                    rejected=text, chosen_kind="refusal", rejected_kind=FABRICATION_ON_POLICY,
                                    scores={"type_match": 1.0}))
    return pairs


def _languages(cfg, passages: list[Passage], questions: list[Question]) -> tuple[dict[str, str], dict]:
    """Each question's language (``kb.language``, or detected per question for ``auto``) and the counts
    per language that the build stats report (a mixed knowledge base shows up here)."""
    setting = str(cfg.kb.language)
    if setting == "auto":
        language_of = {q.id: detect_language(q.question) for q in questions}
    else:
        check_language(setting, "config key 'kb.language'")
        language_of = {q.id: setting for q in questions}
    by_passage = count_languages(p.text for p in passages)
    by_question = count_languages(q.question for q in questions)
    stats = {"setting": setting, "templates_by_question": dict(Counter(language_of.values()).most_common()),
             "passages_detected": by_passage, "questions_detected": by_question,
             "mixed": len(set(by_passage) | set(by_question)) > 1}
    if stats["mixed"]:
        log.warning("mixed-language knowledge base: passages %s, questions %s (kb.language=%s)", by_passage,
                    by_question, setting)
    return language_of, stats


def _messages(case: Case, prompt_cfg) -> list[dict]:
    """The prompt in the case's language, unless ``prompt.language`` names one."""
    auto = str(getattr(prompt_cfg, "language", "auto") or "auto") == "auto"
    return build_messages(case.question, case.evidence, prompt_cfg,
                          language=case.meta.get("language") if auto else None,
                          retrieval_score=case.meta.get("retrieval_score"))


def _top_score(hits: list[Hit]) -> float:
    return max((h.score for h in hits), default=0.0)


def _set_retrieval_scores(cases: list[Case], encoder: Encoder) -> None:
    """``meta['retrieval_score']``: the highest cosine between a case's question and a passage its prompt
    shows. For a retrieved case that is its top-1 score; for a synthetic one (other evidence, an edited
    question) it is what the evaluation's gate computes for it (``fill_gate_similarity``)."""
    texts = sorted({passage_text(p) for c in cases for p in c.evidence})
    row = {t: i for i, t in enumerate(texts)}
    passage_vectors = encoder.encode(texts) if texts else None
    question_vectors = encoder.encode([c.question for c in cases]) if cases else []
    for case, vector in zip(cases, question_vectors):
        shown = [row[passage_text(p)] for p in case.evidence]
        case.meta["retrieval_score"] = round(float(np.max(passage_vectors[shown] @ vector)), 4) if shown else 0.0


def _pair_row(p: Pair, case: Case, prompt_cfg) -> dict:
    return {
        "prompt": _messages(case, prompt_cfg),
        "chosen": [{"role": "assistant", "content": p.chosen}],
        "rejected": [{"role": "assistant", "content": p.rejected}],
        "kind": p.pair_kind,
        "label": case.label,
        "case_id": case.id,
        "question_id": case.source_question_id,
        "case_kind": case.kind,
        "synthetic": case.synthetic,
        "evidence_ids": [e.id for e in case.evidence],
        "chosen_kind": p.chosen_kind,
        "rejected_kind": p.rejected_kind,
        "nll": p.scores.get("nll"),
        "type_match": p.scores.get("type_match"),
        "detector_chosen": p.scores.get("detector_chosen"),
        "detector_rejected": p.scores.get("detector_rejected"),
        "scores_json": json.dumps(p.scores, sort_keys=True),
    }


def _case_row(case: Case, prompt_cfg, probe: Optional[ProbeResult]) -> dict:
    return {
        "prompt": _messages(case, prompt_cfg),
        "question": case.question,
        "label": case.label,
        "kind": case.kind,
        "case_id": case.id,
        "question_id": case.source_question_id,
        "synthetic": case.synthetic,
        "answers": list(case.answers),
        "evidence_ids": [e.id for e in case.evidence],
        "evidence_holds_answer": bool(case.answers) and contains_answer("\n".join(e.text for e in case.evidence),
                                                                         case.answers),
        "group": case.group,
        "top1": probe.top1 if probe and not case.synthetic else None,
    }


def _write_outputs(out_dir: Path, cfg, cases, pairs, case_by_id, results, questions, held_ids,
                   warning: Optional[str]) -> dict[str, Path]:
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    # Saving a few thousand rows takes milliseconds: no bars for that, but the caller's setting is restored
    # (datasets' switch is process-wide; `halluguard run` goes on to stages that map and save).
    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        return _save_outputs(out_dir, cfg, cases, pairs, case_by_id, results, questions, held_ids, warning)
    finally:
        if was_enabled:
            enable_progress_bar()


def _save_outputs(out_dir: Path, cfg, cases, pairs, case_by_id, results, questions, held_ids,
                  warning: Optional[str]) -> dict[str, Path]:
    from datasets import Dataset, DatasetDict

    probe_by_q = {r.question_id: r for r in results}
    pair_rows = {side: [_pair_row(p, case_by_id[p.case_id], cfg.prompt) for p in pairs[side]] for side in pairs}
    case_rows = {side: [_case_row(c, cfg.prompt, probe_by_q.get(c.source_question_id)) for c in cases[side]]
                 for side in cases}
    for side in ("train", "heldout"):
        if not pair_rows[side]:
            labels = dict(Counter(r.label for r in results))
            raise HalluguardError(f"the build produced no {side} pairs after the filters (final labels {labels}). "
                                  + (warning or "Too few questions for a train/held-out split, or every question "
                                     "filtered out: see builder.split.heldout_fraction and builder.filters."))
    DatasetDict({s: Dataset.from_list(r) for s, r in pair_rows.items()}).save_to_disk(str(out_dir / "pairs"))
    Dataset.from_list(case_rows["train"]).save_to_disk(str(out_dir / "ppo_prompts"))
    Dataset.from_list(case_rows["heldout"]).save_to_disk(str(out_dir / "heldout"))
    for side in ("train", "heldout"):
        write_jsonl(out_dir / f"pairs_{side}.jsonl", pair_rows[side])
    write_jsonl(out_dir / "cases.jsonl", ({**c.to_dict(), "split": side} for side in cases for c in cases[side]))
    write_jsonl(out_dir / "probe.jsonl", ({**r.to_dict(), "split": "heldout" if r.question_id in held_ids else "train"}
                                          for r in results))
    return {"pairs": out_dir / "pairs", "ppo_prompts": out_dir / "ppo_prompts", "heldout": out_dir / "heldout",
            "pairs_train_jsonl": out_dir / "pairs_train.jsonl", "pairs_heldout_jsonl": out_dir / "pairs_heldout.jsonl",
            "cases": out_dir / "cases.jsonl", "probe": out_dir / "probe.jsonl"}


def _stats(questions, results, cases, pairs, filter_reports, synth_counts, agree, split_info, timings, warning, bcfg):
    def count(items, key):
        return dict(sorted(Counter(key(x) for x in items).items()))

    return {
        "questions": len(questions),
        "questions_by_dataset_label": count(questions, lambda q: q.label or "unlabelled"),
        "probe_label": count(results, lambda r: r.probe_label),
        "final_label": count(results, lambda r: r.label),
        "gray_zone": sum(r.label == AMBIGUOUS for r in results),
        "gray_zone_reasons": count([r for r in results if r.label == AMBIGUOUS], lambda r: r.reason.split(" (")[0]),
        "probe_agreement": agree,
        "probe_thresholds": {"ook_max_top1": bcfg.probe.ook_max_top1, "ik_min_top1": bcfg.probe.ik_min_top1,
                       "ik_min_gap": bcfg.probe.ik_min_gap},
        "synthesis": dict(sorted(synth_counts.items())),
        # Synthetic kinds are marked: the demo set has its own hand-written false_premise questions too.
        "cases": {side: {"total": len(c), "by_label": count(c, lambda x: x.label),
                         "by_kind": count(c, lambda x: f"synthetic/{x.kind}" if x.synthetic else x.kind)}
                  for side, c in cases.items()},
        "pairs": {side: {"total": len(p), "by_kind": count(p, lambda x: x.pair_kind),
                         "by_rejected_kind": count(p, lambda x: x.rejected_kind)} for side, p in pairs.items()},
        "pair_kinds_expected": list(PAIR_KINDS),
        "filters": filters.summarize(filter_reports["train"]),
        "filters_heldout": filters.summarize(filter_reports["heldout"]),
        "split": split_info,
        "warning": warning,
        "top1_by_final_label": {lab: _describe([r.top1 for r in results if r.label == lab]) for lab in (IK, OOK, AMBIGUOUS)},
        "timings_s": timings,
    }


def _nll_by_kind(pairs: dict[str, list[Pair]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for side_pairs in pairs.values():
        for p in side_pairs:
            if p.scores.get("nll") is not None:
                out.setdefault(p.rejected_kind, []).append(p.scores["nll"])
    return out


def _describe(values) -> Optional[dict]:
    if not values:
        return None
    a = np.asarray(values)
    return {"n": len(a), "mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "p10": round(float(np.percentile(a, 10)), 4),
            "p90": round(float(np.percentile(a, 90)), 4)}


def _samples(pairs: list[Pair], case_by_id: dict[str, Case], rng: random.Random, per_kind: int = 3) -> list[dict]:
    out = []
    for kind in PAIR_KINDS:
        of_kind = [p for p in pairs if p.pair_kind == kind]
        for p in random.Random(rng.random()).sample(of_kind, min(per_kind, len(of_kind))):
            c = case_by_id[p.case_id]
            out.append({"question": c.question, "case_kind": c.kind, "case_id": c.id,
                        "evidence_titles": [e.title or e.id for e in c.evidence],
                        "pair_kind": p.pair_kind, "chosen": p.chosen, "rejected": p.rejected,
                        "rejected_kind": p.rejected_kind})
    return out
