import json
from collections import Counter
from pathlib import Path

import pytest

from data_builders.sources import jsonl
from halluguard.config import package_data
from halluguard.errors import HalluguardError

from conftest import TINY_PASSAGES, TINY_QUESTIONS, write_jsonl

DEMO_PASSAGES = Path(package_data("demo_kb/passages.jsonl"))
DEMO_QUESTIONS = Path(package_data("demo_kb/questions.jsonl"))
OOK_KINDS = {"off_topic", "uncovered", "false_premise", "unknowable"}


def test_demo_kb_is_big_enough_and_covers_every_question_kind():
    passages, questions = jsonl.load_files(DEMO_PASSAGES, DEMO_QUESTIONS)
    assert len(passages) >= 150 and len(questions) >= 400
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) == OOK_KINDS | {"in_knowledge"}
    assert all(kinds[k] >= 30 for k in kinds), kinds
    assert len({p.group for p in passages}) >= 8  # handbook sections, the split unit


def test_demo_kb_in_knowledge_answers_appear_in_their_passage():
    passages, questions = jsonl.load_files(DEMO_PASSAGES, DEMO_QUESTIONS)
    by_id = {p.id: p for p in passages}
    for q in questions:
        if q.label == "ik":
            assert q.kind == "in_knowledge" and q.answers, q.id
            assert all(a in by_id[q.passage_id].text for a in q.answers), q.id
        else:
            assert q.label == "ook" and q.kind in OOK_KINDS and not q.answers and q.passage_id is None, q.id
    assert len({q.question.lower() for q in questions}) == len(questions)


def test_malformed_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(TINY_PASSAGES[0]) + "\n\n{\"id\": \"x\", \"text\": \n")
    with pytest.raises(HalluguardError, match=rf"{path}:3: malformed JSON"):
        jsonl.load_passages(path)


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ("\n\n", "empty"),
    ('["not", "an object"]\n', r":1: expected a JSON object"),
    ('{"id": "a"}\n', r":1: field 'text' must be a string"),
    ('{"id": "a", "text": "   "}\n', r":1: field 'text' is empty"),
])
def test_bad_passage_files(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(HalluguardError, match=message):
        jsonl.load_passages(path)


def test_missing_file_and_folder_instead_of_file(tmp_path):
    with pytest.raises(HalluguardError, match="file not found"):
        jsonl.load_passages(tmp_path / "nope.jsonl")
    with pytest.raises(HalluguardError, match="folder"):
        jsonl.load_passages(tmp_path)


def test_duplicate_ids_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [TINY_PASSAGES[0], TINY_PASSAGES[0]])
    with pytest.raises(HalluguardError, match="duplicate passage id 'a1'"):
        jsonl.load_passages(path)


@pytest.mark.parametrize("change,message", [
    ({"label": "maybe"}, "field 'label'"),
    ({"answers": "14 days"}, "field 'answers'"),
    ({"question": ""}, "field 'question' is empty"),
    ({"passage_id": "zzz"}, "passage_id 'zzz' is not in the knowledge base"),
])
def test_bad_question_lines(tmp_path, change, message):
    passages = write_jsonl(tmp_path / "p.jsonl", TINY_PASSAGES)
    questions = write_jsonl(tmp_path / "q.jsonl", [TINY_QUESTIONS[1], {**TINY_QUESTIONS[0], **change}])
    with pytest.raises(HalluguardError, match=rf"q.jsonl:2: .*{message}"):
        jsonl.load_files(passages, questions)
