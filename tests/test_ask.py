"""``halluguard ask``: one question through retrieval, the knowledge probe and both models, from the console."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import cli_in_process
from tiny_chain import tiny_chain  # noqa: F401 (the shared `halluguard run` fixture)

from halluguard import cli

QUESTION = "How long does a refund take, and what's the fee?"  # a comma, an apostrophe, a question mark
SIMILARITY = re.compile(r"^  (\d)\. similarity (-?\d\.\d{3})  (a\d)  ", re.M)
VERDICT = re.compile(r"^refusal detector: (REFUSES|ANSWERS|EMPTY)", re.M)
PROBE = re.compile(r"^knowledge probe \(the build's rule and thresholds\): (IK|OOK|AMBIGUOUS)  "
                   r"\[score: top-1 similarity (-?\d\.\d{3}), gap", re.M)


def _ok(chain) -> list[str]:
    assert chain["result"].returncode == 0, chain["result"].stderr[-3000:]
    return [*chain["overrides"], "ask.max_new_tokens=6"]


def _check_answered(out: str, question: str, trained: str | None = "ppo") -> None:
    """One question's block: the passages with similarities, the probe and gate verdicts, the answers."""
    block = out[out.index(f"\nquestion: {question}\n"):]
    hits = SIMILARITY.findall(block)[:3]
    assert [h[0] for h in hits] == ["1", "2", "3"]
    scores = [float(h[1]) for h in hits]
    assert scores == sorted(scores, reverse=True)
    probe = PROBE.search(block)
    assert probe and float(probe.group(2)) == scores[0]
    assert "retrieval gate (eval.gate_max_top1=0.45): " in block
    ref = block.index("=== reference: ")
    assert len(VERDICT.findall(block[ref:])) >= (2 if trained else 1)
    if trained:
        assert ref < block.index(f"=== {trained}: trained, sft -> {trained} from ")
    else:
        assert "=== ppo" not in block and "=== sft" not in block


@pytest.mark.usefixtures("one_torch_thread")
def test_ask_one_question_shows_retrieval_probe_and_both_answers(tiny_chain, capsys):  # noqa: F811
    overrides = _ok(tiny_chain)
    # the free-text form, quoted for Hydra by the CLI
    code, out, err = cli_in_process(capsys, "ask", QUESTION, *overrides)
    assert code == 0, err[-3000:]
    exp_dir = tiny_chain["exp_dir"]
    assert f"answers by reference and ppo; trained policy: ask.policy=auto: ppo ({exp_dir / 'ppo'} exists)" in out
    assert f"retrieved from {exp_dir / 'build'} (4 passages), top 3:" in out
    _check_answered(out, QUESTION)
    assert "a1  Refunds: Refunds for unused prepaid credit" in out  # the passage that answers it comes first
    assert len(VERDICT.findall(out)) == 2 and "question> " not in out

    # The override form, and an explicit policy.
    code, out, err = cli_in_process(capsys, "ask", *overrides, 'ask.question="Is roaming free, or not?"',
                                    "ask.policy=sft")
    assert code == 0, err[-3000:]
    assert "trained policy: ask.policy=sft" in out
    block = out[out.index("\nquestion: Is roaming free, or not?\n"):]
    assert "=== sft: trained, sft from " in block and len(VERDICT.findall(block)) == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_ask_reads_questions_from_stdin_until_an_empty_line(tiny_chain):  # noqa: F811
    overrides = _ok(tiny_chain)
    stdin = "Is roaming free?\nWho won the 1998 football World Cup?\n\nnever asked\n"
    res = _halluguard_stdin(["ask", *overrides], stdin)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert out.count("question> ") == 3  # two questions, then the empty line that ends
    _check_answered(out, "Is roaming free?")
    _check_answered(out, "Who won the 1998 football World Cup?")
    assert "never asked" not in out and "2 questions answered" in out
    assert out.count("halluguard ask: experiment") == 1  # the models loaded once
    assert len(VERDICT.findall(out)) == 4


@pytest.mark.usefixtures("one_torch_thread")
def test_the_end_of_input_also_ends_the_questions(tiny_chain, capsys, monkeypatch):  # noqa: F811
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Is roaming free?\n"))
    code, out, err = cli_in_process(capsys, "ask", *_ok(tiny_chain))
    assert code == 0, err[-3000:]
    assert out.count("question> ") == 2 and "1 question answered" in out
    _check_answered(out, "Is roaming free?")


