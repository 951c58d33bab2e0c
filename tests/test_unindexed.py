import pytest
from omegaconf import OmegaConf

from data_builders.unindexed import UNINDEXED, leave_out_of_index
from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question

from conftest import SHARED_DATA

PASSAGES = [Passage(id=f"p{i}", text=f"fact {i}", group=f"g{i % 4}") for i in range(200)]
QUESTIONS = [Question(id=f"q{i}", question=f"fact {i}?", label="ik", kind="in_knowledge", answers=[f"fact {i}"],
                      passage_id=f"p{i}", meta={"hallucinated_answer": "wrong"}) for i in range(200)]


def test_half_of_the_passages_leave_the_index_and_their_questions_become_ook():
    kept, questions, info = leave_out_of_index(PASSAGES, QUESTIONS, 0.5, "passage", seed=0)
    kept_ids = {p.id for p in kept}
    assert 70 < len(kept) < 130 and info["indexed_passages"] == len(kept)
    for q in questions:
        if q.id.replace("q", "p") in kept_ids:
            assert q.label == "ik" and q.answers
        else:
            assert (q.label, q.kind, q.answers, q.passage_id) == ("ook", UNINDEXED, [], None)
            assert q.meta["unindexed_answers"] and q.meta["hallucinated_answer"] == "wrong"
    assert QUESTIONS[0].label == "ik"  # inputs untouched
    again, _, _ = leave_out_of_index(PASSAGES, QUESTIONS, 0.5, "passage", seed=0)
    assert again == kept


def test_by_group_leaves_whole_groups_out():
    kept, _, _ = leave_out_of_index(PASSAGES, QUESTIONS, 0.5, "group", seed=3)
    kept_groups = {p.group for p in kept}
    assert all((p.group in kept_groups) == (p in kept) for p in PASSAGES)


@pytest.mark.parametrize("fraction,by", [(1.0, "passage"), (-0.1, "passage"), (0.5, "article")])
def test_bad_settings_are_clear_errors(fraction, by):
    with pytest.raises(HalluguardError, match="kb.unindexed"):
        leave_out_of_index(PASSAGES, QUESTIONS, fraction, by, seed=0)


def test_halueval_with_half_the_knowledge_indexed_has_ook_questions_with_dataset_negatives():
    path = SHARED_DATA / "halueval" / "qa_data.json"
    if not path.is_file():
        pytest.skip(f"needs ../shared/data ({path} not found)")
    from data_builders.sources import load_kb

    cfg = OmegaConf.create({"format": "halueval", "passages": str(path), "questions": None,
                            "unindexed_fraction": 0.5, "unindexed_by": "passage"})
    passages, questions = load_kb(cfg)
    ook = [q for q in questions if q.label == "ook"]
    assert 0.4 < len(ook) / len(questions) < 0.6 and 3500 < len(passages) < 4500
    assert all(q.meta["hallucinated_answer"] and q.meta["unindexed_answers"] for q in ook)
