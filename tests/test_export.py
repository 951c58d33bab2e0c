"""``halluguard export``: the trained policy as a standalone Hugging Face folder that plain transformers loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import TINY_PASSAGES, TINY_QUESTIONS
from tiny_chain import tiny_chain  # noqa: F401 (the shared `halluguard run` fixture)

from halluguard import cli

NEW_TOKENS = 8

# Runs in a fresh interpreter that imports transformers alone: what a user of the exported folder has.
PLAIN_LOAD = f"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, conversations = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
model.eval()
assert tokenizer.chat_template, "the exported tokenizer has no chat template"
rows = []
for messages in conversations:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens={NEW_TOKENS}, min_new_tokens={NEW_TOKENS}, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    rows.append({{"prompt": text, "ids": ids[0].tolist()}})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("halluguard", "peft"))
assert not leaked, leaked
print("RESULT " + json.dumps(rows))
"""


def _conversations(prompt_cfg) -> list[list[dict]]:
    from halluguard.kb import Passage
    from halluguard.prompting import build_messages

    passages = [Passage(id=p["id"], text=p["text"], title=p["title"]) for p in TINY_PASSAGES]
    questions = [q["question"] for q in TINY_QUESTIONS[:3]]
    return [build_messages(q, passages[i:i + 3], prompt_cfg) for i, q in enumerate(questions)]


def _copy_experiment(chain: dict, root, stages) -> list[str]:
    """A new experiment under ``root`` holding copies of the chain's ``stages`` (the shared folder stays as it is)."""
    exp_dir = root / "runs" / "x"
    for stage in stages:
        shutil.copytree(chain["exp_dir"] / stage, exp_dir / stage)
    keep = [o for o in chain["overrides"] if not o.startswith(("exp=", "paths.runs="))]
    return [*keep, "exp=x", f"paths.runs={root / 'runs'}"]


@pytest.mark.usefixtures("one_torch_thread")
def test_export_loads_with_plain_transformers_and_generates_like_eval(tiny_chain, tmp_path, compose,  # noqa: F811
                                                                     capsys):
    import torch

    from halluguard.evaluation.models import load_model, resolve_source

    assert tiny_chain["result"].returncode == 0, tiny_chain["result"].stderr[-3000:]
    overrides = _copy_experiment(tiny_chain, tmp_path, ("sft", "ppo", "eval"))
    capsys.readouterr()
    assert cli.main(["export", *overrides]) == 0  # in this process; the loading below is in a fresh one
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "x" / "export" / "ppo"
    assert f"export.policy=auto: ppo ({tmp_path / 'runs' / 'x' / 'ppo'} exists)" in out
    assert f"export: ppo written to {folder}" in out

    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json", "README.md",
            "manifest.json"} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert not any(n.startswith("adapter") for n in names)  # merged: no PEFT files
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["metrics"]["policy"] == "ppo"
    assert manifest["metrics"]["lineage"]["stages"] == ["sft", "ppo"]
    assert {"model.safetensors", "config.json", "README.md"} <= set(manifest["outputs"])
    card = (folder / "README.md").read_text()
    base = next(o.split("=", 1)[1] for o in overrides if o.startswith("model.name_or_path="))
    assert "| stages merged | sft -> ppo |" in card and f"| base model | `{base}` |" in card
    assert "## Evaluation" in card and "abst. recall" in card and "(this model)" in card
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    from safetensors.torch import load_file

    merged = load_file(folder / "model.safetensors")
    sft = load_file(tiny_chain["exp_dir"] / "sft" / "model" / "model.safetensors")
    assert set(merged) == set(sft)  # a plain model: no lora_A/lora_B tensors
    assert any(not torch.equal(merged[k], sft[k]) for k in merged)  # PPO's adapter is in the weights

    cfg = compose(overrides, stage="export")
    conversations = _conversations(cfg.prompt)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    plain = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(folder), json.dumps(conversations)],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False)
    assert plain.returncode == 0, plain.stderr[-3000:]
    exported = json.loads(plain.stdout.split("RESULT ", 1)[1])

    model, tokenizer = load_model(resolve_source(cfg, "ppo"), cfg, "cpu")  # the adapter on the SFT model, as eval
    for messages, row in zip(conversations, exported):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text == row["prompt"]
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert ids[0].tolist() == row["ids"]
        assert len(row["ids"]) == enc["input_ids"].shape[1] + NEW_TOKENS


def test_export_without_a_trained_stage_names_the_folder_and_the_command(tiny_overrides, tmp_path, capsys):
    runs = tmp_path / "runs" / "t"
    assert cli.main(["export", *tiny_overrides]) == 2
    err = capsys.readouterr().err
    assert "nothing to export: experiment 't' has no trained policy" in err
    assert str(runs / "ppo") in err and str(runs / "sft") in err and "`halluguard run exp=t`" in err

    assert cli.main(["export", *tiny_overrides, "export.policy=dpo"]) == 2
    err = capsys.readouterr().err
    assert f"no dpo policy for experiment 't': {runs / 'dpo'} does not exist" in err
    assert "Run `halluguard ppo ppo.algo=dpo exp=t` first" in err and "Traceback" not in err
    assert not (runs / "export").exists()


def test_export_policy_must_be_a_known_one(tiny_overrides, capsys):
    assert cli.main(["export", *tiny_overrides, "export.policy=ppoo"]) == 2
    assert "config key 'export.policy' must be one of auto, sft, ppo, dpo, grpo, got 'ppoo'" in capsys.readouterr().err
