"""``halluguard ppo``: PPO from the SFT reference with a KL penalty to it, or a DPO / GRPO baseline.

``ppo.algo=ppo`` runs halluguard's own PPO (:mod:`halluguard.ppo`); ``dpo`` and ``grpo`` run the TRL
baselines (:mod:`halluguard.baselines`) from the same start model on the same build, so the evaluation
can put them side by side.

Inputs: the ``build`` manifest (``ppo_prompts``, ``index``; ``pairs`` for DPO), the ``sft`` manifest
(``ppo.start=sft``), the ``reward`` manifest (``reward.scorer=rm|hybrid``). Every cheap check (prompt
lengths against ``ppo.max_prompt_length`` and the context window, the reward model's tokenizer against
the policy's, the ``report_to`` packages) runs before the policy is loaded.

Outputs in ``<paths.runs>/<exp>/<ppo.algo>/``, written atomically:

* ``adapter/`` - the result: PPO's LoRA adapter at the chosen step, PEFT format, with the tokenizer
  (``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(start), "adapter")``)
* ``value_head.pt`` - the value head of the chosen step (PPO only)
* ``metrics.jsonl`` - one row per step (see :mod:`halluguard.ppo.tracking` for every key)
* ``curves.png`` - reward and KL per step on one figure, the budget and the chosen step marked
* ``probes.jsonl`` - greedy completions of fixed probe prompts every ``ppo.probe_every`` steps (step 0:
  the reference's own answers)
* ``checkpoints/step-N/`` - every checkpoint of the run (adapter, value head, optimiser, beta)
* ``summary.md`` - what a person reads; ``manifest.json`` - with ``stopped_early``, ``stop_reason``,
  ``chosen_step`` and ``selection`` among its metrics
* ``validation.png``, ``validation.jsonl`` - with ``ppo.select.by=validation`` only: each checkpoint's score
  on the validation questions the result was chosen on, and each question's refusal rate and answers at
  every checkpoint (:mod:`halluguard.ppo.checkpoint_selection`)

While PPO trains, its checkpoints and logs live in ``<paths.runs>/<exp>/<ppo.algo>.work/``: outside the
atomically written folder (whose temporary copy is thrown away on failure), so an interrupted run keeps
them and ``ppo.resume=true`` continues it. When training ends they are linked into the output folder (with
``run.json``, the settings a resume must match) and the work folder is removed. A finished run is continued
when ``ppo.steps`` is raised (``ppo.resume=true``, one process): the same result as the longer run from the
start, for the cost of the new steps.

Several processes (``accelerate launch ... -m halluguard.cli ppo``, ``ppo.algo=ppo``): each samples its
slice of every step's prompts, statistics and gradients are all-reduced (:mod:`halluguard.ppo.trainer`),
and process 0 writes the folder while the others wait at a barrier. ``ppo.batch_size`` is per process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_text, write_jsonl
from halluguard.config import stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.ppo")


def output_dir(cfg: DictConfig) -> Path:
    """``<paths.runs>/<exp>/<ppo.algo>``: PPO and its baselines sit side by side."""
    return stage_dir(cfg, str(cfg.ppo.algo))


def work_dir(cfg: DictConfig) -> Path:
    out = output_dir(cfg)
    return out.parent / f"{out.name}.work"


def run(cfg: DictConfig) -> Manifest:
    from halluguard.ppo.distributed import PPO_ZERO3, check_launch, deepspeed_zero_stage, quiet_unless_main, world_size

    check_launch("ppo")
    quiet_unless_main()
    if cfg.ppo.algo == "ppo":
        if deepspeed_zero_stage() == 3:  # before anything loads (the trainer checks again)
            raise HalluguardError(PPO_ZERO3)
        return _run_ppo(cfg)
    if world_size() > 1:  # every process would write the same folder
        raise HalluguardError(f"ppo.algo={cfg.ppo.algo} runs in one process only (its outputs are not written by "
                              f"process 0 alone yet): run `halluguard ppo ppo.algo={cfg.ppo.algo} ...` without "
                              "`accelerate launch`; ppo.algo=ppo, sft and reward run under it")
    return _run_baseline(cfg)


# ---------------------------------------------------------------- inputs shared by PPO and GRPO

def _prompt_rows(cfg: DictConfig, manifest: Manifest):
    """The build's PPO prompts, their scoring meta, and the build manifest."""
    from datasets import load_from_disk

    from halluguard.reward.evaluate import load_build_context, pair_meta

    build_dir = stage_dir(cfg, "build")
    build = Manifest.load(build_dir)
    path = build.output_path("ppo_prompts")
    dataset = load_from_disk(str(path))
    rows = list(dataset)
    passages, answers = load_build_context(build_dir, build)
    manifest.add_input("ppo_prompts", path)
    manifest.add_input("build_manifest", build.path)
    return dataset, rows, pair_meta(rows, passages, answers), build