def _halluguard_stdin(args: list[str], stdin: str):
    import os
    import subprocess

    from tiny_chain import BIN

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN), *args], check=False, input=stdin, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.usefixtures("one_torch_thread")
def test_ask_without_a_trained_policy_answers_with_the_reference_alone(tiny_chain, tmp_path, capsys):  # noqa: F811
    _ok(tiny_chain)
    shutil.copytree(tiny_chain["exp_dir"] / "build", tmp_path / "runs" / "u" / "build")  # the build alone
    keep = [o for o in tiny_chain["overrides"] if not o.startswith(("exp=", "paths.runs="))]
    overrides = [*keep, "exp=u", f"paths.runs={tmp_path / 'runs'}", "ask.max_new_tokens=6"]
    runs = tmp_path / "runs" / "u"

    code, out, err = cli_in_process(capsys, "ask", QUESTION, *overrides)
    assert code == 0, err[-3000:]
    assert (f"answers by reference; no trained policy, the reference answers alone: experiment 'u' has no trained "
            f"policy: neither {runs / 'ppo'} nor {runs / 'sft'} holds a finished stage") in out
    _check_answered(out, QUESTION, trained=None)
    assert len(VERDICT.findall(out)) == 1
    assert "(no trained policy for experiment 'u': only the reference answered; train one with " \
           "`halluguard run exp=u`)" in out

    code, out, err = cli_in_process(capsys, "ask", QUESTION, *overrides, "ask.policy=ppo")
    assert code == 2 and "Traceback" not in err
    assert f"no ppo policy for experiment 'u': {runs / 'ppo'} does not exist. Run `halluguard ppo exp=u` first" in err


def test_ask_without_a_build_says_what_to_run(tiny_overrides, tmp_path, capsys):
    assert cli.main(["ask", "Is roaming free?", *tiny_overrides]) == 2
    err = capsys.readouterr().err
    assert f"experiment 't' has no build: {tmp_path / 'runs' / 't' / 'build'} holds no manifest.json" in err
    assert "Run `halluguard build exp=t` first" in err


@pytest.mark.parametrize("question", [
    QUESTION, "Is x = y, or: [a, b] {c}?", 'She said "it\'s fine"', "ends in a backslash\\", "a\\'b", "'",
    "cost ${oc.env:HOME} or $5", "  two  spaces, then a tab\there  ",
])
def test_a_free_text_question_reaches_the_config_unchanged(question, compose):
    overrides = cli.question_override([question, "exp=q"])
    assert overrides[0].startswith("ask.question='") and overrides[1:] == ["exp=q"]
    cfg = compose(overrides, stage="ask")
    assert cfg.ask.question == question and cfg.exp == "q"


def test_the_one_argument_that_is_no_override_is_the_question(capsys):
    from halluguard.errors import HalluguardError

    assert cli.question_override(["exp=demo", "ask.question=x"]) == ["exp=demo", "ask.question=x"]
    assert cli.question_override(["--cfg", "job", "~ask.question"]) == ["--cfg", "job", "~ask.question"]
    assert cli.question_override([]) == []
    assert cli.question_override(["Why?", "exp=a"]) == ["ask.question='Why?'", "exp=a"]
    assert cli.question_override(["exp=a", "--cfg", "job", "Is x = y?"]) == ["exp=a", "--cfg", "job",
                                                                            "ask.question='Is x = y?'"]
    with pytest.raises(HalluguardError, match="takes one question, as one argument: quote it"):
        cli.question_override(["Is", "roaming", "free?", "exp=a"])
    assert cli.main(["ask", "Is", "roaming", "free?"]) == 2
    assert 'halluguard ask "Is roaming free?"' in capsys.readouterr().err


def test_ask_settings_are_checked_before_anything_loads(compose):
    from halluguard.errors import ConfigError

    with pytest.raises(ConfigError, match="'ask.max_new_tokens' must be positive, got 0"):
        compose(["ask.max_new_tokens=0"], stage="ask")
    with pytest.raises(ConfigError, match="'ask.policy' must be one of auto, sft, ppo, dpo, grpo, got 'reference'"):
        compose(["ask.policy=reference"], stage="ask")
    assert compose([], stage="ask").ask.question is None  # default: read questions from stdin
