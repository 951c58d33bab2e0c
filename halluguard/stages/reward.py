"""``halluguard reward``: train the reward model on the build pairs and evaluate it on the held-out pairs.

Inputs: the ``build`` manifest of the same experiment (``pairs``, ``index``, ``ppo_prompts``, ``heldout``).
Outputs (``runs/<exp>/reward/``, written atomically):

* ``reward_model/`` - ``weights/`` (peft adapter + score head, or the full model, with the tokenizer),
  ``reward_model.json`` (how to load it) and ``normalisation.json`` (mean/std that PPO applies)
* ``eval.json`` - held-out pairwise accuracy per pair kind for the reward model and the rule-only score,
  score distributions per response class, OOK fabrications above the median OOK refusal, throughput
* ``scores.png`` - the score distributions; ``summary.md`` - the same, for a person

Several processes (``accelerate launch ... -m halluguard.cli reward``): every process trains its shard of
the pairs (TRL's trainer, gradients all-reduced); process 0 then saves, normalises, evaluates and writes
the folder while the others wait at a barrier (see :mod:`halluguard.ppo.distributed`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_json, atomic_write_text
from halluguard.config import resolve_cache_dir, stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.reward")


def run(cfg: DictConfig) -> Manifest:
    from datasets import load_from_disk

    from halluguard.models import load_tokenizer, resolve_policy_source
    from halluguard.ppo.distributed import check_launch, is_main, quiet_unless_main, wait_for_everyone
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder
    from halluguard.reward.evaluate import (accuracy_table, evaluate_pairs, load_build_context, meets_targets,
                                             pair_meta)
    from halluguard.reward.rules import RuleScorer
    from halluguard.reward.scoring import RewardModelScorer
    from halluguard.reward.train import train_reward_model

    check_launch("reward")
    quiet_unless_main()
    start = time.perf_counter()
    build_dir = stage_dir(cfg, "build")
    build = Manifest.load(build_dir)
    pairs_path = build.output_path("pairs")
    pairs = load_from_disk(str(pairs_path))
    for split in ("train", "heldout"):
        if split not in pairs:
            raise HalluguardError(f"the build's pairs at {pairs_path} have no '{split}' split; re-run `halluguard build`")
    passages, answers = load_build_context(build_dir, build)
    source = resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    backbone = source
    if cfg.reward.train.init == "sft" and not cfg.reward.reward_model:
        from halluguard.sft import reference_source

        backbone = reference_source(cfg)
    rcfg = cfg.reward

    manifest = Manifest(stage="reward", exp=cfg.exp, config=to_plain(cfg))
    manifest.add_input("pairs", pairs_path)
    manifest.add_input("build_manifest", build.path)
    final = stage_dir(cfg, "reward")
    if not is_main():  # train this process's shard; process 0 writes everything
        if not rcfg.reward_model:
            train_reward_model(pairs["train"], backbone, cfg.model, rcfg, None, seed=cfg.seed)
        wait_for_everyone()
        manifest.path = final / "manifest.json"
        return manifest
    with atomic_dir(final) as out:
        rm_dir = out / "reward_model"
        if rcfg.reward_model:
            given = Path(str(rcfg.reward_model)).expanduser()
            if not (given / "reward_model.json").is_file():
                raise HalluguardError(f"reward.reward_model={given} is not a reward model saved by `halluguard reward`")
            shutil.copytree(given, rm_dir)
            train_info = {"pairs": {}, "reused": str(given)}
        else:
            train_info = train_reward_model(pairs["train"], backbone, cfg.model, rcfg, rm_dir, seed=cfg.seed)
            train_info["backbone"] = str(backbone)
        policy_tokenizer = load_tokenizer(source, cfg.model)
        rm = RewardModelScorer.load(rm_dir, policy_tokenizer=policy_tokenizer, batch_size=rcfg.eval_batch_size)
        encoder = Encoder.from_config(cfg.retriever)
        rules = RuleScorer(rcfg.rules, RefusalDetector(encoder=encoder, threshold=rcfg.refusal_threshold))
        held = list(pairs["heldout"])
        result = evaluate_pairs(held, pair_meta(held, passages, answers), rm, rules, png=out / "scores.png",
                                rm_weight=rcfg.rm_weight)
        result["train"] = train_info
        atomic_write_json(out / "eval.json", result)
        table = accuracy_table(result)
        atomic_write_text(out / "summary.md", _summary(cfg, result, train_info, table))
        for name in ("reward_model", "eval.json", "scores.png", "summary.md"):
            manifest.add_output(name.split(".")[0], out / name, out)
        manifest.metrics = {
            "rm_accuracy_by_kind": {k: v["accuracy"] for k, v in result["rm"].items()},
            "rules_accuracy_by_kind": {k: v["accuracy"] for k, v in result["rules"].items()},
            "hybrid_accuracy_by_kind": {k: v["accuracy"] for k, v in result["hybrid"].items()},
            "rm_meets_targets": meets_targets(result["rm"]),
            "ook_fabrication_above_median_refusal": result["ook_fabrication_above_median_refusal"],
            "throughput_responses_per_s": result["throughput_responses_per_s"],
            "heldout_pairs": result["pairs"],
            "train_pairs": train_info.get("pairs"),
            "train_seconds": train_info.get("train_seconds"),
            "steps": train_info.get("steps"),
            "normalisation": train_info.get("normalisation"),
        }
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
    wait_for_everyone()  # the others leave only once the folder is in place
    manifest.path = final / "manifest.json"
    print("\nreward model vs rule-only and hybrid scores, held-out pairwise accuracy (chosen scored above rejected):")
    print(table)
    verdict = "meets" if manifest.metrics["rm_meets_targets"] else "does NOT meet"
    print(f"the reward model {verdict} the targets (>= 0.90 on OOK refusal vs fabrication, >= 0.80 on every other kind)")
    print(f"OOK fabrications above the median OOK refusal: {result['ook_fabrication_above_median_refusal']}; "
          f"scoring {result['throughput_responses_per_s']} responses/s")
    print(f"summary: {final / 'summary.md'}")
    return manifest


def _summary(cfg, result: dict, train: dict, table: str) -> str:
    counts = train.get("pairs") or {}
    lines = [
        f"# Reward model - experiment `{cfg.exp}`", "",
        f"Backbone: `{train.get('backbone', cfg.model.name_or_path)}` (init `{cfg.reward.train.init}`, "
        f"{cfg.reward.train.finetune}); "
        + (f"reused from `{train['reused']}`." if train.get("reused") else
           f"{train.get('steps')} steps in {train.get('train_seconds')} s "
           f"({train.get('seconds_per_step')} s/step), final loss {train.get('final_loss')}."), "",
        "## Held-out pairwise accuracy", "", table, "",
        "Ties count as failures. The rule-only column is the same pairs scored by the rule terms alone "
        "(refusal detector + evidence support); hybrid is "
        f"{result.get('hybrid_rm_weight')} x reward model + rule terms (`reward.scorer=hybrid`).", "",
        f"- OOK fabrications scoring above the median OOK refusal: {result.get('ook_fabrication_above_median_refusal')}"
        " (high values predict reward hacking)",
        f"- scoring throughput: {result.get('throughput_responses_per_s')} responses/s (reward model), "
        f"{result.get('rules_throughput_responses_per_s')} responses/s (rules)",
        f"- held-out responses truncated at scoring: {result.get('rm_truncated_responses', 0)}", "",
        "## Training pairs", "",
        f"- seen {counts.get('seen', '-')}, kept {counts.get('kept', '-')}",
        f"- skipped, an empty side: {counts.get('skipped_empty_side', 0)}",
        f"- skipped, chosen identical to rejected: {counts.get('skipped_identical', 0)}",
        f"- longer than reward.train.max_length={cfg.reward.train.max_length}: policy `{cfg.reward.train.overlong}`; "
        f"prompt middle truncated in {counts.get('truncated_prompt', 0)} pairs, dropped {counts.get('dropped_too_long', 0)}",
        "", f"Normalisation (train chosen + rejected raw scores): {train.get('normalisation')}", "",
        "## Score distributions per response class", "", "![scores](scores.png)", "",
        "| class | n | mean | median | p10 | p90 |", "|---|---:|---:|---:|---:|---:|",
    ]
    for k, d in (result.get("score_by_class") or {}).items():
        lines.append(f"| {k} | {d['n']} | {d['mean']} | {d['median']} | {d['p10']} | {d['p90']} |")
    return "\n".join(lines) + "\n"