def _select_prompts(cfg: DictConfig, rows: list[dict], meta: list[dict], manifest: Manifest):
    """The prompts ``ppo.prompts`` keeps; ``unseen_by_sft`` reads which ones SFT trained on from its examples."""
    from halluguard.ppo.prompt_selection import select_configured

    kept_rows, kept_meta, selection, examples = select_configured(cfg, rows, meta)
    if examples is not None:
        manifest.add_input("sft_examples", examples)
    return kept_rows, kept_meta, selection


def _scorer(cfg: DictConfig, policy_tokenizer, detector, manifest: Manifest):
    """The ``reward.scorer`` the config names; a reward model must read the policy's tokens."""
    from halluguard.reward.scoring import make_scorer

    reward_dir = None
    if cfg.reward.scorer != "rules":
        reward = Manifest.load(stage_dir(cfg, "reward"))
        reward.output_path("reward_model")  # present and unchanged since the reward stage wrote it
        reward_dir = reward.path.parent
        manifest.add_input("reward_manifest", reward.path)
    return make_scorer(cfg.reward, reward_dir, policy_tokenizer=policy_tokenizer, detector=detector)


def _start_input(cfg: DictConfig, manifest: Manifest) -> None:
    if cfg.ppo.start == "sft":
        manifest.add_input("sft_manifest", stage_dir(cfg, "sft") / "manifest.json")


# ---------------------------------------------------------------- PPO

