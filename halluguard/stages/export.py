"""``halluguard export``: the trained policy merged into one standalone Hugging Face model folder.

``export.policy``: ``auto`` (ppo when ``runs/<exp>/ppo`` finished, else sft; the choice is printed), ``sft``,
``ppo``, ``dpo`` or ``grpo``. The weights are loaded exactly as ``halluguard eval`` loads them
(:func:`halluguard.evaluation.models.load_model`: an adapter stage's LoRA merged onto the model it was trained
from, the SFT reference when ``ppo.start=sft``), then saved whole.

Output: ``<paths.runs>/<exp>/export/<policy>/`` (written atomically: a failed export leaves the previous
one in place): ``model.safetensors`` (or its shards), ``config.json``, ``generation_config.json``, the
tokenizer with its chat template, ``README.md`` (a model card: base model, the stages merged, the prompt
format it was trained on, the evaluation's key metrics of this policy when ``runs/<exp>/eval/results.json``
exists) and ``manifest.json``. The folder loads with plain ``AutoModelForCausalLM.from_pretrained(folder)``:
no peft, no halluguard, no ``trust_remote_code``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_text
from halluguard.config import stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.export")

REQUIRED_FILES = ("config.json", "generation_config.json", "tokenizer_config.json")
ALGO_NAMES = {"ppo": "PPO", "dpo": "DPO (TRL DPOTrainer baseline)", "grpo": "GRPO (TRL GRPOTrainer baseline)"}


def run(cfg: DictConfig) -> Manifest:
    from halluguard.stages.eval import key_metrics
    from halluguard.trained import eval_results, lineage, load_quietly, pick_policy, policy_source

    start = time.perf_counter()
    name, why = pick_policy(cfg, cfg.export.policy, "export.policy")
    if name is None:
        raise HalluguardError(f"nothing to export: {why}")
    print(f"export: {why}", flush=True)
    source = policy_source(cfg, name)
    info = lineage(cfg, name, source)
    print(f"export: loading {name} ({info.chain} from {info.base_model}): {source.base}"
          + (f" + adapter {source.adapter}" if source.adapter else ""), flush=True)
    model, tokenizer = load_quietly(source, cfg, "cpu")
    if not getattr(tokenizer, "chat_template", None):
        log.warning("the tokenizer of %s has no chat template: the exported model will not know the prompt format",
                    source.base)

    final = stage_dir(cfg, "export") / name
    manifest = Manifest(stage="export", exp=cfg.exp, config=to_plain(cfg))
    manifest.add_input(f"{name}_manifest", Path(info.stage_manifest))
    results, results_path, eval_created = eval_results(cfg)
    with atomic_dir(final) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        _check_folder(out)
        atomic_write_text(out / "README.md", model_card(cfg, info, tokenizer, model, results, results_path,
                                                        eval_created, final))
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            manifest.add_output(path.relative_to(out).as_posix(), path, out)
        manifest.metrics = {"policy": name, "choice": why, "lineage": info.to_dict(),
                            "parameters": sum(p.numel() for p in model.parameters()),
                            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                            "eval_metrics": key_metrics(results).get(name) if results else None}
        manifest.duration_s = round(time.perf_counter() - start, 3)
        manifest.write(out)
        _readable(out)
    manifest.path = final / "manifest.json"
    size = sum(p.stat().st_size for p in final.glob("*.safetensors")) / 2**20
    print(f"export: {name} written to {final} ({size:.1f} MiB of safetensors, {info.chain}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(final)!r})")
    return manifest


def _check_folder(out: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (out / f).is_file()]
    if not any(out.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise HalluguardError(f"the exported folder lacks {', '.join(missing)}; nothing was written")


def _readable(out: Path) -> None:
    """The atomic writers create files readable by their owner only; a model folder is meant to be shared."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


# ---------------------------------------------------------------- the model card

def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _eval_section(cfg, name: str, results: dict | None, results_path: Path, eval_created, info) -> list[str]:
    from halluguard.trained import older

    lines = ["## Evaluation", ""]
    if results is None:
        return lines + [f"Not evaluated: `{results_path}` does not exist (run `halluguard eval exp={cfg.exp}`).", ""]
    models = results.get("models") or {}
    model = models.get(name) or {}
    if model.get("status") != "ok" or not model.get("summary"):
        why = model.get("reason") or "it was not among the evaluated models"
        return lines + [f"`{results_path}` has no result for `{name}` ({why}).", ""]
    data = results.get("data") or {}
    by_label = data.get("by_label") or {}
    lines += [f"From `{results_path}` ({eval_created}): {data.get('n_questions')} held-out questions "
              f"({by_label.get('ik', 0)} in-knowledge, {by_label.get('ook', 0)} out-of-knowledge), greedy decoding, "
              "the refusal detector of `halluguard/refusal.py`. 95% bootstrap intervals where computed.", ""]
    if older(eval_created, info.stage_created):
        lines += [f"**Stale:** this evaluation ran before the `{name}` stage last wrote its output "
                  f"({info.stage_created}); re-run `halluguard eval exp={cfg.exp}` for this exact policy.", ""]
    from halluguard.evaluation.report import KEY_LABELS

    keys = list(results.get("key_metrics") or [])
    compare = [m for m in dict.fromkeys(["reference", "sft", name]) if (models.get(m) or {}).get("status") == "ok"
               and (models.get(m) or {}).get("summary")]
    lines += ["| metric | " + " | ".join(f"`{m}`" + (" (this model)" if m == name else "") for m in compare) + " |",
              "|---|" + "---|" * len(compare)]
    for key in keys:
        cells = []
        for m in compare:
            entry = models[m]["summary"]["metrics"].get(key) or {}
            cell = _fmt(entry.get("value"))
            ci = entry.get("ci")
            if m == name and ci and None not in ci:
                cell += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
            cells.append(cell)
        label = KEY_LABELS.get(key, key)
        lines.append(f"| {label} (`{key}`) | " + " | ".join(cells) + " |")
    definitions = results.get("metrics") or {}
    lines += ["", *(f"- `{k}`: {definitions[k]['definition']}" for k in keys if k in definitions and
                    definitions[k].get("definition")), ""]
    return lines


