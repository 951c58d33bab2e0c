"""Run the per-question builders (OOK synthesis, then the pairs of every case) over shards of questions.

    tasks (one JSON object per question) -> per_question() -> one JSON result per question
    num_proc > 1: the same function over ``datasets.Dataset.map(batched=True, num_proc=N)`` shards

Everything that crosses a process boundary is JSON: the task of a question (the question, its group,
split side, final label, language, and the ids of its evidence and neighbour passages), the settings,
and the result (its cases with evidence as passage ids, its pairs, its synthesis counts). The
knowledge base goes to the workers once, as a JSONL file in a temporary folder that is removed
afterwards. Both paths run the same code on the same JSON, and each question draws from its own
``random.Random`` seeded by ``(seed, question id)`` (pairs: by ``(seed, case id)``), so the output
does not depend on ``num_proc`` or on which other questions are in the build.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from data_builders import responses, synthesis
from data_builders.records import Case, Pair
from halluguard.kb import Passage, Question

IK = "ik"


def question_rng(seed: int, question_id: str, step: str) -> random.Random:
    """The RNG of one question (or case) and step: string seeds are hashed with SHA-512, so the draw is the
    same in every process and for every ``PYTHONHASHSEED``."""
    return random.Random(f"{seed}:{question_id}:{step}")


def settings(cfg) -> dict:
    """The builder settings a worker needs, as plain JSON-able data."""
    from omegaconf import OmegaConf

    bcfg = cfg.builder
    return {"seed": int(cfg.seed), "k": int(cfg.prompt.passages),
            "synthesis": OmegaConf.to_container(bcfg.synthesis, resolve=True),
            "negatives": OmegaConf.to_container(bcfg.negatives, resolve=True),
            "refusals_per_case": int(bcfg.refusals_per_case)}


def run(tasks: list[dict], passages: Sequence[Passage], config: dict, num_proc: int = 1) -> list[dict]:
    """One result per task, in task order: ``{"side", "cases": [Case dict], "pairs": [Pair dict], "counts"}``."""
    encoded = [json.dumps(t) for t in tasks]
    if num_proc <= 1 or len(tasks) < 2:
        return [json.loads(r) for r in _results(encoded, passages, config)]
    from datasets import Dataset

    with tempfile.TemporaryDirectory(prefix="halluguard-shards-") as tmp:
        kb_path = Path(tmp) / "passages.jsonl"
        kb_path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in passages), encoding="utf-8")
        mapped = Dataset.from_list([{"task": t} for t in encoded]).map(
            map_batch, batched=True, batch_size=64, num_proc=min(num_proc, len(tasks)), remove_columns=["task"],
            fn_kwargs={"kb_path": str(kb_path), "config_json": json.dumps(config)},
            # An in-memory dataset with no cache files: shards stay in memory, nothing lands in ~/.cache or
            # the build folder. A fixed fingerprint spares hashing the arguments (the whole config) per call.
            keep_in_memory=True, load_from_cache_file=False, new_fingerprint="halluguard-per-question",
            desc="synthesis and pairs")
        return [json.loads(r) for r in mapped["result"]]


def map_batch(batch: dict, kb_path: str, config_json: str) -> dict:
    """The function ``Dataset.map`` runs in each worker: a batch of JSON tasks -> a batch of JSON results."""
    return {"result": _results(batch["task"], _load_kb(kb_path), json.loads(config_json))}


_KB: dict[str, list[Passage]] = {}


def _load_kb(path: str) -> list[Passage]:
    # One list per worker process: the builders memoise per knowledge-base object (kb_text, responses).
    if path not in _KB:
        _KB.clear()
        with open(path, encoding="utf-8") as fh:
            _KB[path] = [Passage(**json.loads(line)) for line in fh if line.strip()]
    return _KB[path]


def _results(encoded_tasks: Sequence[str], passages: Sequence[Passage], config: dict) -> list[str]:
    by_id = {p.id: p for p in passages}
    synth_cfg = SimpleNamespace(**config["synthesis"])
    negatives_cfg = SimpleNamespace(**config["negatives"])
    return [json.dumps(per_question(json.loads(t), passages, by_id, config, synth_cfg, negatives_cfg))
            for t in encoded_tasks]


def per_question(task: dict, passages: Sequence[Passage], by_id: dict[str, Passage], config: dict,
                 synth_cfg, negatives_cfg) -> dict:
    """Step 5 (the question's case, plus verified OOK cases synthesised from an IK question) and step 6 (the
    pairs of each of those cases) for one question."""
    q = Question(**task["question"])
    seed, k, group, language = config["seed"], config["k"], task["group"], task["language"]
    evidence = [by_id[i] for i in task["evidence"]]
    neighbours = [by_id[i] for i in task["neighbours"]]
    counts: Counter = Counter()
    cases = [Case(id=q.id, question=q.question, label=task["label"], kind=q.kind or task["label"],
                  evidence=evidence, answers=list(q.answers), source_question_id=q.id, group=group,
                  meta={**q.meta, "passage_id": q.passage_id, "language": language})]
    if task["label"] == IK and q.answers:
        made = synthesis.synthesize(q, evidence, neighbours, passages, synth_cfg, k,
                                    question_rng(seed, q.id, "synthesis"), language=language, counts=counts)
        for case in made:
            case.group = group
            case.meta.setdefault("passage_id", q.passage_id)
            case.meta["language"] = language
            ok, _ = synthesis.verify_ook(case, q.answers)
            counts[f"{case.kind}:{'kept' if ok else 'rejected'}"] += 1
            if ok:
                cases.append(case)
        counts["attempted"] += 1
    pairs: list[Pair] = []
    for case in cases:
        shown = {e.id for e in case.evidence}
        pairs += responses.make_pairs(case, [p for p in neighbours if p.id not in shown], passages, negatives_cfg,
                                      question_rng(seed, case.id, "pairs"),
                                      refusals_per_case=config["refusals_per_case"])
    return {"side": task["side"], "cases": [c.to_dict() for c in cases], "pairs": [p.to_dict() for p in pairs],
            "counts": dict(counts)}


def case_from_dict(d: dict, by_id: dict[str, Passage]) -> Case:
    return Case(**{**d, "evidence": [by_id[i] for i in d["evidence"]]})