def _run_ppo(cfg: DictConfig) -> Manifest:
    from transformers import AutoConfig

    from halluguard.models import load_tokenizer
    from halluguard.ppo.policy import load_start_policy, start_source
    from halluguard.ppo.prompts import build_prompt_set
    from halluguard.ppo.tracking import check_report_to
    from halluguard.ppo.trainer import RUN_INFO, PpoTrainer
    from halluguard.refusal import RefusalDetector
    from halluguard.retrieval import Encoder

    started = time.perf_counter()
    p = cfg.ppo
    manifest = Manifest(stage="ppo", exp=cfg.exp, config=to_plain(cfg))
    _, rows, meta, build = _prompt_rows(cfg, manifest)
    rows, meta, selection = _select_prompts(cfg, rows, meta, manifest)
    validation = None
    if p.select.by == "validation":  # the split must exist before hours of training depend on it
        from halluguard.ppo.checkpoint_selection import validation_questions

        validation = validation_questions(cfg, build)
    print(selection.describe())
    source = start_source(cfg)
    _start_input(cfg, manifest)
    check_report_to(list(p.report_to))
    tokenizer = load_tokenizer(source, cfg.model)
    detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
    scorer = _scorer(cfg, tokenizer, detector, manifest)
    window = getattr(AutoConfig.from_pretrained(source, trust_remote_code=bool(cfg.model.trust_remote_code)),
                     "max_position_embeddings", None)
    prompts = build_prompt_set([r["prompt"] for r in rows], meta, tokenizer, int(p.max_prompt_length),
                               int(p.max_new_tokens), window, [r.get("case_id") for r in rows],
                               [r.get("question") for r in rows])
    if p.balance_labels:
        prompts.label_pools()  # both kinds present, or a clear error before the policy loads
    log.info("PPO on %d prompts from %s (start=%s, scorer=%s)", len(prompts), source, p.start, cfg.reward.scorer)

    policy, tokenizer = load_start_policy(source, cfg.model, p.lora, seed=int(cfg.seed),
                                          revision=cfg.model.revision if p.start == "base" else None)
    fingerprint = {"start": source, "model": cfg.model.name_or_path, "prompts": manifest.inputs["ppo_prompts"].sha256,
                   "reward": {"scorer": cfg.reward.scorer, "rules": to_plain(cfg)["reward"]["rules"],
                              "rm_weight": cfg.reward.rm_weight, "refusal_threshold": cfg.reward.refusal_threshold}}
    if selection.mode != "all":  # a resumed run must train on the same prompts (absent for `all`: older runs resume)
        fingerprint["prompt_selection"] = {**selection.to_dict(), "sft_examples": manifest.inputs["sft_examples"].sha256}
    work = work_dir(cfg)
    continued = _continue_finished(cfg, output_dir(cfg), work)
    trainer = PpoTrainer(policy, tokenizer, scorer, prompts, p, work, seed=int(cfg.seed), detector=detector,
                         fingerprint=fingerprint, run_name=f"{cfg.exp}/{p.algo}")
    balance = None
    if p.balance_reward:  # before the first update: PPO's adapter is still the identity, these are the reference's answers
        from halluguard.ppo.balance import balance_reward

        balance = balance_reward(trainer.unwrapped, tokenizer, scorer, prompts, p, detector, int(cfg.seed))
        print(f"reward balanced on {balance.prompts} samples of the start policy: reward.rules.answer_ook "
              f"{balance.answer_ook_before:g} -> {balance.answer_ook:g} (drift {balance.drift_before:+.3f} -> "
              f"{balance.drift_after:+.3f} per question)")
    result = trainer.train()
    final = output_dir(cfg)
    if not trainer.accelerator.is_main_process:  # one process writes; the others wait for it
        trainer.accelerator.wait_for_everyone()
        manifest.path = final / "manifest.json"
        return manifest

    chosen_by, validation_rows = None, []
    if p.select.by == "validation":
        chosen_by, validation_rows = _choose_on_validation(cfg, validation, result, source, detector,
                                                           str(trainer.accelerator.device))
        result = dataclasses.replace(result, chosen_step=chosen_by.chosen_step,
                                     chosen_checkpoint=result.chosen_checkpoint.parent / f"step-{chosen_by.chosen_step}")

    with atomic_dir(final) as out:
        shutil.copytree(result.chosen_checkpoint / "adapter", out / "adapter")
        tokenizer.save_pretrained(str(out / "adapter"))
        shutil.copy2(result.chosen_checkpoint / "value_head.pt", out / "value_head.pt")
        write_jsonl(out / "metrics.jsonl", result.rows)
        write_jsonl(out / "probes.jsonl", result.probes)
        from halluguard.ppo.plots import plot_curves

        plot_curves(result.rows, out / "curves.png", float(p.kl.budget), result.chosen_step,
                    title=f"PPO - experiment {cfg.exp}")
        metrics = _ppo_metrics(result, p)
        metrics["reward_balance"] = balance.to_dict() if balance else None
        metrics["prompts"] = selection.to_dict()
        metrics["continued_from_step"] = continued
        if chosen_by:
            from halluguard.ppo.checkpoint_selection import noise_verdict

            metrics["selection"] = {**chosen_by.to_dict(), "verdict": noise_verdict(chosen_by)}
        else:
            metrics["selection"] = {"by": "kl_budget"}
        atomic_write_text(out / "summary.md", _ppo_summary(cfg, result, metrics))
        outputs = [("adapter", "adapter"), ("value_head", "value_head.pt"), ("metrics", "metrics.jsonl"),
                   ("curves", "curves.png"), ("probes", "probes.jsonl"), ("summary", "summary.md")]
        if chosen_by:
            from halluguard.ppo.plots import plot_selection

            plot_selection(chosen_by, out / "validation.png", title=f"PPO checkpoints on validation - experiment {cfg.exp}")
            write_jsonl(out / "validation.jsonl", validation_rows)
            outputs += [("validation_plot", "validation.png"), ("validation_answers", "validation.jsonl")]
        for name, rel in outputs:
            manifest.add_output(name, out / rel, out)
        _link_tree(work / "checkpoints", out / "checkpoints")
        shutil.copy2(work / RUN_INFO, out / RUN_INFO)  # what `ppo.resume` checks when the run is continued later
        if (work / "tensorboard").is_dir():
            _link_tree(work / "tensorboard", out / "tensorboard")
        manifest.metrics = metrics
        manifest.duration_s = round(time.perf_counter() - started, 3)
        manifest.write(out)
    shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()  # the others leave only once the folder is in place
    manifest.path = final / "manifest.json"
    _print_result(result, metrics, final)
    return manifest


