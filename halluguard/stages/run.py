"""``halluguard run`` (what ``make demo`` runs): the pipeline's stages in order on one experiment.

``run.stages`` (default ``[build, sft, reward, ppo, eval]``) names the stages; they always run in the
order of :data:`~halluguard.config.RUN_ORDER` (build, demo, sft, reward, ppo, eval), each by calling
that stage module's ``run(cfg)`` with this same composed config, exactly as ``halluguard <stage>``
would. ``run.baselines`` (``dpo``, ``grpo``) runs the ppo stage again with ``ppo.algo`` set to each,
after ppo and before eval, so the evaluation's ``auto`` model list compares them with PPO.

``demo`` (not in the default chain; ``run.stages=[build,demo]``) answers a few questions with the
untrained policy and retrieval, printed with the passages it saw: in-knowledge questions show grounded
answering, out-of-knowledge ones show that retrieval alone does not stop the model from answering.

Printed: a banner before each stage (``== stage 2/5: sft ==``), its time when it finishes, then a
table of the stage times, the evaluation's key metrics per model (from ``runs/<exp>/eval/results.json``)
and the report's path. A failing stage stops the chain with an error naming it; the stages before it
keep their outputs (each stage writes its folder atomically).

Output: ``runs/<exp>/run/manifest.json`` (written atomically): the stage manifests as inputs (with their
sha256), and as metrics the stage times, the stage manifests' paths, the report's path and the key eval
metrics; ``demo_answers.jsonl`` when the demo ran. Nothing here draws a random number: the stages' own
seeds decide every result.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from halluguard.artifacts import Manifest, atomic_dir, write_jsonl
from halluguard.config import RUN_ORDER, resolve_cache_dir, stage_dir, to_plain
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.run")

MODULES = {"build": "halluguard.stages.build", "sft": "halluguard.stages.sft",
           "reward": "halluguard.stages.reward", "ppo": "halluguard.stages.ppo", "eval": "halluguard.stages.eval"}
TRAINED = ("sft", "ppo", "dpo", "grpo")  # stage folders the evaluation picks up by itself (eval.models=[auto])


class StageFailed(HalluguardError):
    """A stage of the chain failed; the message names it and what was kept."""


@dataclass(frozen=True)
class Step:
    """One stage call of the chain."""

    name: str
    """Its output folder under ``runs/<exp>/`` (``ppo``, ``dpo``, ... for the ppo stage), and its key in the timings."""
    stage: str
    """The stage it runs: one of RUN_ORDER."""
    algo: str | None = None
    """``ppo.algo`` for ppo steps."""
    baseline: bool = False

    @property
    def label(self) -> str:
        if self.stage != "ppo":
            return self.stage
        if self.baseline:
            return f"ppo (algo={self.algo}, baseline)"
        return "ppo" if self.algo == "ppo" else f"ppo (algo={self.algo})"


def plan(cfg: DictConfig) -> list[Step]:
    """The steps ``run.stages`` and ``run.baselines`` ask for, in pipeline order (each at most once)."""
    listed = {str(s) for s in cfg.run.stages}
    algo = str(cfg.ppo.algo)
    steps: list[Step] = []
    for stage in RUN_ORDER:
        if stage in listed:
            steps.append(Step(algo, "ppo", algo) if stage == "ppo" else Step(stage, stage))
        if stage == "ppo":  # the baselines sit right after ppo's place, before eval
            for baseline in dict.fromkeys(str(b) for b in cfg.run.baselines):
                if baseline not in {s.name for s in steps}:
                    steps.append(Step(baseline, "ppo", baseline, baseline=True))
    return steps


def step_config(cfg: DictConfig, step: Step) -> DictConfig:
    """The config a step runs with: ``cfg`` itself, or a copy with ``ppo.algo`` set for a baseline."""
    if step.stage != "ppo" or step.algo == str(cfg.ppo.algo):
        return cfg
    return OmegaConf.merge(cfg, {"ppo": {"algo": step.algo}})


def run(cfg: DictConfig) -> Manifest:
    from halluguard.models import resolve_policy_source

    steps = plan(cfg)
    # Fail on a wrong model path before minutes of building, not after.
    resolve_policy_source(cfg.model.name_or_path, resolve_cache_dir(cfg))
    print(f"halluguard run: experiment '{cfg.exp}', {len(steps)} stage{'s' if len(steps) != 1 else ''}: "
          + " -> ".join(s.label for s in steps), flush=True)

    timings: dict[str, float] = {}
    manifests: dict[str, Manifest] = {}
    demo_records = None
    chain_start = time.perf_counter()
    for i, step in enumerate(steps, 1):
        print(f"\n== stage {i}/{len(steps)}: {step.label} ==", flush=True)
        if step.stage == "eval":
            _warn_stale_models(cfg, manifests)
        start = time.perf_counter()
        try:
            if step.stage == "demo":
                demo_records = demo_answers(cfg, manifests.get("build") or Manifest.load(stage_dir(cfg, "build")))
            else:
                module = importlib.import_module(MODULES[step.stage])
                manifests[step.name] = module.run(step_config(cfg, step))
        except HalluguardError as exc:
            raise StageFailed(_failure(cfg, steps, i, manifests, str(exc))) from None
        except KeyboardInterrupt:
            print(f"halluguard: interrupted in stage {i}/{len(steps)} '{step.name}'; "
                  + _kept(manifests), file=sys.stderr, flush=True)
            raise
        except Exception:
            # Not an error halluguard foresaw: say which stage, keep the traceback for the report.
            print(f"halluguard: error: {_failure(cfg, steps, i, manifests, 'unexpected error (traceback below)')}",
                  file=sys.stderr, flush=True)
            raise
        timings[step.name] = round(time.perf_counter() - start, 3)
        print(f"== stage {i}/{len(steps)}: {step.label} done in {timings[step.name]:.1f} s ==", flush=True)
    total = round(time.perf_counter() - chain_start, 3)

    results = _eval_results(manifests.get("eval"))
    report = _report_path(manifests.get("eval"))
    manifest = _write_manifest(cfg, steps, timings, total, manifests, results, report, demo_records)
    print_summary(steps, timings, total, results, report, manifest.path)
    return manifest


# ---------------------------------------------------------------- failures

def _kept(manifests: dict[str, Manifest]) -> str:
    if not manifests:
        return "no stage had finished"
    return "the stages before it kept their outputs: " + ", ".join(str(m.path.parent) for m in manifests.values())


def _failure(cfg: DictConfig, steps: list[Step], i: int, manifests: dict[str, Manifest], reason: str) -> str:
    step = steps[i - 1]
    rest = [s.stage for s in steps[i - 1:] if not s.baseline]
    rest = list(dict.fromkeys(rest))
    lines = [f"stage {i}/{len(steps)} '{step.label}' failed: {reason.rstrip('.')}",
             f"  the chain stopped there; {_kept(manifests)}"]
    if rest:
        lines.append(f"  once fixed, `halluguard run run.stages=[{','.join(rest)}]` with the same overrides runs the rest")
    return "\n".join(lines)


def _warn_stale_models(cfg: DictConfig, manifests: dict[str, Manifest]) -> None:
    """eval.models=[auto] evaluates every trained model folder of the experiment, including one an earlier
    run left: say so when this chain rebuilt the data but did not retrain it."""
    if "build" not in manifests or [str(m) for m in cfg.eval.models] != ["auto"]:
        return
    from halluguard.evaluation.models import stage_exists

    stale = [name for name in TRAINED if name not in manifests and stage_exists(cfg, name)]
    if stale:
        log.warning("eval will also evaluate %s from an earlier run (not retrained on this build): %s",
                    ", ".join(stale), ", ".join(str(stage_dir(cfg, n)) for n in stale))


# ---------------------------------------------------------------- results and manifest

def _eval_results(eval_manifest: Manifest | None) -> dict | None:
    if eval_manifest is None:
        return None
    path = eval_manifest.output_path("results")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _report_path(eval_manifest: Manifest | None) -> Path | None:
    if eval_manifest is None:
        return None
    for name in ("report_html", "report_md"):
        if name in eval_manifest.outputs:
            return eval_manifest.path.parent / eval_manifest.outputs[name].path
    return None


def _write_manifest(cfg: DictConfig, steps: list[Step], timings: dict, total: float, manifests: dict[str, Manifest],
                    results: dict | None, report: Path | None, demo_records) -> Manifest:
    manifest = Manifest(stage="run", exp=cfg.exp, config=to_plain(cfg))
    for name, stage_manifest in manifests.items():
        manifest.add_input(f"{name}_manifest", stage_manifest.path)
    manifest.metrics = {
        "stages": [s.name for s in steps],
        "stage_seconds": timings,
        "total_seconds": total,
        "stage_manifests": {name: str(m.path) for name, m in manifests.items()},
        "report": None if report is None else str(report),
        "eval_questions": None if results is None else results["data"]["n_questions"],
        # the eval stage's own manifest metrics: key metrics per model, or why a model did not run
        "eval_key_metrics": manifests["eval"].metrics if "eval" in manifests else None,
    }
    if demo_records is not None:
        manifest.metrics["demo_questions"] = len(demo_records)
    manifest.duration_s = total
    final = stage_dir(cfg, "run")
    with atomic_dir(final) as out:
        if demo_records is not None:
            write_jsonl(out / "demo_answers.jsonl", (r.to_dict() for r in demo_records))
            manifest.add_output("demo_answers", out / "demo_answers.jsonl", out)
        manifest.write(out)
    manifest.path = final / "manifest.json"
    return manifest


# ---------------------------------------------------------------- what is printed at the end

def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
                     for row in [header, *rows])


def print_summary(steps: list[Step], timings: dict, total: float, results: dict | None,
                  report: Path | None, manifest_path: Path) -> None:
    from halluguard.evaluation.report import format_console_table

    print(f"\n== halluguard run finished: {len(steps)} stage{'s' if len(steps) != 1 else ''} in {total:.1f} s ==")
    print("stage times:")
    print(format_table(["stage", "seconds"], [[s.label, f"{timings[s.name]:.1f}"] for s in steps]
                       + [["total", f"{total:.1f}"]]))
    if results is not None:
        data = results["data"]
        print(f"\nbefore/after on {data['n_questions']} held-out questions ({data['by_label'].get('ik', 0)} ik, "
              f"{data['by_label'].get('ook', 0)} ook); abstention = refusing an out-of-knowledge question:")
        print(format_console_table(results))
    if report is not None:
        print(f"\nreport: {report}")
    print(f"run manifest: {manifest_path}")


# ---------------------------------------------------------------- the demo step

def pick_demo_questions(questions, n: int, seed: int):
    """Half in-knowledge, half out-of-knowledge (as many as exist), in a seeded order."""
    rng = random.Random(seed)
    ik = [q for q in questions if q.label == "ik"]
    ook = [q for q in questions if q.label == "ook"]
    rng.shuffle(ik)
    rng.shuffle(ook)
    n_ook = min(len(ook), n // 2)
    picked = ik[: n - n_ook] + ook[:n_ook]
    if len(picked) < n:  # unlabelled sets
        rest = [q for q in questions if q not in picked]
        rng.shuffle(rest)
        picked += rest[: n - len(picked)]
    return picked


def demo_answers(cfg: DictConfig, build_manifest: Manifest) -> list:
    """A few build questions answered by the untrained policy with retrieval, printed; returns the records."""
    from halluguard.answering import answer_questions, format_answer
    from halluguard.kb import Question, iter_jsonl
    from halluguard.models import load_policy
    from halluguard.retrieval import Encoder, KnowledgeIndex

    index_dir = build_manifest.output_path("index")
    questions = [Question(**obj) for _, obj in iter_jsonl(build_manifest.output_path("questions"))]
    demo = pick_demo_questions(questions, cfg.demo.questions, cfg.seed)
    if not demo:
        log.warning("the knowledge base has no questions; nothing to demo")

    kb_index = KnowledgeIndex.load(index_dir, nprobe=cfg.retriever.nprobe)
    encoder = Encoder.from_config(cfg.retriever)
    model, tokenizer = load_policy(cfg.model, resolve_cache_dir(cfg))
    records = answer_questions(model, tokenizer, kb_index, encoder, demo, cfg.prompt,
                               max_new_tokens=cfg.demo.max_new_tokens, batch_size=cfg.demo.batch_size)
    print(f"\n=== {len(records)} demo questions, answered by {cfg.model.name_or_path} with retrieval ===")
    for rec in records:
        print(format_answer(rec))
    print(f"\nanswers go to {stage_dir(cfg, 'run') / 'demo_answers.jsonl'} when the chain finishes")
    return records
