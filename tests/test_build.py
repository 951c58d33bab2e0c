"""The build stage end to end: real encoder, demo knowledge base (subsampled), tiny policy."""

import json

import pytest

from halluguard.artifacts import Manifest, sha256_file
from halluguard.errors import HalluguardError
from halluguard.stages import build

from conftest import compose_cfg, write_jsonl


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    manifest = build.run(compose_cfg([f"paths.runs={runs}", "exp=t", "builder.max_questions=200"]))
    return manifest, manifest.path.parent


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_are_recorded_and_load_as_trl_preference_data(demo_build):
    from datasets import load_from_disk
    from trl.data_utils import is_conversational

    manifest, folder = demo_build
    assert {"pairs", "ppo_prompts", "heldout", "stats", "index", "questions"} <= set(manifest.outputs)
    pairs = load_from_disk(str(Manifest.load(folder).output_path("pairs")))
    assert set(pairs) == {"train", "heldout"}
    row = pairs["train"][0]
    assert is_conversational(row)
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["chosen"][0]["role"] == "assistant"
    assert {"kind", "label", "evidence_ids", "case_kind", "nll", "type_match", "scores_json"} <= set(pairs["train"].column_names)
    for name in ("summary.md", "similarity_hist.png", "filter_counts.png", "pair_kinds.png", "probe.jsonl"):
        assert (folder / name).stat().st_size > 200, name


def test_every_category_is_non_empty(demo_build):
    _, folder = demo_build
    stats = json.loads((folder / "stats.json").read_text())
    assert set(stats["pairs"]["train"]["by_kind"]) == set(stats["pair_kinds_expected"])
    assert {"ik", "ook"} <= set(stats["final_label"])
    kinds = stats["cases"]["train"]["by_kind"]
    assert all(kinds.get(k, 0) > 0 for k in ("in_knowledge", "off_topic", "false_premise", "synthetic/context_swap",
                                             "synthetic/unstated_detail", "synthetic/false_premise"))
    assert stats["probe_agreement"]["n"] == 200
    assert all(row["seen"] >= row["dropped"] >= 0 for row in stats["filters"])


def test_held_out_split_does_not_leak(demo_build):
    _, folder = demo_build
    cases = read_jsonl(folder / "cases.jsonl")
    train = [c for c in cases if c["split"] == "train"]
    held = [c for c in cases if c["split"] == "heldout"]
    assert train and held
    assert not {c["group"] for c in train} & {c["group"] for c in held}
    assert not {c["source_question_id"] for c in train} & {c["source_question_id"] for c in held}
    held_gold = {c["meta"].get("passage_id") for c in held if c["label"] == "ik"} - {None}
    assert not held_gold & {pid for c in train for pid in c["evidence"]}


def test_context_swaps_never_show_the_answer(demo_build):
    from data_builders.answer_types import contains_answer

    _, folder = demo_build
    passages = {p["id"]: p["text"] for p in read_jsonl(folder / "index" / "passages.jsonl")}
    swaps = [c for c in read_jsonl(folder / "cases.jsonl") if c["kind"] == "context_swap"]
    assert swaps
    for c in swaps:
        assert c["label"] == "ook"
        assert not contains_answer("\n".join(passages[e] for e in c["evidence"]), c["meta"]["original_answers"])


def test_same_seed_gives_the_same_pairs(demo_build, compose, tmp_path):
    from datasets.utils.logging import is_progress_bar_enabled

    manifest, folder = demo_build
    cfg = compose([f"paths.runs={tmp_path}", "exp=again", "builder.max_questions=200"])
    bars = is_progress_bar_enabled()
    again = build.run(cfg).path.parent
    assert is_progress_bar_enabled() == bars  # the build silences datasets' bars only while it saves
    for name in ("pairs_train.jsonl", "pairs_heldout.jsonl", "cases.jsonl"):
        assert sha256_file(folder / name) == sha256_file(again / name), name


def test_model_probe_on_policy_negatives_and_nll_with_a_tiny_policy(compose, tmp_path, tiny_policy):
    cfg = compose([f"paths.runs={tmp_path}", "exp=op", "builder.max_questions=40", f"model.name_or_path={tiny_policy}",
                   "builder.negatives.on_policy=true", "builder.negatives.on_policy_max_new_tokens=8",
                   "builder.filters.nll=true", "builder.filters.max_nll=1000",
                   "builder.probe.use_model=true", "builder.probe.model_samples=2"])
    folder = build.run(cfg).path.parent
    probed = [r for r in read_jsonl(folder / "probe.jsonl") if r["model_correct"] is not None]
    assert probed and all(0.0 <= r["model_correct"] <= 1.0 for r in probed)
    assert json.loads((folder / "stats.json").read_text())["model_probe"]["questions_probed"] == len(probed)
    rows = read_jsonl(folder / "pairs_train.jsonl") + read_jsonl(folder / "pairs_heldout.jsonl")
    assert any(r["rejected_kind"] == "fabrication_on_policy" for r in rows)
    assert all(r["nll"] is not None and r["nll"] > 0 for r in rows)
    stats = json.loads((folder / "stats.json").read_text())
    nll_row = next(r for r in stats["filters"] if r["name"] == "too_fake_nll")
    assert nll_row["threshold"] == 1000 and nll_row["not_scored"] == 0


def test_thresholds_that_leave_everything_ambiguous_fail_with_counts(compose, tmp_path, tiny_kb):
    unlabelled = [{k: v for k, v in json.loads(line).items() if k not in ("label", "answers")}
                  for line in tiny_kb["questions"].read_text().splitlines()]
    questions = write_jsonl(tmp_path / "unlabelled.jsonl", unlabelled)
    cfg = compose(["kb=jsonl", f"kb.passages={tiny_kb['passages']}", f"kb.questions={questions}",
                   f"paths.runs={tmp_path / 'runs'}", "exp=amb",
                   "builder.probe.ook_max_top1=-1", "builder.probe.ik_min_top1=2"])
    with pytest.raises(HalluguardError, match=r"4 of 4 questions .*ambiguous"):
        build.run(cfg)
    assert not (tmp_path / "runs" / "amb" / "build").exists()


def test_empty_knowledge_base_fails_without_output(compose, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = compose(["kb=jsonl", f"kb.passages={empty}", f"paths.runs={tmp_path / 'runs'}"])
    with pytest.raises(HalluguardError, match="empty"):
        build.run(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
