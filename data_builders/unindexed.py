"""Leave part of a knowledge base out of the index, turning its questions into out-of-knowledge ones.

The data sets' recipes for "easy" OOK questions: index half of HaluEval's knowledge passages, or
leave whole SQuAD 2.0 articles out. A question whose gold passage is not indexed becomes ``ook``
with kind ``unindexed``; its gold answers move to ``meta["unindexed_answers"]`` (so a model that
still "knows" them from pre-training can be spotted), and dataset negatives stay in ``meta``.
The choice is a stable hash of the passage id or group with the seed: the same on every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question

UNINDEXED = "unindexed"


def _drawn(key: str, seed: int, fraction: float) -> bool:
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def leave_out_of_index(passages: list[Passage], questions: list[Question], fraction: float, by: str,
                       seed: int) -> tuple[list[Passage], list[Question], dict]:
    if not 0.0 <= fraction < 1.0:
        raise HalluguardError(f"kb.unindexed_fraction must be in [0, 1), got {fraction}")
    if by not in ("passage", "group"):
        raise HalluguardError(f"kb.unindexed_by must be 'passage' or 'group', got '{by}'")
    if fraction == 0.0:
        return passages, questions, {}
    key = (lambda p: p.id) if by == "passage" else (lambda p: p.group or p.id)
    dropped = {p.id for p in passages if _drawn(key(p), seed, fraction)}
    if len(dropped) == len(passages):
        raise HalluguardError(f"kb.unindexed_fraction={fraction} left no passage in the index")
    kept = [p for p in passages if p.id not in dropped]
    out = []
    for q in questions:
        if q.passage_id in dropped:
            q = replace(q, label="ook", kind=UNINDEXED, passage_id=None, answers=[],
                        meta={**q.meta, "unindexed_answers": list(q.answers), "original_kind": q.kind})
        out.append(q)
    info = {"unindexed_passages": len(dropped), "indexed_passages": len(kept),
            "questions_made_unindexed": sum(q.kind == UNINDEXED for q in out), "by": by, "fraction": fraction}
    return kept, out, info
