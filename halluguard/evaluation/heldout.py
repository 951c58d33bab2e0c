"""The questions an evaluation runs on: the build's held-out set, checked against training.

:func:`load_heldout` reads the build's ``heldout`` dataset into :class:`EvalQuestion` records;
:func:`find_overlap` finds held-out questions that training also saw (the same ``question_id``,
or the same normalised question shown with the same evidence); :func:`fill_gate_similarity` gives
every question the similarity the retrieval gate decides on.
"""

from __future__ import annotations

import logging
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from halluguard.errors import HalluguardError
from halluguard.language import detect_language, localized

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("prompt", "question", "label", "kind", "case_id", "question_id", "answers", "evidence_ids",
                    "evidence_holds_answer", "top1")


@dataclass
class EvalQuestion:
    """One held-out prompt. ``case_id`` is unique; ``question_id`` is shared by a question and its
    synthetic OOK variants (context swap, false premise, ...)."""

    case_id: str
    question_id: str
    question: str
    label: str  # "ik" or "ook"
    kind: str
    messages: list[dict]  # system + user messages, evidence already inside (the training prompt format)
    answers: list[str] = field(default_factory=list)
    evidence_ids: list[str] = field(default_factory=list)
    evidence_holds_answer: bool | None = None
    group: str = ""
    top1: float | None = None  # the build's top-1 retrieval similarity (None for synthetic cases)
    gate_top1: float | None = None  # what the gate decides on (see fill_gate_similarity)
    gate_top1_source: str | None = None  # "build" or "evidence"
    overlaps_training: bool = False

    @property
    def should_abstain(self) -> bool:
        return self.label == "ook"

    def messages_with_system(self, system) -> list[dict]:
        """The prompt with its system message replaced by ``system`` (None keeps the original): one
        string, or one per language (``{"en": ..., "zh": ...}``), picked by the question's language."""
        if system is None:
            return list(self.messages)
        text = localized(system, detect_language(self.question), "eval.prompt_only_system")
        rest = [m for m in self.messages if m.get("role") != "system"]
        return [{"role": "system", "content": text.strip()}, *rest]


def load_heldout(path: Path) -> list[EvalQuestion]:
    """The held-out questions saved by ``halluguard build`` (a ``datasets`` folder)."""
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    missing = [c for c in REQUIRED_COLUMNS if c not in data.column_names]
    if missing:
        raise HalluguardError(f"the held-out set at {path} lacks the columns {', '.join(missing)}; "
                              "re-run `halluguard build` with this version of halluguard")
    questions = []
    for row in data:
        if row["label"] not in ("ik", "ook"):
            raise HalluguardError(f"held-out case {row['case_id']!r} in {path} has label {row['label']!r}; "
                                  "evaluation needs every question labelled ik or ook")
        questions.append(EvalQuestion(
            case_id=str(row["case_id"]), question_id=str(row["question_id"]), question=row["question"],
            label=row["label"], kind=row["kind"] or "", messages=list(row["prompt"]),
            answers=[a for a in (row["answers"] or []) if a and a.strip()],
            evidence_ids=list(row["evidence_ids"] or []), evidence_holds_answer=row["evidence_holds_answer"],
            group=row.get("group") or "", top1=row["top1"]))
    if not questions:
        raise HalluguardError(f"the held-out set at {path} is empty: raise builder.split.heldout_fraction "
                              "or use a knowledge base with more groups, then re-run `halluguard build`")
    seen: set[str] = set()
    repeated = [q.case_id for q in questions if q.case_id in seen or seen.add(q.case_id)]
    if repeated:
        raise HalluguardError(f"the held-out set at {path} repeats case ids (e.g. {repeated[0]!r}); re-run the build")
    return questions


