"""halluguard's own JSON Lines schema.

passages.jsonl, one object a line::

    {"id": "p0001", "text": "...", "title": "optional", "section": "optional group name"}

questions.jsonl, one object a line::

    {"id": "q0001", "question": "...?", "label": "ik" | "ook" | null, "kind": "in_knowledge",
     "answers": ["gold answer", ...], "passage_id": "p0001" | null}

``group`` may be given instead of ``section``; passages of one group stay on one side of any
train/held-out split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from halluguard.errors import HalluguardError
from halluguard.kb import LABELS, Passage, Question, check_unique_ids, iter_jsonl, require_str


def load_passages(path: Path) -> list[Passage]:
    passages = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        passages.append(Passage(
            id=str(require_str(obj, "id", where)),
            text=require_str(obj, "text", where),
            title=str(obj.get("title") or ""),
            group=str(obj.get("group") or obj.get("section") or ""),
        ))
    if not passages:
        raise HalluguardError(f"{path}: the knowledge base is empty (no passages)")
    check_unique_ids(passages, path, "passage")
    return passages


def load_questions(path: Path, passage_ids: Optional[set[str]] = None) -> list[Question]:
    questions = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        label = obj.get("label")
        if label is not None and label not in LABELS:
            raise HalluguardError(f"{where}: field 'label' must be one of {', '.join(LABELS)} or null, got {label!r}")
        answers = obj.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise HalluguardError(f"{where}: field 'answers' must be a list of strings")
        pid = obj.get("passage_id")
        if pid is not None and passage_ids is not None and str(pid) not in passage_ids:
            raise HalluguardError(f"{where}: passage_id '{pid}' is not in the knowledge base")
        questions.append(Question(
            id=str(require_str(obj, "id", where)),
            question=require_str(obj, "question", where),
            label=label,
            kind=str(obj.get("kind") or ""),
            answers=answers,
            passage_id=None if pid is None else str(pid),
            meta=dict(obj.get("meta") or {}),
        ))
    if not questions:
        raise HalluguardError(f"{path}: the question file is empty")
    check_unique_ids(questions, path, "question")
    return questions


def load(kb_cfg) -> tuple[list[Passage], list[Question]]:
    if not kb_cfg.passages:
        raise HalluguardError("kb.passages is not set: the jsonl format needs a passages file")
    return load_files(Path(kb_cfg.passages), Path(kb_cfg.questions) if kb_cfg.questions else None)


def load_files(passages_path: Path, questions_path: Optional[Path]) -> tuple[list[Passage], list[Question]]:
    passages = load_passages(passages_path)
    questions = load_questions(questions_path, {p.id for p in passages}) if questions_path else []
    return passages, questions
