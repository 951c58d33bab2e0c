"""benchmarks/rejudge_answers.py: an evaluation's answers judged again by today's detector, into a new folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rejudge_answers.py"
QUOTE = "The section on Changing your number says: Number change requests are made in the Account section."
REFUSAL = "I can't tell you the fee you're asking about: it isn't in the passages I was given."


@pytest.fixture(scope="module")
def rejudge():
    spec = importlib.util.spec_from_file_location("rejudge_answers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def write_eval(folder: Path) -> Path:
    """Two questions as an older detector judged them: a quote-form answer wrongly called a refusal."""
    folder.mkdir(parents=True)
    rows = [{"case_id": "q1", "question_id": "q1", "label": "ik", "answers": ["Account section"],
             "evidence_holds_answer": True,
             "models": {"sft": {"answer": QUOTE, "refused": True, "refusal_score": 0.8, "correct": False},
                        "gated_sft": {"answer": QUOTE, "refused": True, "refusal_score": 1.0, "correct": False},
                        "never_refuse": {"answer": None, "refused": False, "correct": None}}},
            {"case_id": "q2", "question_id": "q2", "label": "ook", "answers": [], "evidence_holds_answer": False,
             "models": {"sft": {"answer": REFUSAL, "refused": True, "refusal_score": 0.99, "correct": None},
                        "gated_sft": {"answer": REFUSAL, "refused": True, "refusal_score": 1.0, "correct": None},
                        "never_refuse": {"answer": None, "refused": False, "correct": None}}}]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sampled = [{"case_id": "q1", "label": "ik", "evidence_holds_answer": True,
                "models": {"sft": {"refusal_rate": 1.0, "answers": [QUOTE, QUOTE, REFUSAL, QUOTE]}}},
               {"case_id": "q2", "label": "ook", "evidence_holds_answer": False,
                "models": {"sft": {"refusal_rate": 1.0, "answers": [REFUSAL] * 4}}}]
    (folder / "sampled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sampled))
    return folder


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answers_are_judged_again_into_a_new_folder(tmp_path, rejudge, capsys):
    folder = write_eval(tmp_path / "eval")
    before = {name: (folder / name).read_bytes() for name in ("samples.jsonl", "sampled.jsonl")}
    assert rejudge([str(folder), "--out", str(tmp_path / "new")]) == 0
    greedy = read(tmp_path / "new" / "samples.jsonl")
    sft = greedy[0]["models"]["sft"]
    assert sft["refused"] is False and sft["refusal_score"] < 0.5
    assert sft["correct"] is True  # answered now, and the gold answer is in it
    assert greedy[1]["models"]["sft"]["refused"] is True
    assert greedy[0]["models"]["gated_sft"] == {"answer": QUOTE, "refused": True, "refusal_score": 1.0,
                                                "correct": False}  # the gate's verdict is not the detector's
    assert greedy[0]["models"]["never_refuse"]["refused"] is False
    sampled = read(tmp_path / "new" / "sampled.jsonl")
    assert sampled[0]["models"]["sft"]["refusal_rate"] == 0.25 and sampled[1]["models"]["sft"]["refusal_rate"] == 1.0
    printed = capsys.readouterr().out
    assert "greedy   sft" in printed and "IK 1.000 -> 0.000" in printed
    assert {name: (folder / name).read_bytes() for name in before} == before  # the eval folder is untouched


def test_the_eval_folder_and_an_existing_output_are_refused(tmp_path, rejudge, capsys):
    folder = write_eval(tmp_path / "eval")
    assert rejudge([str(folder), "--out", str(folder)]) == 2
    assert "the originals are kept" in capsys.readouterr().err
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "samples.jsonl").write_text("mine\n")
    assert rejudge([str(folder), "--out", str(tmp_path / "new")]) == 2
    assert "exists: give a new --out folder" in capsys.readouterr().err
    assert (tmp_path / "new" / "samples.jsonl").read_text() == "mine\n"
    assert rejudge([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "no samples.jsonl there" in capsys.readouterr().err


def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, rejudge, capsys):
    folder = write_eval(tmp_path / "eval")
    with (folder / "sampled.jsonl").open("a") as handle:
        handle.write("{not json\n")
    assert rejudge([str(folder), "--out", str(tmp_path / "new")]) == 2
    assert "sampled.jsonl:3: not an eval row" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