def sample_questions(questions: list[EvalQuestion], limit: int, seed: int) -> list[EvalQuestion]:
    """At most ``limit`` questions (0 = all), drawn by seed, kept in their original order."""
    if limit <= 0 or limit >= len(questions):
        return questions
    keep = set(random.Random(seed).sample(range(len(questions)), limit))
    return [q for i, q in enumerate(questions) if i in keep]


# ---------------------------------------------------------------- overlap with training

def normalize_question(text: str) -> str:
    """Lowercase, no punctuation, single spaces: two spellings of one question compare equal."""
    lowered = text.lower()
    kept = "".join(" " if ch in string.punctuation else ch for ch in lowered)
    return " ".join(kept.split())


def question_of_prompt(messages: Sequence[dict]) -> str:
    """The question inside a rendered prompt's last user message (after its final ``Question:``)."""
    users = [m for m in messages if m.get("role") == "user"]
    text = str(users[-1].get("content") or "") if users else ""
    return re.split(r"Question:\s*", text)[-1].strip()


def training_keys(rows) -> tuple[set[str], set[tuple[str, frozenset]]]:
    """Question ids and (normalised question, evidence set) keys of training rows.

    Rows are dicts with ``question_id``, ``evidence_ids`` and either ``question`` or a ``prompt``
    (the preference pairs carry only the prompt).
    """
    ids: set[str] = set()
    texts: set[tuple[str, frozenset]] = set()
    for row in rows:
        if row.get("question_id") is not None:
            ids.add(str(row["question_id"]))
        question = row.get("question") or question_of_prompt(row.get("prompt") or [])
        if question:
            texts.add((normalize_question(question), frozenset(row.get("evidence_ids") or [])))
    return ids, texts


def find_overlap(questions: Sequence[EvalQuestion], training_rows) -> dict:
    """Held-out questions that training saw; marks them (``overlaps_training``) and counts them.

    Returns ``{"count", "by_question_id", "by_text_and_evidence", "case_ids"}``.
    """
    ids, texts = training_keys(training_rows)
    by_id = by_text = 0
    flagged = []
    for q in questions:
        same_id = q.question_id in ids
        same_text = (normalize_question(q.question), frozenset(q.evidence_ids)) in texts
        by_id += same_id
        by_text += same_text
        q.overlaps_training = same_id or same_text
        if q.overlaps_training:
            flagged.append(q.case_id)
    return {"count": len(flagged), "by_question_id": by_id, "by_text_and_evidence": by_text, "case_ids": flagged}


# ---------------------------------------------------------------- what the gate sees

def fill_gate_similarity(questions: Sequence[EvalQuestion], passages: dict[str, str], encoder) -> dict:
    """Set ``gate_top1``: the build's top-1 retrieval similarity, or, where the build has none
    (synthetic cases shown other evidence), the highest cosine between the question and the
    passages in its prompt. That is what a gate in front of the model would see.

    ``passages`` maps passage id -> the text the index encodes. Returns counts by source, and
    ``undecided`` for questions whose evidence is not in the index (the gate lets them through).
    """
    import numpy as np

    counts = {"build": 0, "evidence": 0, "undecided": 0}
    todo = []
    for q in questions:
        if q.top1 is not None:
            q.gate_top1, q.gate_top1_source = float(q.top1), "build"
            counts["build"] += 1
        elif any(pid in passages for pid in q.evidence_ids):
            todo.append(q)
        else:
            counts["undecided"] += 1
    if todo:
        texts = sorted({pid for q in todo for pid in q.evidence_ids if pid in passages})
        row = {pid: i for i, pid in enumerate(texts)}
        passage_vectors = encoder.encode([passages[pid] for pid in texts])
        question_vectors = encoder.encode([q.question for q in todo])
        for q, vector in zip(todo, question_vectors):
            shown = [row[pid] for pid in q.evidence_ids if pid in row]
            q.gate_top1 = round(float(np.max(passage_vectors[shown] @ vector)), 4)
            q.gate_top1_source = "evidence"
            counts["evidence"] += 1
    return counts
