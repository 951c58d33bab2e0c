"""The public-data loaders (SQuAD 2.0, HaluEval QA, SelfAware) and the folder-of-text loader."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_builders.sources import FORMATS, halueval, load_kb, selfaware, squad2, textdir
from halluguard.errors import HalluguardError

from conftest import SHARED_DATA, write_jsonl

SQUAD = SHARED_DATA / "squad2" / "dev-v2.0.json"
HALUEVAL = SHARED_DATA / "halueval" / "qa_data.json"
SELFAWARE = SHARED_DATA / "selfaware" / "SelfAware.json"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared evaluation data in ../shared/data (missing {path})")
    return path


def kb(fmt, passages=None, questions=None, chunk_words=120, chunk_overlap=20):
    return OmegaConf.create({"name": "t", "format": fmt, "passages": None if passages is None else str(passages),
                             "questions": None if questions is None else str(questions), "language": "en",
                             "chunk_words": chunk_words, "chunk_overlap": chunk_overlap})


def test_every_format_is_registered():
    assert {"jsonl", "squad2", "halueval", "selfaware", "textdir"} <= set(FORMATS)


@pytest.mark.parametrize("name", ["squad2", "halueval", "selfaware"])
def test_kb_configs_compose_and_load(compose, monkeypatch, name):
    need(SHARED_DATA)
    monkeypatch.setenv("HALLUGUARD_SHARED_DATA", str(SHARED_DATA))
    cfg = compose([f"kb={name}"])
    assert cfg.kb.format == name
    passages, questions = load_kb(cfg.kb)
    assert questions and (passages or name == "selfaware")


def test_textdir_config_needs_a_folder(compose, tmp_path):
    from halluguard.errors import ConfigError

    with pytest.raises(ConfigError, match="kb.passages"):
        compose(["kb=textdir"])
    (tmp_path / "a.txt").write_text("Some text.")
    cfg = compose(["kb=textdir", f"kb.passages={tmp_path}"])
    assert [p.id for p in load_kb(cfg.kb)[0]] == ["a.txt#0"]


# ---------------------------------------------------------------------------------------- SQuAD 2.0


def test_squad2_real_dev_file():
    passages, questions = squad2.load(kb("squad2", need(SQUAD)))
    assert len({p.group for p in passages}) == 13
    assert len(passages) == 540 and len({p.id for p in passages}) == 540
    assert len(questions) == 4119
    assert Counter(q.label for q in questions) == {"ook": 2110, "ik": 2009}
    assert Counter(q.kind for q in questions) == {"same_topic_unanswerable": 2110, "in_knowledge": 2009}
    by_id = {p.id: p for p in passages}
    for q in questions:
        assert q.question and q.question == q.question.strip(), q.id
        passage = by_id[q.passage_id]
        if q.label == "ik":
            assert q.answers and all(a in passage.text for a in q.answers), q.id
            assert len(set(q.answers)) == len(q.answers) and q.meta == {}, q.id
        else:
            assert not q.answers and q.meta["plausible_answers"], q.id
            assert all(a in passage.text for a in q.meta["plausible_answers"]), q.id
    assert all("_" not in p.title for p in passages)
    assert by_id["000-000"].title == "Computational complexity theory"
    assert by_id["000-000"].group == "Computational_complexity_theory"


def test_squad2_questions_same_file_or_null_give_the_same_result():
    path = need(SQUAD)
    assert squad2.load(kb("squad2", path)) == squad2.load(kb("squad2", path, path))


def _squad_doc(*articles):
    return json.loads(json.dumps({"version": "v2.0", "data": [  # a deep copy: tests edit it
        {"title": title, "paragraphs": [{"context": ctx, "qas": qas} for ctx, qas in paras]}
        for title, paras in articles]}))


RIVER = ("River_Nile", [("The Nile is about 6,650 km long and flows into the Mediterranean Sea.", [
    {"id": "n1", "question": " How long is the Nile? ", "is_impossible": False,
     "answers": [{"text": "about 6,650 km", "answer_start": 9}, {"text": "about 6,650 km", "answer_start": 9},
                 {"text": "6,650 km", "answer_start": 15}]},
    {"id": "n2", "question": "How deep is the Nile?", "is_impossible": True, "answers": [],
     "plausible_answers": [{"text": "6,650 km", "answer_start": 15}]},
])])
MOON = ("Moon", [("The Moon orbits the Earth every 27.3 days.", [
    {"id": "m1", "question": "How long is the Moon's orbit?", "is_impossible": False,
     "answers": [{"text": "27.3 days", "answer_start": 32}]}])])


def test_squad2_small_file_fields(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_squad_doc(RIVER, MOON)))
    passages, questions = squad2.load(kb("squad2", path))
    assert [(p.id, p.title, p.group) for p in passages] == [("000-000", "River Nile", "River_Nile"),
                                                            ("001-000", "Moon", "Moon")]
    n1, n2, m1 = questions
    assert (n1.question, n1.answers, n1.label, n1.passage_id) == (
        "How long is the Nile?", ["about 6,650 km", "6,650 km"], "ik", "000-000")
    assert (n2.label, n2.kind, n2.answers, n2.passage_id, n2.meta) == (
        "ook", "same_topic_unanswerable", [], "000-000", {"plausible_answers": ["6,650 km"]})
    assert m1.passage_id == "001-000"


def test_squad2_questions_from_another_file_are_matched_by_paragraph(tmp_path):
    passages_path, questions_path = tmp_path / "kb.json", tmp_path / "q.json"
    passages_path.write_text(json.dumps(_squad_doc(RIVER)))
    other_nile = ("River_Nile", [("The Nile delta is in Egypt.", [
        {"id": "n3", "question": "Where is the delta?", "is_impossible": False,
         "answers": [{"text": "Egypt", "answer_start": 20}]}])])
    questions_path.write_text(json.dumps(_squad_doc(MOON, RIVER, other_nile)))
    passages, questions = squad2.load(kb("squad2", passages_path, questions_path))
    assert [p.id for p in passages] == ["000-000"]
    got = {q.id: q for q in questions}
    assert (got["n1"].label, got["n1"].passage_id) == ("ik", "000-000")  # its paragraph is in the KB
    assert (got["n2"].label, got["n2"].passage_id) == ("ook", "000-000")
    assert (got["m1"].label, got["m1"].kind, got["m1"].passage_id, got["m1"].answers) == ("ook", "off_topic", None, [])
    assert got["m1"].meta["squad_answers"] == ["27.3 days"]
    assert (got["n3"].label, got["n3"].kind) == ("ook", "uncovered")  # same article, paragraph not indexed


@pytest.mark.parametrize("content", [
    "[1, 2, 3]",
    '{"version": "v2.0", "articles": []}',
    '{"data": {"title": "x"}}',
])
def test_squad2_wrong_format(tmp_path, content):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(HalluguardError, match=re.escape(f"{path}: expected SQuAD 2.0 JSON (an object with a 'data' list")):
        squad2.load(kb("squad2", path))


def test_squad2_json_lines_or_broken_json_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "qa_data.json", [{"knowledge": "k", "question": "q"}] * 2)
    with pytest.raises(HalluguardError, match=re.escape(f"{path}:2: malformed JSON") + ".*expected SQuAD 2.0 JSON"):
        squad2.load(kb("squad2", path))
    path.write_text('{"data": [')
    with pytest.raises(HalluguardError, match=re.escape(f"{path}:1: malformed JSON")):
        squad2.load(kb("squad2", path))
    with pytest.raises(HalluguardError, match="file not found"):
        squad2.load(kb("squad2", tmp_path / "nope.json"))


@pytest.mark.parametrize("edit,where,message", [
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].pop("question"), "data[1].paragraphs[0].qas[0]",
     "field 'question' must be a string"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=[]), "data[0].paragraphs[0].qas[0]",
     "has no 'answers'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(is_impossible="yes"), "data[0].paragraphs[0].qas[1]",
     "'is_impossible' must be true or false"),
    (lambda d: d["data"][0]["paragraphs"][0].update(context=None), "data[0].paragraphs[0]",
     "field 'context' must be a string"),
    (lambda d: d["data"][1].pop("paragraphs"), "data[1]", "'paragraphs' must be a list"),
    (lambda d: d["data"].append("oops"), "data[2]", "expected an article object"),
])
def test_squad2_malformed_record_names_file_and_position(tmp_path, edit, where, message):
    doc = _squad_doc(RIVER, MOON)
    edit(doc)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(HalluguardError, match=re.escape(f"{path}: {where}") + ".*" + re.escape(message)):
        squad2.load(kb("squad2", path))


def test_squad2_duplicate_question_ids(tmp_path):
    doc = _squad_doc(RIVER, MOON)
    doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "n1"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(HalluguardError, match="duplicate question id 'n1'"):
        squad2.load(kb("squad2", path))


# --------------------------------------------------------------------------------------- HaluEval QA


def test_halueval_real_file():
    passages, questions = halueval.load(kb("halueval", need(HALUEVAL)))
    assert len(questions) == 8029
    assert len(passages) == 7985  # 43 knowledge texts are shared by 2 or 3 records (87 records in all)
    assert sum(n for n in Counter(q.passage_id for q in questions).values() if n > 1) == 87
    assert [q.id for q in questions[:2]] == ["hq00000", "hq00001"] and questions[-1].id == "hq08028"
    assert len({p.text for p in passages}) == len(passages)
    ids = {p.id for p in passages}
    assert all(p.group == p.id and p.title == "" and p.text == p.text.strip() and p.text for p in passages)
    for q in questions:
        assert q.passage_id in ids and q.label == "ik" and q.kind == "in_knowledge", q.id
        assert len(q.answers) == 1 and q.answers[0] and q.question, q.id
        assert q.meta["hallucinated_answer"] and q.meta["hallucinated_answer"] != q.answers[0], q.id


def _halueval_row(knowledge="The Nile flows north.", question="Which way does the Nile flow?"):
    return {"knowledge": knowledge, "question": question, "right_answer": "north",
            "hallucinated_answer": "The Nile flows south."}


def test_halueval_shared_knowledge_is_one_passage(tmp_path):
    path = write_jsonl(tmp_path / "qa.json", [
        _halueval_row(), _halueval_row("Paris is in France."), _halueval_row(" The Nile flows north. ", "Nile?")])
    passages, questions = halueval.load(kb("halueval", path, path))
    assert [(p.id, p.text) for p in passages] == [("h00000", "The Nile flows north."), ("h00001", "Paris is in France.")]
    assert [(q.id, q.passage_id) for q in questions] == [("hq00000", "h00000"), ("hq00001", "h00001"),
                                                         ("hq00002", "h00000")]
    assert questions[0].meta == {"hallucinated_answer": "The Nile flows south."}


@pytest.mark.parametrize("content,message", [
    (json.dumps(_squad_doc(RIVER)) + "\n", r":1: expected HaluEval QA JSON lines.*this line has keys version, data"),
    (json.dumps(_squad_doc(RIVER), indent=2), r":1: malformed JSON.*expected HaluEval QA JSON lines"),
    ('[{"knowledge": "k"}]\n', r":1: expected a JSON object, got list; expected HaluEval QA JSON lines"),
    ("", ": the file is empty; expected HaluEval QA JSON lines"),
])
def test_halueval_wrong_format(tmp_path, content, message):
    path = tmp_path / "qa.json"
    path.write_text(content)
    with pytest.raises(HalluguardError, match=re.escape(str(path)) + message):
        halueval.load(kb("halueval", path))


def test_halueval_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "qa.json"
    good = json.dumps(_halueval_row())
    path.write_text(f"{good}\n\n{good[:-5]}\n")
    with pytest.raises(HalluguardError, match=re.escape(f"{path}:3: malformed JSON")):
        halueval.load(kb("halueval", path))
    row = _halueval_row()
    del row["right_answer"]
    write_jsonl(path, [_halueval_row(), _halueval_row(), row])
    with pytest.raises(HalluguardError, match=re.escape(f"{path}:3: field 'right_answer' must be a string")):
        halueval.load(kb("halueval", path))
    write_jsonl(path, [_halueval_row(), {**_halueval_row(), "question": "  "}])
    with pytest.raises(HalluguardError, match=re.escape(f"{path}:2: field 'question' is empty")):
        halueval.load(kb("halueval", path))


def test_halueval_questions_must_be_the_same_file(tmp_path):
    path = write_jsonl(tmp_path / "qa.json", [_halueval_row()])
    with pytest.raises(HalluguardError, match="kb.questions .* must be null or the same file"):
        halueval.load(kb("halueval", path, tmp_path / "other.json"))


# ----------------------------------------------------------------------------------------- SelfAware


def test_selfaware_real_file():
    passages, questions = selfaware.load(kb("selfaware", None, need(SELFAWARE)))
    assert passages == []
    assert len(questions) == 2711
    assert Counter(q.label for q in questions) == {"ik": 1877, "ook": 834}
    assert Counter(q.kind for q in questions) == {"answerable": 1877, "unknowable": 834}
    assert sum(q.meta["source"] == "SelfAware" for q in questions) == 834  # the unanswerable ones
    for q in questions:
        assert q.question and q.passage_id is None, q.id
        assert bool(q.answers) == (q.label == "ik"), q.id
        assert (q.meta["source"] == "SelfAware") == (q.label == "ook"), q.id
    assert questions[0].id == "sa1" and questions[0].answers == ["song"]


def test_selfaware_file_may_be_given_as_passages(tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"example": [
        {"question_id": 7, "question": "Capital of France?", "answer": ["Paris", "Paris"], "answerable": True,
         "source": "squadqa_dev"},
        {"question_id": 8, "question": "What is the meaning of life?", "answer": None, "answerable": False,
         "source": "SelfAware"}]}))
    assert selfaware.load(kb("selfaware", path)) == selfaware.load(kb("selfaware", None, path))
    _, (q7, q8) = selfaware.load(kb("selfaware", path))
    assert (q7.id, q7.label, q7.answers, q7.meta) == ("sa7", "ik", ["Paris"], {"source": "squadqa_dev"})
    assert (q8.id, q8.label, q8.kind, q8.answers) == ("sa8", "ook", "unknowable", [])


@pytest.mark.parametrize("content,message", [
    ('[{"question": "x"}]', r": expected SelfAware JSON \(an object with an 'example' list"),
    ('{"data": []}', r": expected SelfAware JSON .*got an object with keys data"),
    ('{"a": 1}\n{"b": 2}\n', r":2: malformed JSON.*expected SelfAware JSON"),
    ('{"example": []}', r": the 'example' list is empty"),
    ('{"example": [{"question_id": 1, "question": "Why?", "answer": null, "answerable": false},'
     ' {"question_id": 2, "question": "Who?", "answer": null, "answerable": "no"}]}',
     r": example\[1\] \(question_id 2\): field 'answerable' must be true or false"),
    ('{"example": [{"question_id": 1, "question": "Why?", "answer": "yes", "answerable": true}]}',
     r": example\[0\] \(question_id 1\): field 'answer' must be a list of strings or null"),
    ('{"example": [{"question": "Why?", "answer": null, "answerable": false}]}',
     r": example\[0\]: field 'question_id'"),
    ('{"example": [{"question_id": 1, "question": "", "answer": null, "answerable": false}]}',
     r": example\[0\] \(question_id 1\): field 'question' is empty"),
])
def test_selfaware_bad_files_name_file_and_record(tmp_path, content, message):
    path = tmp_path / "sa.json"
    path.write_text(content)
    with pytest.raises(HalluguardError, match=re.escape(str(path)) + message):
        selfaware.load(kb("selfaware", None, path))


def test_selfaware_needs_a_file():
    with pytest.raises(HalluguardError, match="kb.questions is not set"):
        selfaware.load(kb("selfaware"))


# ---------------------------------------------------------------------------------------- text folder

GUIDE = """---
title: front matter is skipped
---
Intro words before any heading. They belong to the file stem.

