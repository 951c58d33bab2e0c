"""HaluEval QA (``qa_data.json``): JSON lines despite the name, one record a line::

    {"knowledge": "...", "question": "...?", "right_answer": "...", "hallucinated_answer": "..."}

Each distinct ``knowledge`` text (compared after trimming surrounding whitespace) becomes one
passage ``h00000``, ``h00001``, ... in order of first appearance, with its own id as ``group``
(records that share a knowledge text share the passage and the group). Each record becomes an
``ik`` / ``in_knowledge`` question ``hq00000``, ``hq00001``, ... in record order, answered by
``right_answer``, pointing at its knowledge passage, with ``hallucinated_answer`` in ``meta``.
``kb.passages`` is the file; ``kb.questions`` is null or the same file.
"""

from __future__ import annotations

from pathlib import Path

from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question, iter_jsonl, require_str

KEYS = ("knowledge", "question", "right_answer", "hallucinated_answer")
EXPECTED = "expected HaluEval QA JSON lines with keys knowledge, question, right_answer, hallucinated_answer"


def load(kb_cfg) -> tuple[list[Passage], list[Question]]:
    if not kb_cfg.passages:
        raise HalluguardError("kb.passages is not set: the halueval format needs HaluEval's qa_data.json")
    path = Path(kb_cfg.passages)
    if kb_cfg.questions and not _same_file(path, Path(kb_cfg.questions)):
        raise HalluguardError(f"kb.questions ({kb_cfg.questions}) must be null or the same file as kb.passages "
                              f"({path}): HaluEval keeps knowledge and questions in one file")
    return load_file(path)


def load_file(path: Path) -> tuple[list[Passage], list[Question]]:
    passages: list[Passage] = []
    questions: list[Question] = []
    by_knowledge: dict[str, str] = {}
    records = iter_jsonl(path)
    while True:
        try:
            item = next(records, None)
        except HalluguardError as exc:
            # A first line that is not a JSON object usually means a different format altogether.
            first_line = not questions and str(exc).startswith(f"{path}:")
            raise HalluguardError(f"{exc}; {EXPECTED}" if first_line else str(exc)) from None
        if item is None:
            break
        lineno, obj = item
        where = f"{path}:{lineno}"
        if not any(key in obj for key in KEYS):
            found = ", ".join(map(str, obj)) or "none"
            raise HalluguardError(f"{where}: {EXPECTED}; this line has keys {found}")
        knowledge = require_str(obj, "knowledge", where).strip()
        question = require_str(obj, "question", where).strip()
        right = require_str(obj, "right_answer", where).strip()
        hallucinated = require_str(obj, "hallucinated_answer", where).strip()
        pid = by_knowledge.get(knowledge)
        if pid is None:
            pid = by_knowledge[knowledge] = f"h{len(passages):05d}"
            passages.append(Passage(id=pid, text=knowledge, title="", group=pid))
        questions.append(Question(id=f"hq{len(questions):05d}", question=question, label="ik",
                                  kind="in_knowledge", answers=[right], passage_id=pid,
                                  meta={"hallucinated_answer": hallucinated}))
    if not questions:
        raise HalluguardError(f"{path}: the file is empty; {EXPECTED}")
    return passages, questions


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False
