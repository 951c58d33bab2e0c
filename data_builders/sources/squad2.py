"""SQuAD 2.0, in the official JSON layout (``train-v2.0.json``, ``dev-v2.0.json``)::

    {"version": "v2.0", "data": [
      {"title": "Steam_engine", "paragraphs": [
        {"context": "...", "qas": [
          {"id": "...", "question": "...?", "answers": [{"text": "...", "answer_start": 42}],
           "is_impossible": false},
          {"id": "...", "question": "...?", "answers": [], "is_impossible": true,
           "plausible_answers": [{"text": "...", "answer_start": 7}]}]}]}]}

Each paragraph becomes a passage with id ``AAA-PPP`` (article and paragraph position in the
passages file), the article title as ``title`` (underscores as spaces) and as ``group``, so one
article never straddles a split. Each question keeps its SQuAD id; answerable ones are ``ik`` /
``in_knowledge``, unanswerable ones ``ook`` / ``same_topic_unanswerable`` with their
``plausible_answers`` in ``meta``. Both point at the paragraph they were written against.

``kb.questions`` is null (questions from the passages file) or another SQuAD 2.0 file. Questions
from another file are matched to the knowledge base by paragraph text; a question whose paragraph
is not in it becomes ``ook`` with kind ``uncovered`` (its article is in the knowledge base) or
``off_topic`` (it is not), no passage_id, and its gold answers in ``meta["squad_answers"]``.
A missing ``is_impossible`` counts as false, so SQuAD 1.1 files load too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question, check_unique_ids, require_str, json_type, read_json_list

EXPECTED = "expected SQuAD 2.0 JSON (an object with a 'data' list of articles)"


@dataclass
class _Paragraph:
    passage: Passage
    qas: list[tuple[dict, str]] = field(default_factory=list)  # (qa object, where)


def load(kb_cfg) -> tuple[list[Passage], list[Question]]:
    if not kb_cfg.passages:
        raise HalluguardError("kb.passages is not set: the squad2 format needs a SQuAD 2.0 JSON file")
    passages_path = Path(kb_cfg.passages)
    questions_path = Path(kb_cfg.questions) if kb_cfg.questions else None
    return load_files(passages_path, questions_path)


def load_files(passages_path: Path, questions_path: Optional[Path] = None) -> tuple[list[Passage], list[Question]]:
    paragraphs = read_squad(passages_path)
    passages = [p.passage for p in paragraphs]
    if not passages:
        raise HalluguardError(f"{passages_path}: the knowledge base is empty (no paragraphs)")
    if questions_path is None or _same_file(passages_path, questions_path):
        questions = [_question(qa, where, para.passage.id) for para in paragraphs for qa, where in para.qas]
        qpath = passages_path
    else:
        questions = _questions_against(read_squad(questions_path), passages)
        qpath = questions_path
        if not questions:
            raise HalluguardError(f"{qpath}: the question file has no questions")
    check_unique_ids(questions, qpath, "question")
    return passages, questions


def read_squad(path: Path) -> list[_Paragraph]:
    """Every paragraph of a SQuAD file as a passage, with its (still unchecked) question objects."""
    articles = read_json_list(path, "data", EXPECTED)
    out: list[_Paragraph] = []
    for a, article in enumerate(articles):
        where_a = f"{path}: data[{a}]"
        if not isinstance(article, dict):
            raise HalluguardError(f"{where_a}: expected an article object, got a JSON {json_type(article)}")
        title = require_str(article, "title", where_a).strip()
        paras = article.get("paragraphs")
        if not isinstance(paras, list):
            raise HalluguardError(f"{where_a} ('{title}'): field 'paragraphs' must be a list")
        for p, para in enumerate(paras):
            where_p = f"{where_a}.paragraphs[{p}]"
            if not isinstance(para, dict):
                raise HalluguardError(f"{where_p}: expected a paragraph object, got a JSON {json_type(para)}")
            context = require_str(para, "context", where_p)
            qas = para.get("qas", [])
            if not isinstance(qas, list):
                raise HalluguardError(f"{where_p}: field 'qas' must be a list")
            passage = Passage(id=f"{a:03d}-{p:03d}", text=context, title=title.replace("_", " "), group=title)
            item = _Paragraph(passage)
            for q, qa in enumerate(qas):
                where_q = f"{where_p}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise HalluguardError(f"{where_q}: expected a question object, got a JSON {json_type(qa)}")
                item.qas.append((qa, where_q))
            out.append(item)
    return out


def _question(qa: dict, where: str, passage_id: Optional[str]) -> Question:
    qid = qa.get("id")
    if not isinstance(qid, (str, int)) or not str(qid).strip():
        raise HalluguardError(f"{where}: field 'id' must be a non-empty string, got {qid!r:.40}")
    where = f"{where} (id '{qid}')"
    text = require_str(qa, "question", where).strip()
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise HalluguardError(f"{where}: field 'is_impossible' must be true or false, got {impossible!r:.40}")
    if impossible:
        plausible = _answer_texts(qa, "plausible_answers", where, required=False)
        return Question(id=str(qid), question=text, label="ook", kind="same_topic_unanswerable",
                        answers=[], passage_id=passage_id, meta={"plausible_answers": plausible})
    answers = _answer_texts(qa, "answers", where, required=True)
    return Question(id=str(qid), question=text, label="ik", kind="in_knowledge",
                    answers=answers, passage_id=passage_id, meta={})


def _answer_texts(qa: dict, key: str, where: str, *, required: bool) -> list[str]:
    items = qa.get(key, [])
    if not isinstance(items, list):
        raise HalluguardError(f"{where}: field '{key}' must be a list of {{text, answer_start}} objects")
    texts: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise HalluguardError(f"{where}: {key}[{i}] must be an object with a 'text' field")
        text = require_str(item, "text", f"{where}: {key}[{i}]")
        if text not in texts:
            texts.append(text)
    if required and not texts:
        raise HalluguardError(f"{where}: an answerable question (is_impossible false) has no '{key}'")
    return texts


def _questions_against(paragraphs: list[_Paragraph], passages: list[Passage]) -> list[Question]:
    """Questions of another SQuAD file, pointed at the knowledge base's copy of their paragraph."""
    by_text: dict[tuple[str, str], str] = {}
    for p in passages:
        by_text.setdefault((p.group, p.text), p.id)
    groups = {p.group for p in passages}
    questions = []
    for para in paragraphs:
        pid = by_text.get((para.passage.group, para.passage.text))
        for qa, where in para.qas:
            question = _question(qa, where, pid)
            if pid is None:
                question.meta["squad_answers"] = question.answers
                question.meta["squad_kind"] = question.kind
                question.label, question.answers, question.passage_id = "ook", [], None
                question.kind = "uncovered" if para.passage.group in groups else "off_topic"
            questions.append(question)
    return questions



def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False