def _choose_on_validation(cfg: DictConfig, validation: tuple[list, dict], result, start: str, detector, device: str):
    """``ppo.select.by=validation``: the best saved checkpoint within the budget on the validation split."""
    from halluguard.ppo.checkpoint import list_checkpoints
    from halluguard.ppo.checkpoint_selection import run_selection

    checkpoints = result.chosen_checkpoint.parent
    saved = [n for n, _ in list_checkpoints(checkpoints)]
    return run_selection(cfg, validation, checkpoints, saved, result.chosen_step, start, detector, device, result.rows)


def _continue_finished(cfg: DictConfig, final: Path, work: Path) -> int | None:
    """``ppo.resume=true`` on a finished run with a larger ``ppo.steps``: its checkpoints, logs and settings go
    back into the work folder and the trainer resumes from its last checkpoint as from an interrupted run, so
    the result is the run with the larger ``ppo.steps`` from the start (a resume is exact), for the cost of the
    new steps only. Returns the step it continues from, or None (nothing to continue: the trainer starts over).

    A run the KL budget stopped is not continued (a fresh run stops at the same step). A run finished before
    its folder kept ``run.json`` cannot be checked against the settings, so it is an error to continue it."""
    from halluguard.ppo.distributed import world_size
    from halluguard.ppo.trainer import RUN_INFO

    if not cfg.ppo.resume or work.exists() or not (final / "manifest.json").is_file():
        return None
    if world_size() > 1:  # the other processes would look for checkpoints while process 0 restores them
        log.info("several processes: the finished run in %s is not continued; PPO starts over", final)
        return None
    finished = Manifest.load(final)
    last = finished.metrics.get("last_step")
    if finished.metrics.get("stopped_early") or last is None or int(cfg.ppo.steps) <= int(last):
        return None
    if not (final / RUN_INFO).is_file() or not (final / "checkpoints").is_dir():
        raise HalluguardError(f"ppo.resume=true would continue the finished run in {final} from step {last} to "
                              f"{cfg.ppo.steps}, but it has no {RUN_INFO} or checkpoints/ (written by halluguard since "
                              "continuing was added) to check its settings against; set ppo.resume=false to start over")
    work.mkdir(parents=True)
    try:
        _link_tree(final / "checkpoints", work / "checkpoints")
        for name in (RUN_INFO, "metrics.jsonl", "probes.jsonl"):
            shutil.copy2(final / name, work / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # no half-restored work folder for the next call to trust
        raise
    print(f"continuing the finished PPO run of {final} from step {last} to step {cfg.ppo.steps} (ppo.resume=true; "
          "ppo.resume=false starts over)")
    return int(last)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a folder's files into ``dst`` (copying where links are impossible): instant, and the
    work folder keeps its own names until the output folder is safely in place."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link)


def _validated(m: dict) -> bool:
    return (m.get("selection") or {}).get("by") == "validation"


def _row(rows: list[dict], step: int) -> dict:
    return next((r for r in rows if r["step"] == step), {})


def _ppo_metrics(result, p) -> dict:
    rows = result.rows
    first, chosen, last = rows[0] if rows else {}, _row(rows, result.chosen_step), rows[-1] if rows else {}
    updates = [r for r in rows if "policy_loss" in r]

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "steps": int(p.steps), "updates_done": len(updates), "chosen_step": result.chosen_step,
        "stopped_early": result.stopped_early, "stop_reason": result.stop_reason, "last_step": result.last_step,
        "resumed_from": result.resumed_from, "kl_budget": float(p.kl.budget), "kl_penalty": str(p.kl.penalty),
        "reward_first": first.get("reward"), "reward_chosen": chosen.get("reward"),
        "score_first": first.get("score"), "score_chosen": chosen.get("score"),
        "kl_chosen": chosen.get("kl"), "kl_k1_chosen": chosen.get("kl_k1"), "kl_k3_chosen": chosen.get("kl_k3"),
        "kl_last": last.get("kl"), "beta_last": last.get("beta"),
        "refusal_rate_ook_first": first.get("refusal_rate_ook"), "refusal_rate_ook_chosen": chosen.get("refusal_rate_ook"),
        "refusal_rate_ik_first": first.get("refusal_rate_ik"), "refusal_rate_ik_chosen": chosen.get("refusal_rate_ik"),
        "batch_means": batch_means(rows, result.chosen_step),
        "probe_refusal": probe_refusal_change(result.probes, result.chosen_step),
        "train_seconds": result.train_seconds,
        "seconds_per_step": mean("time_step"),
        "seconds_by_phase": {k: mean(f"time_{k}") for k in ("generate", "score", "policy_forward", "ref_forward",
                                                            "update", "probe")},
    }


