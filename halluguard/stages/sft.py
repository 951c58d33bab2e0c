"""``halluguard sft``: the SFT reference, the start model tuned on the build's chosen responses.

Input: the ``build`` manifest of the same experiment (``pairs``; the ``train`` split is trained on,
a few ``heldout`` prompts are answered afterwards for a person to read). Outputs
(``runs/<exp>/sft/``, written atomically):

* ``model/`` - the reference: the LoRA adapter merged into the base (or the fully tuned model), with
  its tokenizer; ``AutoModelForCausalLM.from_pretrained`` loads it, and PPO holds its KL to it
* ``adapter/`` - the PEFT adapter alone (``PeftModel.from_pretrained``; absent for ``sft.finetune=full``)
* ``examples.jsonl`` - which training prompts were used (ids, label, token counts)
* ``metrics.jsonl`` - TRL's log every ``sft.logging_steps``; ``loss.png`` - the loss curve
* ``samples.jsonl`` - greedy answers of the trained model to held-out prompts beside the chosen response
* ``summary.md`` - all of it for a person

Several processes (``accelerate launch ... -m halluguard.cli sft``): every process trains its shard of the
examples (TRL's trainer, gradients all-reduced); process 0 then saves, answers the held-out samples and
writes the folder while the others wait at a barrier (see :mod:`halluguard.ppo.distributed`).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_text, write_jsonl
from halluguard.config import resolve_cache_dir, stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.sft")


def run(cfg: DictConfig) -> Manifest:
    from datasets import load_from_disk

    from halluguard.models import load_tokenizer, resolve_policy_source
    from halluguard.ppo.distributed import check_launch, is_main, quiet_unless_main, wait_for_everyone
    from halluguard.sft import prepare_examples, train_sft

    check_launch("sft")
    quiet_unless_main()
    start = time.perf_counter()
    build = Manifest.load(stage_dir(cfg, "build"))
    pairs_path = build.output_path("pairs")
    pairs = load_from_disk(str(pairs_path))
    for split in ("train", "heldout"):
        if split not in pairs:
            raise HalluguardError(f"the build's pairs at {pairs_path} have no '{split}' split; "
                                  "re-run `halluguard build`")
    source = resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    s = cfg.sft
    examples = prepare_examples(list(pairs["train"]), load_tokenizer(source, cfg.model), s.max_length,
                                s.max_examples, seed=cfg.seed, balance_labels=s.balance_labels,
                                reserve_ik_questions=s.reserve_ik_questions)
    manifest = Manifest(stage="sft", exp=cfg.exp, config=to_plain(cfg))
    final = stage_dir(cfg, "sft")
    if not is_main():  # train this process's shard; process 0 writes everything
        train_sft(examples, source, cfg.model, s, None, seed=cfg.seed)
        wait_for_everyone()
        manifest.path = final / "manifest.json"
        return manifest
    _print_examples(examples, s.max_length)
    manifest.add_input("pairs", pairs_path)
    manifest.add_input("build_manifest", build.path)
    with atomic_dir(final) as out:
        info = train_sft(examples, source, cfg.model, s, out, seed=cfg.seed)
        write_jsonl(out / "examples.jsonl", ({k: v for k, v in r.items() if k not in ("input_ids", "labels")}
                                             for r in examples.rows))
        write_jsonl(out / "metrics.jsonl", info["log_history"])
        plot_loss(info["log_history"], out / "loss.png")
        samples = answer_heldout(cfg, out / "model", list(pairs["heldout"]))
        write_jsonl(out / "samples.jsonl", samples)
        metrics = {
            "examples_by_label": examples.by_label(),
            "examples": dict(examples.counts),
            "finetune": info["finetune"],
            "trainable_parameters": info["trainable_parameters"],
            "steps": info["steps"],
            "train_seconds": info["train_seconds"],
            "seconds_per_step": info["seconds_per_step"],
            "final_loss": info["final_loss"],
            "train_loss": info["train_loss"],
            "samples_refused_by_label": _refusals_by_label(samples),
        }
        atomic_write_text(out / "summary.md", _summary(cfg, metrics, examples, samples))
        names = ["model", "adapter", "examples.jsonl", "metrics.jsonl", "loss.png", "samples.jsonl", "summary.md"]
        for name in names:
            if (out / name).exists():
                manifest.add_output(name.split(".")[0], out / name, out)
        manifest.metrics = metrics
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
    wait_for_everyone()  # the others leave only once the folder is in place
    manifest.path = final / "manifest.json"
    print(f"\nsft: {info['steps']} steps in {info['train_seconds']} s ({info['seconds_per_step']} s/step), "
          f"final loss {info['final_loss']:.4f}")
    if samples:
        print(f"held-out samples refused (pattern detector), by label: {metrics['samples_refused_by_label']}")
    print(f"reference model: {final / 'model'}\nsummary: {final / 'summary.md'}")
    return manifest


def _print_examples(examples, max_length: int) -> None:
    c = examples.counts
    print(f"\nsft: {c['rows_seen']} training pairs -> {c['used']} examples {examples.by_label()} "
          f"(one per prompt: {c['duplicate_prompt']} duplicates removed; left for PPO (sft.reserve_ik_questions) "
          f"{c['reserved_for_ppo']}; empty chosen {c['empty_chosen']}; "
          f"longer than sft.max_length={max_length} dropped {c['dropped_too_long']}; "
          f"cut to balance ik/ook {c['not_balanced']}; beyond sft.max_examples {c['not_sampled']})")


# ---------------------------------------------------------------- what a person reads

def pick_samples(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` distinct held-out prompts, half in-knowledge and half out-of-knowledge where the split allows."""
    by_label: dict[str, list[dict]] = {"ik": [], "ook": []}
    seen = set()
    for r in rows:
        key = repr(r.get("prompt"))
        if key not in seen and r.get("label") in by_label:
            seen.add(key)
            by_label[r["label"]].append(r)
    rng = random.Random(seed)
    for group in by_label.values():
        rng.shuffle(group)
    n_ook = min(len(by_label["ook"]), (n + 1) // 2)
    n_ik = min(len(by_label["ik"]), n - n_ook)
    n_ook = min(len(by_label["ook"]), n - n_ik)
    return by_label["ik"][:n_ik] + by_label["ook"][:n_ook]


def answer_heldout(cfg, model_dir: Path, heldout_rows: list[dict]) -> list[dict]:
    """Greedy answers of the saved reference to a few held-out prompts, beside their chosen responses.

    Loads the model back from ``model_dir``: this also proves the saved folder is complete.
    """
    from halluguard.generation import generate
    from halluguard.models import load_policy
    from halluguard.prompting import render_prompt
    from halluguard.refusal import RefusalDetector
    from halluguard.sft import assistant_text, resolve_use_cpu

    picked = pick_samples(heldout_rows, int(cfg.sft.samples), cfg.seed)
    if not picked:
        return []
    model_cfg = OmegaConf.merge(cfg.model, {"name_or_path": str(model_dir), "revision": None})
    device = "cpu" if resolve_use_cpu(cfg.sft.use_cpu) else "cuda"
    model, tokenizer = load_policy(model_cfg, resolve_cache_dir(cfg), device=device)
    prompts = [render_prompt(tokenizer, list(r["prompt"])) for r in picked]
    answers = generate(model, tokenizer, prompts, max_new_tokens=int(cfg.sft.sample_max_new_tokens),
                       batch_size=8, progress=True, desc="held-out samples")
    refused = RefusalDetector().is_refusal(answers)  # patterns only: a hint for the reader; eval measures properly
    out = []
    for r, answer, ref in zip(picked, answers, refused):
        question = next((m["content"] for m in reversed(list(r["prompt"])) if m.get("role") == "user"), "")
        out.append({"question_id": r.get("question_id"), "case_id": r.get("case_id"), "label": r.get("label"),
                    "case_kind": r.get("case_kind"), "question": question.rsplit("Question:", 1)[-1].strip(),
                    "chosen": assistant_text(r.get("chosen")), "answer": answer, "refused": bool(ref)})
    return out


def _refusals_by_label(samples: list[dict]) -> dict[str, str]:
    out = {}
    for label in ("ik", "ook"):
        group = [s for s in samples if s["label"] == label]
        if group:
            out[label] = f"{sum(s['refused'] for s in group)}/{len(group)}"
    return out


def plot_loss(history: list[dict], png: Path) -> None:
    """Training loss per logged step (matplotlib Agg, no pyplot state)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(png), dpi=100)


def _summary(cfg, metrics: dict, examples, samples: list[dict]) -> str:
    c, s = examples.counts, cfg.sft
    lora = (f" (r={s.lora.r}, top_layers={s.lora.top_layers or 'all'}; "
            f"{metrics['trainable_parameters']:,} trainable parameters)" if s.finetune == "lora" else "")
    lines = [
        f"# SFT reference - experiment `{cfg.exp}`", "",
        f"Start model `{cfg.model.name_or_path}`, {s.finetune}{lora}. {metrics['steps']} steps of batch "
        f"{s.batch_size} x {s.grad_accum} in {metrics['train_seconds']} s ({metrics['seconds_per_step']} s/step); "
        f"final loss {metrics['final_loss']:.4f} (mean over the run {metrics['train_loss']:.4f}). "
        "The loss is on the response tokens only.", "",
        "`model/` is the reference PPO starts from and holds its KL to"
        + (" (the adapter in `adapter/` merged into the base)." if s.finetune == "lora" else "."), "",
        "## Training examples (train split only)", "",
        f"- training pairs seen: {c['rows_seen']}",
        f"- one example per prompt: {c['duplicate_prompt']} duplicate pairs removed "
        f"({c['duplicate_prompt_other_chosen']} of them with another chosen response)",
        f"- in-knowledge questions left for PPO (sft.reserve_ik_questions={s.reserve_ik_questions}): "
        f"{c['reserved_for_ppo']}",
        f"- empty chosen response: {c['empty_chosen']}",
        f"- longer than sft.max_length={s.max_length} tokens, dropped: {c['dropped_too_long']}",
        f"- cut so ik and ook are equal (sft.balance_labels={s.balance_labels}): {c['not_balanced']}",
        f"- beyond sft.max_examples={s.max_examples}: {c['not_sampled']}",
        f"- used: {c['used']} {metrics['examples_by_label']}", "",
        "![loss](loss.png)", "",
        "## Held-out samples (greedy)", "",
    ]
    if not samples:
        lines.append("(none: sft.samples=0 or no held-out prompts)")
    for x in samples:
        said = f"- model{' (refusal)' if x['refused'] else ''}: {x['answer'] or '(empty)'}"
        lines += [f"**[{x['label']} / {x['case_kind']}] {x['question']}**", "", f"- chosen: {x['chosen']}", said, ""]
    return "\n".join(lines) + "\n"
