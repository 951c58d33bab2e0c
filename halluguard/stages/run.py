"""``halluguard run``: every available stage in order on one experiment.

Today that is ``build`` followed by a look at the problem this project exists for: a few demo
questions answered by the untrained policy with retrieval (RAG), printed with the passages it saw.
In-knowledge questions show grounded answering; out-of-knowledge ones show that retrieval alone
does not stop the model from answering. The training and evaluation stages join as they land.
"""

from __future__ import annotations

import logging
import random
import time

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, write_jsonl
from halluguard.config import resolve_cache_dir, stage_dir, to_plain

log = logging.getLogger("halluguard.run")


def run(cfg: DictConfig) -> Manifest:
    from halluguard.models import resolve_policy_source
    from halluguard.stages import build

    # Fail on a wrong model path before minutes of building, not after.
    resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    build_manifest = build.run(cfg)
    timings["build"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    manifest = demo_answers(cfg, build_manifest)
    timings["demo"] = time.perf_counter() - t0
    print("\nstage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return manifest


def pick_demo_questions(questions, n: int, seed: int):
    """Half in-knowledge, half out-of-knowledge (as many as exist), in a seeded order."""
    rng = random.Random(seed)
    ik = [q for q in questions if q.label == "ik"]
    ook = [q for q in questions if q.label == "ook"]
    rng.shuffle(ik)
    rng.shuffle(ook)
    n_ook = min(len(ook), n // 2)
    picked = ik[: n - n_ook] + ook[:n_ook]
    if len(picked) < n:  # unlabelled sets
        rest = [q for q in questions if q not in picked]
        rng.shuffle(rest)
        picked += rest[: n - len(picked)]
    return picked


def demo_answers(cfg: DictConfig, build_manifest: Manifest) -> Manifest:
    from halluguard.answering import answer_questions, format_answer
    from halluguard.kb import Question
    from halluguard.kb import iter_jsonl
    from halluguard.models import load_policy
    from halluguard.retrieval import Encoder, KnowledgeIndex

    index_dir = build_manifest.output_path("index")
    questions = [Question(**obj) for _, obj in iter_jsonl(build_manifest.output_path("questions"))]
    demo = pick_demo_questions(questions, cfg.demo.questions, cfg.seed)
    if not demo:
        log.warning("the knowledge base has no questions; nothing to demo")

    kb_index = KnowledgeIndex.load(index_dir, nprobe=cfg.retriever.nprobe)
    encoder = Encoder.from_config(cfg.retriever)
    model, tokenizer = load_policy(cfg.model, resolve_cache_dir(cfg))
    records = answer_questions(model, tokenizer, kb_index, encoder, demo, cfg.prompt,
                               max_new_tokens=cfg.demo.max_new_tokens, batch_size=cfg.demo.batch_size)
    print(f"\n=== {len(records)} demo questions, answered by {cfg.model.name_or_path} with retrieval ===")
    for rec in records:
        print(format_answer(rec))

    manifest = Manifest(stage="run", exp=cfg.exp, config=to_plain(cfg))
    manifest.add_input("build_manifest", build_manifest.path)
    final = stage_dir(cfg, "run")
    with atomic_dir(final) as out:
        write_jsonl(out / "demo_answers.jsonl", (r.to_dict() for r in records))
        manifest.add_output("demo_answers", out / "demo_answers.jsonl", out)
        manifest.metrics = {"demo_questions": len(records)}
        manifest.write(out)
    manifest.path = final / "manifest.json"
    print(f"\nanswers saved to {final / 'demo_answers.jsonl'}")
    return manifest