MEANS_WINDOW = 5
MEANS_KEYS = ("reward", "kl", "refusal_rate_ook", "refusal_rate_ik")


def batch_means(rows: list[dict], chosen_step: int, window: int = MEANS_WINDOW) -> dict:
    """Means of the first and of the last ``window`` batches up to the chosen step, per key. One batch of a few
    prompts per label swings by tens of points (the demo's IK refusal went 0.75 -> 0.25 between steps 0 and 1
    with KL 0.03): first-vs-chosen single rows read as progress when they are noise."""
    upto = [r for r in rows if r["step"] <= chosen_step]
    out: dict = {"window": min(window, len(upto))}
    for key in MEANS_KEYS:
        values = [r.get(key) for r in upto]
        first = [v for v in values[:window] if v is not None]
        last = [v for v in values[-window:] if v is not None]
        out[key] = [round(sum(first) / len(first), 4) if first else None,
                    round(sum(last) / len(last), 4) if last else None]
    return out


def probe_refusal_change(probes: list[dict], chosen_step: int) -> dict | None:
    """Greedy refusals on the fixed probe prompts at step 0 and at the result, ``{label: [[refused, n], [refused,
    n]]}``: the same prompts before and after, decoded as the evaluation decodes (the batch rates are sampled
    at the rollout temperature, and on the GPU run they rose where the greedy held-out answers fell)."""
    from halluguard.ppo.trainer import probe_refusals

    first = probe_refusals([r for r in probes if r["step"] == 0])
    last = probe_refusals([r for r in probes if r["step"] == chosen_step])
    if not any(n for _, n in first.values()) or not any(n for _, n in last.values()):
        return None
    return {label: [list(first[label]), list(last[label])] for label in ("ook", "ik")}


