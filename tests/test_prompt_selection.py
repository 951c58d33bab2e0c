"""``ppo.prompts``: which of the build's PPO prompts PPO trains on, and the clear errors around it."""

import pytest

from halluguard.errors import ConfigError, HalluguardError
from halluguard.ppo.prompt_selection import select_prompts, sft_case_ids

ROWS = [{"case_id": "a", "label": "ik"}, {"case_id": "b", "label": "ook"}, {"case_id": "c", "label": "ik"},
        {"case_id": "d", "label": "ook"}]
META = [{"label": r["label"], "n": i} for i, r in enumerate(ROWS)]


def test_all_keeps_every_prompt_in_order():
    rows, meta, sel = select_prompts(ROWS, META, "all")
    assert rows == ROWS and meta == META
    assert (sel.kept, sel.seen_by_sft, sel.kept_by_label) == (4, 0, {"ik": 2, "ook": 2})


def test_unseen_by_sft_drops_the_prompts_sft_trained_on_and_keeps_meta_aligned():
    rows, meta, sel = select_prompts(ROWS, META, "unseen_by_sft", {"a", "d"})
    assert [r["case_id"] for r in rows] == ["b", "c"] and [m["n"] for m in meta] == [1, 2]
    assert (sel.kept, sel.seen_by_sft, sel.kept_by_label) == (2, 2, {"ik": 1, "ook": 1})
    assert sel.describe().startswith("PPO prompts (ppo.prompts=unseen_by_sft): 2 the SFT reference did not train on")


def test_nothing_left_or_a_bad_mode_is_a_clear_error():
    with pytest.raises(HalluguardError, match="leaves no PPO prompt: the SFT reference trained on all 4"):
        select_prompts(ROWS, META, "unseen_by_sft", {"a", "b", "c", "d"})
    with pytest.raises(HalluguardError, match="ppo.prompts must be one of all, unseen_by_sft"):
        select_prompts(ROWS, META, "unseen")
    with pytest.raises(HalluguardError, match="4 PPO prompts but 3 meta"):
        select_prompts(ROWS, META[:3], "all")


def test_sft_case_ids_reads_examples_and_names_a_bad_line(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text('{"case_id": "a", "label": "ik"}\n\n{"case_id": "b"}\n')
    assert sft_case_ids(path) == {"a", "b"}
    path.write_text('{"case_id": "a"}\n{"label": "ik"}\n')
    with pytest.raises(HalluguardError, match=r"examples\.jsonl, line 2: not an SFT example with a 'case_id'"):
        sft_case_ids(path)


@pytest.mark.parametrize("overrides,match", [
    (["ppo.prompts=unseen"], r"'ppo\.prompts' must be one of all, unseen_by_sft, got 'unseen'"),
    (["ppo.prompts=unseen_by_sft", "ppo.algo=grpo"], r"ppo\.prompts=unseen_by_sft' applies to ppo\.algo=ppo only"),
    (["sft.reserve_ik_questions=-1"], r"'sft\.reserve_ik_questions' must be >= 0"),
])
def test_config_checks_the_choice_the_algorithm_and_the_reserve(compose, overrides, match):
    with pytest.raises(ConfigError, match=match):
        compose(overrides, stage="ppo")


def test_the_defaults_select_every_prompt_and_reserve_nothing(compose):
    cfg = compose(stage="ppo")
    assert cfg.ppo.prompts == "all" and cfg.sft.reserve_ik_questions == 0
