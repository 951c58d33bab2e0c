"""SelfAware (``SelfAware.json``): closed-book questions, some of which nobody can answer::

    {"dataset_name": "SelfAware", ..., "example": [
      {"question_id": 1, "question": "...?", "answer": ["song"], "answerable": true, "source": "hotpot_train"},
      {"question_id": 2338, "question": "...?", "answer": null, "answerable": false, "source": "SelfAware"}]}

There is no knowledge base: the loader returns no passages. Each example becomes question
``sa<question_id>``: ``ik`` / ``answerable`` with its answers when ``answerable`` is true, otherwise
``ook`` / ``unknowable`` (subjective, philosophical or unknowable questions). ``source`` goes to
``meta``. The file is ``kb.questions``, or ``kb.passages`` when ``kb.questions`` is null.
"""

from __future__ import annotations

from pathlib import Path

from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question, check_unique_ids, require_str, read_json_list

EXPECTED = "expected SelfAware JSON (an object with an 'example' list of questions)"


def load(kb_cfg) -> tuple[list[Passage], list[Question]]:
    source = kb_cfg.questions or kb_cfg.passages
    if not source:
        raise HalluguardError("kb.questions is not set: the selfaware format needs SelfAware.json")
    return [], load_questions(Path(source))


def load_questions(path: Path) -> list[Question]:
    examples = read_json_list(path, "example", EXPECTED)
    questions = []
    for i, ex in enumerate(examples):
        where = f"{path}: example[{i}]"
        if not isinstance(ex, dict):
            raise HalluguardError(f"{where}: expected a question object, got {type(ex).__name__}")
        qid = ex.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, (int, str)) or not str(qid).strip():
            raise HalluguardError(f"{where}: field 'question_id' must be a number or a string, got {qid!r:.40}")
        where = f"{where} (question_id {qid})"
        text = require_str(ex, "question", where).strip()
        answerable = ex.get("answerable")
        if not isinstance(answerable, bool):
            raise HalluguardError(f"{where}: field 'answerable' must be true or false, got {answerable!r:.40}")
        raw = ex.get("answer")
        if raw is None:
            raw = []
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise HalluguardError(f"{where}: field 'answer' must be a list of strings or null, got {raw!r:.60}")
        answers = []
        for a in raw:
            if a.strip() and a.strip() not in answers:
                answers.append(a.strip())
        source = ex.get("source")
        questions.append(Question(
            id=f"sa{qid}", question=text, label="ik" if answerable else "ook",
            kind="answerable" if answerable else "unknowable", answers=answers, passage_id=None,
            meta={"source": "" if source is None else str(source)},
        ))
    if not questions:
        raise HalluguardError(f"{path}: the 'example' list is empty")
    check_unique_ids(questions, path, "question")
    return questions