def _probe_change_text(change: dict | None) -> str | None:
    """``OOK 3/6 -> 4/6, IK 1/6 -> 1/6`` from :func:`probe_refusal_change` (None when there are no probes)."""
    if not change:
        return None
    return ", ".join(f"{label.upper()} {before[0]}/{before[1]} -> {after[0]}/{after[1]}"
                     for label, (before, after) in change.items())


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ppo_summary(cfg: DictConfig, result, m: dict) -> str:
    p = cfg.ppo
    if result.stopped_early:
        stop = (f"**Stopped early at step {result.last_step}**: its KL to the reference ({_fmt(_row(result.rows, result.last_step).get('kl'))} "
                f"nats per response, {p.kl.penalty}) passed the budget `ppo.kl.budget={p.kl.budget}`. The result is "
                f"checkpoint step {result.chosen_step}" + (", chosen on validation questions (below)."
                                                           if _validated(m) else ", the last one within budget."))
    else:
        stop = (f"Ran all {p.steps} steps; the final policy (step {result.last_step}) stayed within the KL budget "
                f"`ppo.kl.budget={p.kl.budget}`. The result is checkpoint step {result.chosen_step}"
                + (", chosen on validation questions (below)." if _validated(m) else "."))
    lines = [
        f"# PPO - experiment `{cfg.exp}`", "",
        (f"Start: `{p.start}` (`{cfg.model.name_or_path}`), reward: `{cfg.reward.scorer}`, "
         f"{p.batch_size} prompts x {p.ppo_epochs} epochs of {p.batch_size // p.mini_batch_size} minibatches per step, "
         f"beta {'adaptive toward ' + str(p.kl.target) if p.kl.adaptive else 'fixed'} (start {p.kl.beta})."), "",
        stop, "" if result.resumed_from is None else f"\nResumed from checkpoint step {result.resumed_from}.\n", "",
        *_choice_lines(m.get("selection")),
        *_balance_lines(m.get("reward_balance")),
        *_selection_lines(m.get("prompts")),
        f"| | step 0 (reference) | result (step {result.chosen_step}) | last measured (step {result.last_step}) |",
        "|---|---:|---:|---:|",
    ]
    first, chosen, last = result.rows[0], _row(result.rows, result.chosen_step), result.rows[-1]
    in_reward = {p.kl.penalty: " (in the reward, held to the budget)"}
    for key, label in (("reward", "reward (score - beta KL)"), ("score", "score"),
                       ("kl_k1", "KL k1" + in_reward.get("k1", "")), ("kl_k3", "KL k3" + in_reward.get("k3", "")),
                       ("beta", "beta"), ("entropy", "entropy"),
                       ("response_length", "response tokens"), ("refusal_rate_ook", "refusal rate, OOK prompts"),
                       ("refusal_rate_ik", "refusal rate, IK prompts (over-refusal)")):
        lines.append(f"| {label} | {_fmt(first.get(key))} | {_fmt(chosen.get(key))} | {_fmt(last.get(key))} |")
    means = m.get("batch_means") or {}
    lines += ["", ("Each row is one rollout batch of the policy after that many updates; with a few prompts per "
                   "step these rates are noisy. Judge the result on held-out questions (`halluguard eval`)."), ""]
    if means.get("window"):
        lines += [f"Means of the first and the last {means['window']} batches up to the result: "
                  + ", ".join(f"{k} {_fmt(means[k][0])} -> {_fmt(means[k][1])}" for k in MEANS_KEYS) + ".", ""]
    probe_text = _probe_change_text(m.get("probe_refusal"))
    if probe_text:
        lines += [f"Greedy refusals on the fixed probe prompts, step 0 -> step {result.chosen_step}: {probe_text} "
                  "(`ppo.probe_prompts` sets how many; a handful cannot show a shift, a hundred can).", ""]
    lines += ["![reward and KL](curves.png)", "",
              f"Time: {m['train_seconds']} s in all, {_fmt(m['seconds_per_step'])} s per step; per phase (s): "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in m["seconds_by_phase"].items()), ""]
    lines += _probe_section(result.probes, result.chosen_step)
    return "\n".join(lines) + "\n"


def _selection_lines(selection: dict | None) -> list[str]:
    if not selection or selection.get("mode") == "all":
        return []
    from halluguard.ppo.prompt_selection import PromptSelection

    return [PromptSelection(**selection).describe() + ".", ""]


