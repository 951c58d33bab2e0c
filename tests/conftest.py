"""Shared fixtures: tiny local models, a tiny knowledge base, and the real configs composed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Nothing in the suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

def load_benchmark(name: str):
    """A script of ``benchmarks/`` (``name`` without ``.py``) imported as a module, to test its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``halluguard *args`` in this process: exit code, stdout, stderr. A fresh process pays ~13 s of imports on
    2 cores; tests about what a stage prints and leaves behind run here, the console's own process elsewhere."""
    from halluguard import cli

    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


TINY_PASSAGES = [
    {"id": "a1", "title": "Refunds", "section": "refunds",
     "text": "Refunds for unused prepaid credit are paid within 14 days to the original card."},
    {"id": "a2", "title": "Roaming", "section": "roaming",
     "text": "Roaming in the EU costs nothing extra on the Orbit plan; outside the EU a day pass costs 6 euros."},
    {"id": "a3", "title": "Plans", "section": "plans",
     "text": "The Orbit plan costs 25 euros a month and includes 40 GB of data."},
    {"id": "a4", "title": "Devices", "section": "devices",
     "text": "Phones bought from the shop carry a two-year warranty covering manufacturing faults."},
]
TINY_QUESTIONS = [
    {"id": "q1", "question": "How long does a refund take?", "label": "ik", "kind": "in_knowledge",
     "answers": ["14 days"], "passage_id": "a1"},
    {"id": "q2", "question": "How much is the Orbit plan each month?", "label": "ik", "kind": "in_knowledge",
     "answers": ["25 euros"], "passage_id": "a3"},
    {"id": "q3", "question": "Who won the 1998 football World Cup?", "label": "ook", "kind": "off_topic",
     "answers": [], "passage_id": None},
    {"id": "q4", "question": "What is the phone number of the mayor of Zxqerville?", "label": "ook",
     "kind": "unknowable", "answers": [], "passage_id": None},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_kb(tmp_path) -> dict[str, Path]:
    return {"passages": write_jsonl(tmp_path / "passages.jsonl", TINY_PASSAGES),
            "questions": write_jsonl(tmp_path / "questions.jsonl", TINY_QUESTIONS)}


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    from halluguard.tiny import make_tiny_policy

    texts = [p["text"] for p in TINY_PASSAGES] + [q["question"] for q in TINY_QUESTIONS]
    return make_tiny_policy(tmp_path_factory.mktemp("tiny-policy"), texts=texts)


@pytest.fixture(scope="session")
def demo_kb():
    """The embedded demo knowledge base: (passages, questions)."""
    from data_builders.sources.jsonl import load_files
    from halluguard.config import package_data

    return load_files(Path(package_data("demo_kb/passages.jsonl")), Path(package_data("demo_kb/questions.jsonl")))


@pytest.fixture(scope="session")
def encoder():
    from halluguard.retrieval import Encoder

    return Encoder("embedded:all-MiniLM-L6-v2")


def compose_cfg(overrides=(), stage="build", check=True):
    """The project's real Hydra config with overrides, validated by the schemas (``check``); usable from
    module-scoped fixtures, which cannot take the function-scoped ``compose`` fixture."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from halluguard.config import validate

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=[f"stage={stage}", *overrides])
    finally:
        GlobalHydra.instance().clear()
    return validate(cfg) if check else cfg


@pytest.fixture
def compose():
    """:func:`compose_cfg` as a fixture."""
    return compose_cfg


def runs_for(built: dict, tmp_path: Path) -> tuple[Path, list[str]]:
    """A private copy of a module's built experiment (``{"runs", "overrides"}``), and overrides pointing at it."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(built["runs"] / "t" / "build", runs / "t" / "build")
    return runs, [o for o in built["overrides"] if not o.startswith("paths.runs=")] + [f"paths.runs={runs}"]


@pytest.fixture
def tiny_overrides(tmp_path, tiny_kb, tiny_policy) -> list[str]:
    """Config overrides that point every stage at the tiny KB, the tiny policy and a temp runs dir."""
    return [
        "kb=jsonl", f"kb.passages={tiny_kb['passages']}", f"kb.questions={tiny_kb['questions']}",
        f"model.name_or_path={tiny_policy}", f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}",
        "exp=t", "demo.questions=4", "demo.max_new_tokens=4",
    ]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine an oversubscribed
    thread pool made a 60-step run take 235 s instead of 8 s. Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def built_tiny_overrides(root: Path, policy: Path) -> list[str]:
    """Overrides for an experiment on the tiny KB (files written under ``root``), half of it held out."""
    return ["kb=jsonl", f"kb.passages={write_jsonl(root / 'passages.jsonl', TINY_PASSAGES)}",
            f"kb.questions={write_jsonl(root / 'questions.jsonl', TINY_QUESTIONS)}",
            f"model.name_or_path={policy}", f"paths.runs={root / 'runs'}", f"paths.cache={root / 'cache'}",
            "exp=t", "builder.split.heldout_fraction=0.5"]
