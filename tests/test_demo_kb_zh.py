"""The Chinese demo knowledge base (星河移动, halluguard/data/demo_kb_zh) loads and keeps its promises."""

from collections import Counter
from pathlib import Path

import pytest

from data_builders.sources.jsonl import load_files
from halluguard.config import package_data
from halluguard.language import detect_language

ZH_PASSAGES = Path(package_data("demo_kb_zh/passages.jsonl"))
ZH_QUESTIONS = Path(package_data("demo_kb_zh/questions.jsonl"))
SECTIONS = {"plans", "billing", "roaming", "devices", "broadband", "support"}
OOK_KINDS = {"off_topic", "uncovered", "false_premise", "unknowable"}


@pytest.fixture(scope="module")
def kb():
    return load_files(ZH_PASSAGES, ZH_QUESTIONS)


def test_files_load_and_are_big_enough(kb):
    passages, questions = kb
    assert len(passages) >= 48 and len(questions) >= 150
    sections = Counter(p.group for p in passages)
    assert set(sections) == SECTIONS, sections
    assert all(n >= 8 for n in sections.values()), sections
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) == OOK_KINDS | {"in_knowledge"}, kinds
    assert kinds["in_knowledge"] >= 90, kinds
    assert all(kinds[k] >= 15 for k in OOK_KINDS), kinds
    assert sum(q.label == "ook" for q in questions) >= 60


def test_ids_are_consecutive_and_unique(kb):
    passages, questions = kb
    assert [p.id for p in passages] == [f"p{i:04d}" for i in range(1, len(passages) + 1)]
    assert [q.id for q in questions] == [f"q{i:04d}" for i in range(1, len(questions) + 1)]
    assert len({q.question for q in questions}) == len(questions)


def test_answers_labels_and_gold_passages(kb):
    passages, questions = kb
    by_id = {p.id: p for p in passages}
    for q in questions:
        if q.label == "ik":
            assert q.kind == "in_knowledge" and 1 <= len(q.answers) <= 3, q.id
            assert q.passage_id in by_id, q.id
            assert all(a and a in by_id[q.passage_id].text for a in q.answers), q.id
        else:
            assert q.label == "ook" and q.kind in OOK_KINDS, q.id
            assert q.answers == [] and q.passage_id is None, q.id
    gold = Counter(q.passage_id for q in questions if q.label == "ik")
    assert all(1 <= gold[p.id] <= 3 for p in passages), {p.id: gold[p.id] for p in passages if not 1 <= gold[p.id] <= 3}


def test_kinds_are_interleaved(kb):
    _, questions = kb
    head = {q.kind for q in questions[:30]}
    assert len(head) >= 4, head  # shuffled, not grouped by kind


def test_everything_is_chinese(kb):
    passages, questions = kb
    assert all(q.question.endswith("？") for q in questions), [q.id for q in questions if not q.question.endswith("？")]
    assert all(p.title for p in passages)
    assert [p.id for p in passages if detect_language(p.text) != "zh"] == []
    assert [q.id for q in questions if detect_language(q.question) != "zh"] == []