def _choice_lines(selection: dict | None) -> list[str]:
    """How the result was chosen, when a validation split chose it (``ppo.select.by=validation``)."""
    if not selection or selection.get("by") != "validation":
        return []
    from halluguard.ppo.checkpoint_selection import format_gain

    v = selection["validation"]
    how = f"{v['samples']} sampled answers per question" if v.get("samples") else "greedy answers"
    chosen, budget = selection["chosen_step"], selection["budget_step"]
    if selection.get("rule") == "significant":
        which = (f"step {chosen} has the highest balanced accuracy of those whose gain over step 0 has a 95% interval "
                 "above zero (`ppo.select.rule=significant`)" if chosen else
                 "none has a gain over step 0 whose 95% interval lies above zero (`ppo.select.rule=significant`), so "
                 "the result is **the reference itself**")
    else:
        which = (f"step {chosen} has the highest balanced accuracy"
                 + (": **the reference itself** - PPO did not improve the boundary on questions it never saw"
                    if chosen == 0 else ""))
    lines = [(f"**Result chosen on {v['n']} validation questions** (`ppo.select.by=validation`: "
              f"{v['fraction']:g} of the held-out set, seed {v['seed']}, {v['by_label']}; {how}). Of the checkpoints "
              f"up to step {budget} (the last within the KL budget), {which}. "
              "`halluguard eval` leaves these questions out for every model."), "",
             "| step | KL | bal. acc. | vs step 0 [95% CI] | OOK refusal | over-refusal (ctx has answer) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in selection["scores"]:
        mark = " **result**" if s["step"] == chosen else ""
        gain = format_gain(s.get("gain"), s.get("gain_ci"))
        lines.append(f"| {s['step']}{mark} | {_fmt(s.get('kl'))} | {_fmt(s['balanced_accuracy'])} | {gain} | "
                     f"{_fmt(s['ook_refusal'])} | {_fmt(s.get('over_refusal'))} |")
    verdict = selection.get("verdict")
    return [*lines, "", *([verdict[0].upper() + verdict[1:] + ".", ""] if verdict else []),
            "Each question's rate and answers at every checkpoint: `validation.jsonl`.", "",
            "![validation](validation.png)", ""]


def _balance_lines(balance: dict | None) -> list[str]:
    if not balance:
        return []
    return [(f"Reward balanced before training (`ppo.balance_reward`): on {balance['prompts']} samples of the start "
             f"policy (refused IK {balance['refused']['ik'][0]}/{balance['refused']['ik'][1]}, OOK "
             f"{balance['refused']['ook'][0]}/{balance['refused']['ook'][1]}) the reward's drift towards answering was "
             f"{balance['drift_before']:+.3f} per question; `reward.rules.answer_ook` {balance['answer_ook_before']:g} "
             f"-> {balance['answer_ook']:g} makes it {balance['drift_after']:+.3f}."), ""]


def _probe_section(probes: list[dict], chosen: int) -> list[str]:
    start = {r["case_id"]: r for r in probes if r["step"] == 0}
    end = {r["case_id"]: r for r in probes if r["step"] == chosen}
    if not start:
        return []
    lines = [f"## Probe prompts: the reference (step 0) and the result (step {chosen})", ""]
    if not end:
        lines += [f"Step {chosen} falls between the probe steps (every `ppo.probe_every`); its completions are not "
                  "logged.", ""]
    for case_id, a in start.items():
        b = end.get(case_id, {})
        lines += [f"**[{(a.get('label') or '?').upper()}] {a.get('question') or case_id}** (case `{case_id}`)", "",
                  f"- step 0: {_quote(a.get('completion'))}{_refusal_tag(a)}",
                  f"- step {chosen}: {_quote(b.get('completion'))}{_refusal_tag(b)}", ""]
    return lines


def _quote(text: str | None) -> str:
    return "(none)" if text is None else ("`" + " ".join(str(text).split()).replace("`", "'") + "`" if text else "(empty)")


def _refusal_tag(row: dict) -> str:
    return " (refusal)" if row.get("refusal") else ""


def _print_result(result, m: dict, final: Path) -> None:
    print(f"\nPPO: {m['updates_done']} updates, {'stopped early: ' + result.stop_reason if result.stopped_early else 'completed'}; "
          f"result = step {result.chosen_step}")
    print(f"   reward {_fmt(m['reward_first'])} -> {_fmt(m['reward_chosen'])}, score {_fmt(m['score_first'])} -> "
          f"{_fmt(m['score_chosen'])}, KL {_fmt(m['kl_chosen'])} (budget {m['kl_budget']})")
    print(f"   refusal rate OOK {_fmt(m['refusal_rate_ook_first'])} -> {_fmt(m['refusal_rate_ook_chosen'])}, "
          f"IK {_fmt(m['refusal_rate_ik_first'])} -> {_fmt(m['refusal_rate_ik_chosen'])} (single batches: noisy)")
    means = m.get("batch_means") or {}
    if means.get("window", 0) > 1:
        print(f"   mean of {means['window']} batches, first -> last: reward {_fmt(means['reward'][0])} -> "
              f"{_fmt(means['reward'][1])}, refusal rate OOK {_fmt(means['refusal_rate_ook'][0])} -> "
              f"{_fmt(means['refusal_rate_ook'][1])}, IK {_fmt(means['refusal_rate_ik'][0])} -> "
              f"{_fmt(means['refusal_rate_ik'][1])}")
    probe_text = _probe_change_text(m.get("probe_refusal"))
    if probe_text:
        print(f"   greedy refusals on the fixed probe prompts, step 0 -> step {result.chosen_step}: {probe_text}")
    if _validated(m):
        sel = m["selection"]
        print(f"   chosen on {sel['validation']['n']} validation questions: step {sel['chosen_step']} "
              f"(the last within the KL budget: step {sel['budget_step']}); eval leaves them out; {sel['verdict']}")
    print(f"summary: {final / 'summary.md'}")


# ---------------------------------------------------------------- DPO / GRPO baselines

def _run_baseline(cfg: DictConfig) -> Manifest:
    from halluguard.ppo.policy import start_source

    started = time.perf_counter()
    algo = str(cfg.ppo.algo)
    manifest = Manifest(stage="ppo", exp=cfg.exp, config=to_plain(cfg))
    source = start_source(cfg)
    _start_input(cfg, manifest)
    train = _baseline_trainer(algo)
    final = output_dir(cfg)
    if algo == "dpo":
        from datasets import load_from_disk

        build = Manifest.load(stage_dir(cfg, "build"))
        pairs_path = build.output_path("pairs")
        manifest.add_input("pairs", pairs_path)
        manifest.add_input("build_manifest", build.path)
        pairs = load_from_disk(str(pairs_path))
        if "train" not in pairs:
            raise HalluguardError(f"the build's pairs at {pairs_path} have no 'train' split; re-run `halluguard build`")
        args = (source, cfg.model, cfg.ppo, pairs["train"])
    else:
        from halluguard.models import load_tokenizer
        from halluguard.refusal import RefusalDetector
        from halluguard.retrieval import Encoder

        if cfg.ppo.balance_reward:
            log.warning("ppo.balance_reward applies to ppo.algo=ppo only; the GRPO baseline uses "
                        "reward.rules.answer_ook=%s as configured", cfg.reward.rules.answer_ook)
        _, rows, meta, _ = _prompt_rows(cfg, manifest)
        tokenizer = load_tokenizer(source, cfg.model)
        detector = RefusalDetector(encoder=Encoder.from_config(cfg.retriever), threshold=cfg.reward.refusal_threshold)
        scorer = _scorer(cfg, tokenizer, detector, manifest)
        args = (source, cfg.model, cfg.ppo, [r["prompt"] for r in rows], scorer, meta)
    with atomic_dir(final) as out:
        info = train(*args, out, int(cfg.seed))
        if not (out / "adapter").is_dir():
            raise HalluguardError(f"the {algo} baseline saved no adapter in {out / 'adapter'}")
        history = list(info.get("log_history") or [])
        write_jsonl(out / "metrics.jsonl", history)
        summary = {k: v for k, v in info.items() if k != "log_history"}
        atomic_write_text(out / "summary.md", _baseline_summary(cfg, algo, summary))
        for name, rel in (("adapter", "adapter"), ("metrics", "metrics.jsonl"), ("summary", "summary.md")):
            manifest.add_output(name, out / rel, out)
        manifest.metrics = json.loads(json.dumps(summary, default=str))
        manifest.duration_s = round(time.perf_counter() - started, 3)
        manifest.write(out)
    manifest.path = final / "manifest.json"
    print(f"\n{algo.upper()} baseline: {summary.get('steps')} steps in {summary.get('train_seconds')} s; "
          f"adapter in {final / 'adapter'}")
    return manifest


def _baseline_trainer(algo: str):
    import importlib

    name = {"dpo": "train_dpo", "grpo": "train_grpo"}[algo]
    try:
        module = importlib.import_module(f"halluguard.baselines.{algo}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("halluguard"):
            raise HalluguardError(f"ppo.algo={algo} needs halluguard/baselines/{algo}.py, which this installation "
                                  "does not have yet; use ppo.algo=ppo") from None
        raise
    return getattr(module, name)


def _baseline_summary(cfg: DictConfig, algo: str, summary: dict) -> str:
    lines = [f"# {algo.upper()} baseline - experiment `{cfg.exp}`", "",
             (f"Start: `{cfg.ppo.start}` (`{cfg.model.name_or_path}`); adapter in `adapter/`, TRL's log in "
              "`metrics.jsonl`. The evaluation compares it with PPO on the same held-out questions."), "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v, default=str)} |"
              for k, v in summary.items()]
    return "\n".join(lines) + "\n"
