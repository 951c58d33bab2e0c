"""``halluguard build``: knowledge base + questions -> FAISS index, knowledge probe, preference pairs.

Outputs (``runs/<exp>/build/``, written atomically):

* ``index/`` - FAISS index over every passage, with the passages beside it
* ``questions.jsonl`` - the questions in halluguard's schema
* ``pairs/`` - ``datasets`` DatasetDict (train / heldout) with TRL columns prompt, chosen, rejected
  (conversational format) plus kind, label, evidence ids and filter scores; ``pairs_*.jsonl`` to read
* ``ppo_prompts/`` - training prompts for PPO; ``heldout/`` - held-out prompts for evaluation
* ``probe.jsonl``, ``cases.jsonl``, ``stats.json``, ``summary.md`` and PNG plots

A knowledge base without questions is only indexed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, write_jsonl
from halluguard.config import resolve_cache_dir, stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.build")


def run(cfg: DictConfig) -> Manifest:
    from data_builders.sources import load_kb
    from halluguard.retrieval import Encoder, KnowledgeIndex

    start = time.perf_counter()
    passages, questions = load_kb(cfg.kb, seed=cfg.seed)
    if not passages:
        raise HalluguardError(f"knowledge base '{cfg.kb.name}' has no passages: `halluguard build` needs one to "
                              "retrieve from (closed-book question sets such as SelfAware are for evaluation)")
    log.info("knowledge base '%s': %d passages, %d questions", cfg.kb.name, len(passages), len(questions))
    encoder = Encoder.from_config(cfg.retriever)

    manifest = Manifest(stage="build", exp=cfg.exp, config=to_plain(cfg))
    for name in ("passages", "questions"):
        if cfg.kb[name]:
            manifest.add_input(f"kb_{name}", Path(cfg.kb[name]))
    final = stage_dir(cfg, "build")
    with atomic_dir(final) as out:
        write_jsonl(out / "questions.jsonl", (q.to_dict() for q in questions))
        manifest.add_output("questions", out / "questions.jsonl", out)
        if questions:
            result = _build_pairs(cfg, passages, questions, encoder, out, final)
            kb_index, metrics = result.index, _headline(result.stats)
            for name in ("pairs", "ppo_prompts", "heldout", "stats"):
                manifest.add_output(name, result.outputs[name], out)
        else:
            log.warning("no questions: indexing only (no pairs, no probe)")
            kb_index, metrics = KnowledgeIndex.build(passages, encoder, cfg.retriever, seed=cfg.seed), {}
        kb_index.save(out / "index")
        manifest.add_output("index", out / "index", out)
        manifest.metrics = {
            "passages": len(passages),
            "questions": len(questions),
            "questions_by_label": dict(Counter(q.label or "unlabelled" for q in questions)),
            "questions_by_kind": dict(Counter(q.kind or "unknown" for q in questions)),
            "index_kind": kb_index.info.kind,
            **metrics,
        }
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
    manifest.path = final / "manifest.json"
    return manifest


def _build_pairs(cfg, passages, questions, encoder, out, final):
    from data_builders import pipeline
    from halluguard.refusal import RefusalDetector

    policy = None
    b = cfg.builder
    if b.negatives.on_policy or b.filters.nll or b.probe.use_model:
        from halluguard.models import load_policy

        policy = load_policy(cfg.model, resolve_cache_dir(cfg))
    detector = RefusalDetector(encoder=encoder if b.filters.detector_prototypes else None, skip_decided=True)
    result = pipeline.build(cfg, passages, questions, encoder, out, policy=policy, detector=detector)
    _print_summary(result.stats, final)
    return result


def _headline(stats: dict) -> dict:
    agree = stats.get("probe_agreement") or {}
    return {
        "final_label": stats["final_label"],
        "gray_zone": stats["gray_zone"],
        "pairs_train": stats["pairs"]["train"]["total"],
        "pairs_heldout": stats["pairs"]["heldout"]["total"],
        "pairs_by_kind_train": stats["pairs"]["train"]["by_kind"],
        "probe_accuracy_decided": agree.get("accuracy_decided"),
        "probe_coverage": agree.get("coverage"),
        "timings_s": stats.get("timings_s"),
        "encoder": stats.get("encoder"),
        "languages": stats.get("languages"),
        "language_warnings": stats.get("language_warnings"),
    }


def _print_summary(stats: dict, out: Path) -> None:
    print(f"\nbuild: {stats['questions']} questions -> final labels {stats['final_label']} "
          f"(gray zone {stats['gray_zone']}, kept out of training)")
    agree = stats.get("probe_agreement")
    if agree:
        print(f"probe vs dataset labels: accuracy {agree['accuracy_decided']} on the {agree['coverage']:.0%} it "
              f"decided; ook recall {agree['ook_recall']}, ook precision {agree['ook_precision']}")
    for side in ("train", "heldout"):
        p = stats["pairs"][side]
        print(f"{side:>8} pairs: {p['total']:5d}  {p['by_kind']}")
    for kind, d in (stats.get("nll_by_rejected_kind") or {}).items():
        print(f"  NLL of {kind:<22} median {d['median']:.2f}  p10 {d['p10']:.2f}  p90 {d['p90']:.2f}  (n={d['n']})")
    for warning in stats.get("language_warnings") or []:
        print(f"warning: {warning}")
    print(f"summary: {out / 'summary.md'}")
