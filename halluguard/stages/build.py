"""``halluguard build``: read the knowledge base, embed it, and save the FAISS index.

Outputs (``runs/<exp>/build/``): ``index/`` (FAISS index + passages + info), ``questions.jsonl``
(the questions in halluguard's schema), ``manifest.json``. The preference pairs, knowledge probe
and splits of the builders issue will be written here too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, write_jsonl
from halluguard.config import stage_dir, to_plain

log = logging.getLogger("halluguard.build")


def run(cfg: DictConfig) -> Manifest:
    from data_builders.sources import load_kb
    from halluguard.retrieval import Encoder, KnowledgeIndex

    start = time.perf_counter()
    passages, questions = load_kb(cfg.kb)
    log.info("knowledge base '%s': %d passages, %d questions", cfg.kb.name, len(passages), len(questions))

    encoder = Encoder.from_config(cfg.retriever)
    t0 = time.perf_counter()
    kb_index = KnowledgeIndex.build(passages, encoder, cfg.retriever, seed=cfg.seed)
    encode_s = time.perf_counter() - t0

    manifest = Manifest(stage="build", exp=cfg.exp, config=to_plain(cfg))
    if cfg.kb.passages:
        manifest.add_input("kb_passages", Path(cfg.kb.passages))
    if cfg.kb.questions:
        manifest.add_input("kb_questions", Path(cfg.kb.questions))
    final = stage_dir(cfg, "build")
    with atomic_dir(final) as out:
        kb_index.save(out / "index")
        write_jsonl(out / "questions.jsonl", (q.to_dict() for q in questions))
        manifest.add_output("index", out / "index", out)
        manifest.add_output("questions", out / "questions.jsonl", out)
        manifest.metrics = {
            "passages": len(passages),
            "questions": len(questions),
            "questions_by_label": dict(Counter(q.label or "unlabelled" for q in questions)),
            "questions_by_kind": dict(Counter(q.kind or "unknown" for q in questions)),
            "index_kind": kb_index.info.kind,
            "index_seconds": round(encode_s, 3),
            "passages_per_second": round(len(passages) / max(encode_s, 1e-9), 1),
        }
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
    manifest.path = final / "manifest.json"
    log.info("indexed %d passages (%s) in %.1f s -> %s", len(passages), kb_index.info.kind, encode_s, final)
    return manifest
