"""`builder.num_proc`: the per-question builders over shards of questions give the same output as one process."""

import json
import random

import pytest

from halluguard.artifacts import sha256_file
from halluguard.errors import ConfigError
from halluguard.stages import build

from conftest import TINY_PASSAGES, TINY_QUESTIONS, write_jsonl

# Every data output must be byte-identical; stats.json also holds wall-clock timings.
DATA_OUTPUTS = ("pairs", "ppo_prompts", "heldout")
JSONL_OUTPUTS = ("pairs_train.jsonl", "pairs_heldout.jsonl", "cases.jsonl", "probe.jsonl")


def _tiny(compose, root, num_proc):
    kb = root / f"kb{num_proc}"
    kb.mkdir()
    return compose(["kb=jsonl", f"kb.passages={write_jsonl(kb / 'passages.jsonl', TINY_PASSAGES)}",
                    f"kb.questions={write_jsonl(kb / 'questions.jsonl', TINY_QUESTIONS)}",
                    f"paths.runs={root / 'runs'}", f"paths.cache={root / 'cache'}", f"exp=np{num_proc}",
                    "builder.split.heldout_fraction=0.5", f"builder.num_proc={num_proc}"])


def _counts(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _hf_cache_files():
    import datasets.config

    folder = datasets.config.HF_DATASETS_CACHE
    return sorted(str(p) for p in folder.rglob("*")) if folder.exists() else []


def test_two_processes_give_byte_identical_outputs_and_leave_no_cache_files(compose, tmp_path):
    before = _hf_cache_files()
    one = build.run(_tiny(compose, tmp_path, 1))
    two = build.run(_tiny(compose, tmp_path, 2))
    a, b = one.path.parent, two.path.parent
    for name in JSONL_OUTPUTS:
        assert sha256_file(a / name) == sha256_file(b / name), name
    assert {k: one.outputs[k].sha256 for k in DATA_OUTPUTS} == {k: two.outputs[k].sha256 for k in DATA_OUTPUTS}
    sa, sb = (json.loads((f / "stats.json").read_text()) for f in (a, b))
    for key in ("pairs", "cases", "synthesis", "final_label", "split"):
        assert sa[key] == sb[key], key
    for key in ("filters", "filters_heldout"):  # their rows also record seconds
        assert _counts(sa[key]) == _counts(sb[key]), key
    assert sa["pairs"]["train"]["total"] > 0 and sa["pairs"]["heldout"]["total"] > 0
    assert sa["synthesis"].get("attempted", 0) > 0  # the shards did synthesise, not only copy questions
    # the temporary maps write nothing to disk: no Arrow cache files in the runs folder or the datasets cache
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.name.startswith("cache-")]
    assert _hf_cache_files() == before


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_num_proc_below_one_is_a_config_error_naming_the_key(compose, bad):
    with pytest.raises(ConfigError, match=r"builder\.num_proc"):
        compose([f"builder.num_proc={bad}"])


# ---------------------------------------------------------------- per-question RNG, on the demo KB (no encoder)

def _tasks(demo_kb):
    """A task per demo question, in the shape the pipeline sends, with the question's own passage first."""
    passages, questions = demo_kb
    rng = random.Random(0)
    out = []
    for q in questions:
        shown = ([q.passage_id] if q.passage_id else []) + [p.id for p in rng.sample(passages, 2)]
        out.append({"question": q.to_dict(), "group": "g", "side": "train", "label": "ik" if q.answers else "ook",
                    "language": "en", "evidence": shown[:3],
                    "neighbours": shown[:3] + [p.id for p in rng.sample(passages, 9)]})
    return out


@pytest.fixture(scope="module")
def demo_settings():
    from omegaconf import OmegaConf

    from data_builders import parallel
    from halluguard.config import RootConfig

    return parallel.settings(OmegaConf.structured(RootConfig))


def test_results_do_not_depend_on_the_number_of_shards(demo_kb, demo_settings):
    from data_builders import parallel

    passages, _ = demo_kb
    tasks = _tasks(demo_kb)[:200]
    one = parallel.run(tasks, passages, demo_settings, num_proc=1)
    assert sum(len(r["pairs"]) for r in one) > 100 and any(len(r["cases"]) > 1 for r in one)
    assert parallel.run(tasks, passages, demo_settings, num_proc=3) == one


def test_removing_a_question_leaves_the_pairs_of_the_others_unchanged(demo_kb, demo_settings):
    from data_builders import parallel

    passages, _ = demo_kb
    tasks = _tasks(demo_kb)[:120]
    full = parallel.run(tasks, passages, demo_settings)
    # drop an in-knowledge question early in the list: under one shared RNG every later draw would shift
    gone = next(i for i, t in enumerate(tasks) if t["label"] == "ik" and i > 2)
    fewer = parallel.run(tasks[:gone] + tasks[gone + 1:], passages, demo_settings)
    assert fewer == full[:gone] + full[gone + 1:]
    # and the seed still matters
    other = parallel.run(tasks, passages, {**demo_settings, "seed": demo_settings["seed"] + 1})
    assert [r["pairs"] for r in other] != [r["pairs"] for r in full]