# Refunds

Refunds take 14 days. They go back to the original card.

Second refund paragraph with more words about refunds.

## Roaming abroad ##

Roaming in the EU is free.

```bash
# not a heading: a shell comment
echo roaming

echo done
```

Data plans
==========

The Orbit plan has 40 GB.
"""


def _long_text(paragraphs=12, sentences=5):
    """Paragraphs of numbered words (w0, w1, ...) so every word is unique and traceable."""
    n, paras = 0, []
    for _ in range(paragraphs):
        sents = []
        for s in range(sentences):
            words = [f"w{n + i}" for i in range(4 + (s * 3) % 9)]
            n += len(words)
            sents.append(" ".join(words) + ".")
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


@pytest.fixture
def text_folder(tmp_path):
    root = tmp_path / "kb"
    (root / "notes" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "guide.md").write_text(GUIDE, encoding="utf-8")
    (root / "notes" / "long.txt").write_text(_long_text(), encoding="utf-8")
    (root / "notes" / "deep" / "one.TXT").write_text("# not a heading in a .txt file\nJust one line.\n")
    (root / "notes" / "empty.md").write_text("\n\n  \n")
    (root / "notes" / "skip.rst").write_text("Not loaded.")
    (root / ".hidden" / "secret.md").write_text("Hidden, not loaded.")
    return root


def test_textdir_titles_ids_and_sections(text_folder):
    passages, questions = textdir.load(kb("textdir", text_folder, chunk_words=40, chunk_overlap=8))
    assert questions == []
    files = list(dict.fromkeys(p.group for p in passages))
    assert files == ["guide.md", "notes/deep/one.TXT", "notes/long.txt"]  # sorted, hidden/empty/.rst skipped
    guide = [p for p in passages if p.group == "guide.md"]
    assert [p.id for p in guide] == [f"guide.md#{i}" for i in range(len(guide))]
    assert [(p.title, p.text.split()[0]) for p in guide] == [
        ("guide", "Intro"), ("Refunds", "Refunds"), ("Roaming abroad", "Roaming"), ("Data plans", "The")]
    assert "front matter" not in " ".join(p.text for p in passages)
    assert "Refunds take 14 days. They go back to the original card.\n\nSecond refund" in guide[1].text
    assert "```bash\n# not a heading: a shell comment\necho roaming\necho done\n```" in guide[2].text  # one block
    one = next(p for p in passages if p.group == "notes/deep/one.TXT")
    assert (one.id, one.title, one.text) == ("notes/deep/one.TXT#0", "one", "# not a heading in a .txt file\nJust one line.")
    assert textdir.load(kb("textdir", text_folder, chunk_words=40, chunk_overlap=8)) == (passages, questions)


@pytest.mark.parametrize("size,overlap", [(40, 8), (120, 20), (25, 0), (10, 9)])
def test_textdir_chunks_are_bounded_overlap_and_lose_nothing(text_folder, size, overlap):
    passages, _ = textdir.load(kb("textdir", text_folder, chunk_words=size, chunk_overlap=overlap))
    chunks = [p.text.split() for p in passages if p.group == "notes/long.txt"]
    original = (text_folder / "notes" / "long.txt").read_text().split()
    assert len(chunks) >= len(original) // size
    assert all(0 < len(c) <= size for c in chunks)
    if size >= 25:  # paragraph and sentence breaks keep chunks well filled (the last may be short)
        assert all(len(c) >= size / 2 for c in chunks[:-1]), [len(c) for c in chunks]
    rebuilt = list(chunks[0])
    for prev, nxt in zip(chunks, chunks[1:]):
        shared = min(overlap, len(prev))
        assert nxt[:shared] == prev[len(prev) - shared:]  # the overlap
        rebuilt += nxt[shared:]
    assert rebuilt == original  # every word once, in order


def test_textdir_prefers_paragraph_breaks(tmp_path):
    paras = [" ".join(f"p{i}w{j}" + ("." if j % 10 == 9 else "") for j in range(30)) for i in range(6)]
    (tmp_path / "a.txt").write_text("\n\n".join(paras))
    passages, _ = textdir.load(kb("textdir", tmp_path, chunk_words=70, chunk_overlap=0))
    # 30-word paragraphs: two fit in a 70-word chunk, and the third goes to the next chunk whole.
    assert [len(p.text.split()) for p in passages] == [60, 60, 60]
    assert all(p.text.count("\n\n") == 1 for p in passages)


def test_textdir_questions_use_chunk_ids(text_folder, tmp_path):
    qpath = write_jsonl(tmp_path / "q.jsonl", [
        {"id": "q1", "question": "How long do refunds take?", "label": "ik", "kind": "in_knowledge",
         "answers": ["14 days"], "passage_id": "guide.md#1"}])
    _, questions = textdir.load(kb("textdir", text_folder, qpath))
    assert questions[0].passage_id == "guide.md#1"
    write_jsonl(qpath, [{"id": "q1", "question": "?", "passage_id": "guide.md#99"}])
    with pytest.raises(HalluguardError, match=re.escape(f"{qpath}:1: passage_id 'guide.md#99'")):
        textdir.load(kb("textdir", text_folder, qpath))


def test_textdir_folder_errors(tmp_path):
    with pytest.raises(HalluguardError, match=re.escape(f"folder not found: {tmp_path / 'nope'}")):
        textdir.load(kb("textdir", tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("text")
    with pytest.raises(HalluguardError, match=re.escape(f"{tmp_path / 'file.txt'}: the textdir format needs a folder")):
        textdir.load(kb("textdir", tmp_path / "file.txt"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.rst").write_text("text")
    with pytest.raises(HalluguardError, match=re.escape(f"{other}: no .txt or .md files")):
        textdir.load(kb("textdir", other))
    (other / "a.md").write_text("\n  \n")
    (other / "b.txt").write_text("")
    with pytest.raises(HalluguardError, match=re.escape(f"{other}: all 2 .txt/.md files are empty")):
        textdir.load(kb("textdir", other))
    (other / "c.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(HalluguardError, match=re.escape(f"{other / 'c.txt'}: not UTF-8 text")):
        textdir.load(kb("textdir", other))
    with pytest.raises(HalluguardError, match="kb.passages is not set"):
        textdir.load(kb("textdir"))
