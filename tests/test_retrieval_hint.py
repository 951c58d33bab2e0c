"""prompt.retrieval_hint end to end: the similarity a built prompt states is the one the evaluation's gate uses."""

import re

import pytest
from conftest import compose_cfg

from halluguard.stages import build

HINT = re.compile(r"Retrieval match: (strong|weak) \(similarity (-?\d\.\d\d)\)")


@pytest.fixture(scope="module")
def hinted_build(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = compose_cfg([f"paths.runs={runs}", "exp=t", "builder.max_questions=150", "prompt.retrieval_hint=true"])
    return cfg, build.run(cfg)


def _stated(messages) -> tuple[str, float]:
    found = HINT.search(messages[-1]["content"])
    assert found, messages[-1]["content"][-300:]
    return found.group(1), float(found.group(2))


def test_every_training_and_held_out_prompt_states_the_match(hinted_build):
    from datasets import load_from_disk

    _, manifest = hinted_build
    pairs = load_from_disk(str(manifest.output_path("pairs")))
    for split in ("train", "test") if "test" in pairs else ("train",):
        for row in pairs[split]:
            level, score = _stated(row["prompt"])
            assert level == ("strong" if score >= 0.45 else "weak") or abs(score - 0.45) < 0.01
    for row in load_from_disk(str(manifest.output_path("ppo_prompts"))):
        _stated(row["prompt"])


def test_the_stated_similarity_is_what_the_gate_sees(hinted_build, encoder):
    """Retrieved cases state their top-1 score; synthetic ones (other evidence, an edited question) the score
    the evaluation's gate computes from the passages shown: the model is told exactly the gate's input."""
    from halluguard.evaluation.heldout import fill_gate_similarity, load_heldout
    from halluguard.retrieval import KnowledgeIndex, passage_text

    _, manifest = hinted_build
    questions = load_heldout(manifest.output_path("heldout"))
    index = KnowledgeIndex.load(manifest.output_path("index"))
    fill_gate_similarity(questions, {p.id: passage_text(p) for p in index.passages}, encoder)
    sources = set()
    for q in questions:
        _, score = _stated(q.messages)
        assert score == pytest.approx(q.gate_top1, abs=0.0051), (q.case_id, q.gate_top1_source)
        sources.add(q.gate_top1_source)
    assert sources == {"build", "evidence"}  # both kinds of case were checked