def _prompt_example(cfg, tokenizer) -> str:
    from halluguard.kb import Passage
    from halluguard.prompting import build_messages, render_prompt, wants_retrieval_score

    passage = Passage(id="p1", text="<the passage text>", title="<the passage title>")
    # With prompt.retrieval_hint the model was trained on prompts that state the retrieval match: the example
    # shows the line at the threshold; in use it carries the top similarity of the passages shown.
    score = float(cfg.prompt.hint_threshold) if wants_retrieval_score(cfg.prompt) else None
    messages = build_messages("<the question>", [passage], cfg.prompt, retrieval_score=score)
    return render_prompt(tokenizer, messages)


def model_card(cfg, info, tokenizer, model, results, results_path: Path, eval_created, final: Path) -> str:
    name = info.policy
    base = info.base_model or "unknown"
    embedded = " (halluguard's embedded copy: the GGUF in its model wheel, converted to safetensors)" \
        if base.startswith("embedded:") else ""
    if name == "sft":
        tunings = {"lora": " (LoRA, merged into the weights)", "full": " (full fine-tuning)"}
        tuning = tunings.get(info.finetune or "", "")
        how = (f"the SFT reference of experiment `{cfg.exp}`: `{base}` fine-tuned{tuning} on the build's chosen "
               "responses (grounded answers to in-knowledge prompts, calibrated refusals to out-of-knowledge ones)")
    else:
        onto = (f"the SFT reference (`{base}` after SFT)" if info.start == "sft" else f"the base model `{base}`")
        how = f"the {ALGO_NAMES.get(name, name)} policy of experiment `{cfg.exp}`: its LoRA adapter merged onto {onto}"
    weights = info.weights
    n_params = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [halluguard, abstention, refusal, rag]",
        "---",
        "",
        f"# {cfg.exp} / {name}: a halluguard policy",
        "",
        f"Exported by `halluguard export exp={cfg.exp} export.policy={cfg.export.policy}`. It is {how}.",
        "halluguard trains a model to answer from the retrieved passages in its prompt, and to refuse when "
        "they do not hold the answer.",
        "",
        "A standalone Hugging Face model: `AutoModelForCausalLM.from_pretrained` loads it without peft, "
        "halluguard or `trust_remote_code`.",
        "",
        "| | |",
        "|---|---|",
        f"| experiment | `{cfg.exp}` |",
        f"| base model | `{base}`{embedded} |",
        f"| stages merged | {info.chain} |",
        f"| loaded from | `{weights.get('base')}`" + (f" + adapter `{weights.get('adapter')}`" if weights.get("adapter")
                                                    else "") + " |",
        f"| stage manifest | `{info.stage_manifest}` ({info.stage_created}) |",
        f"| parameters | {n_params:,} ({dtype}) |",
        f"| architecture | `{type(model).__name__}` |",
        "",
        "## Prompt format",
        "",
        "It was trained and evaluated on this prompt (`prompt.*` of the experiment; up to "
        f"{int(cfg.prompt.passages)} retrieved passages, each cut at {int(cfg.prompt.max_passage_chars)} characters). "
        "Render it with the tokenizer's chat template:",
        *(["", "The `Retrieval match` line states the highest cosine similarity between the question and a shown "
           f"passage ({cfg.retriever.encoder}), `strong` at or above {float(cfg.prompt.hint_threshold):g}: supply "
           "it from your retriever in the same form."] if bool(cfg.prompt.retrieval_hint) else []),
        "",
        "```text",
        _prompt_example(cfg, tokenizer).rstrip("\n"),
        "```",
        "",
        *_eval_section(cfg, name, results, results_path, eval_created, info),
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"folder = {str(final)!r}",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        "model = AutoModelForCausalLM.from_pretrained(folder)",
        'messages = [{"role": "system", "content": "..."},',
        '            {"role": "user", "content": "Passages:\\n[1] <title>\\n<text>\\n\\nQuestion: <question>"}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
        "                                       return_dict=True)",
        "out = model.generate(**inputs, max_new_tokens=96, do_sample=False)",
        "print(tokenizer.decode(out[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "Limits: it was trained on one knowledge base's questions; whether it refuses is judged by halluguard's "
        "refusal detector, and its numbers above are only as good as that held-out set.",
        "",
    ]
    return "\n".join(lines)
