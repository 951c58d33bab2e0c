"""The PPO loop. One step, top to bottom, each phase a named function below:

1. ``sample_phase``        - responses to this step's prompts, sampled with the KV cache, ending at eos
2. ``score_phase``         - the scorer's score per response (``reward.scorer``), refusal rates per label
3. ``policy_logprobs_and_values`` - one forward pass: log pi_old and V_old per response token
4. ``reference_logprobs``  - one forward pass with PPO's adapter off: log pi_ref per response token
5. ``kl_phase``            - per-token k1 and k3; reward = score at the last token - beta * KL per token
6. ``advantage_phase``     - GAE (gamma, lam), whitened advantages, returns
7. ``ppo_update``          - ``ppo_epochs`` x minibatches of clipped policy + value loss, gradient clipping
8. then: the KL controller moves beta, the row is logged, a checkpoint is saved every ``save_every``

Step numbering: row ``N`` of ``metrics.jsonl`` measures the policy after ``N`` updates, which is what
checkpoint ``step-N`` holds. Row 0 is the start model (the reference: a fresh adapter changes nothing);
the last row, ``ppo.steps``, measures the final policy and does no update.

KL budget: when a row's KL per response (the ``ppo.kl.penalty`` estimator, batch mean) passes
``ppo.kl.budget``, training stops without updating; the result is the newest checkpoint before that row
(every earlier row was within budget). ``step-0`` always exists, so there is always one.

Reproducibility: every random draw of step ``N`` (sampling, minibatch order) comes from a seed derived
from ``(seed, N, process)``, and everything else a step needs is in the checkpoint, so a run interrupted
and resumed from ``step-N`` produces the same result as one that was never interrupted.

Several processes (``accelerate launch``, DDP): each process samples its own slice of the step's prompts
(``ppo.batch_size`` per process, disjoint, from the same per-step shuffle) with its own seed, the batch
statistics (every logged mean, the whitening of the advantages) are summed across processes before use,
so every process logs, budgets and moves beta on the same global numbers; DDP all-reduces the gradients,
so the weights stay identical. Process 0 alone writes checkpoints, metrics and probes; the others wait
at a barrier after each checkpoint. Under DeepSpeed (untested here) ZeRO-2 works the same way; ZeRO-3
is refused (every step samples from the whole policy, which ZeRO-3 keeps in slices).

Work folder (``work_dir``): ``checkpoints/step-N/``, ``metrics.jsonl``, ``probes.jsonl``, ``run.json`` (the
settings a resume must match). It lives outside the stage's atomically written output folder so it
survives an interruption; the stage copies the result out when training ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from halluguard.artifacts import atomic_write_json
from halluguard.errors import HalluguardError
from halluguard.ppo.advantages import gae, kl_penalised_rewards
from halluguard.ppo.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoints_after,
    save_checkpoint,
)
from halluguard.ppo.distributed import PPO_ZERO3, write_weights_digest
from halluguard.ppo.kl import (
    kl_k1,
    kl_k3,
    kl_per_token,
    make_kl_controller,
    over_budget,
)
from halluguard.ppo.logprobs import (
    PolicyPass,
    policy_logprobs_and_values,
    reference_logprobs,
    token_logprobs,
)
from halluguard.ppo.losses import clipped_policy_loss, clipped_value_loss
from halluguard.ppo.masked import masked_whiten
from halluguard.ppo.prompts import PromptSet
from halluguard.ppo.rollout import Rollout, sample_responses
from halluguard.ppo.tracking import RunLog, check_report_to
from halluguard.ppo.value_head import PolicyWithValue

log = logging.getLogger("halluguard.ppo")

RUN_INFO = "run.json"
# Settings that may change between an interrupted run and its resume without changing what is computed.
RESUME_FREE_KEYS = ("steps", "save_every", "probe_every", "probe_prompts", "resume", "report_to", "use_cpu",
                    "generate_threads")


@dataclass
class PpoResult:
    rows: list[dict]                 # metrics.jsonl, row N = the policy after N updates
    probes: list[dict]               # probes.jsonl
    chosen_step: int                 # the checkpoint that is the result
    chosen_checkpoint: Path
    stopped_early: bool
    stop_reason: str                 # "completed" or "kl_budget"
    last_step: int                   # the last row measured
    resumed_from: int | None
    train_seconds: float


# ---------------------------------------------------------------- seeds

def step_seed(seed: int, step: int, process: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, step, process)``."""
    return int(np.random.SeedSequence([int(seed), int(step), int(process)]).generate_state(2, np.uint64)[0] >> 1)


# ---------------------------------------------------------------- phases

def sample_phase(model: PolicyWithValue, tokenizer, prompts: PromptSet, indices: list[int], settings) -> Rollout:
    with sampling_threads(model, int(settings.generate_threads)):
        return sample_responses(model.policy, tokenizer, [prompts.token_ids[i] for i in indices],
                                settings.max_new_tokens, settings.temperature, settings.top_p, prompt_index=indices)


@contextlib.contextmanager
def sampling_threads(model, threads: int):
    """Run the sampling on ``threads`` torch threads (CPU only; 0 leaves torch's setting)."""
    before = torch.get_num_threads()
    on_cpu = next(model.parameters()).device.type == "cpu"
    if threads and on_cpu and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def score_phase(scorer, prompts: PromptSet, rollout: Rollout, detector=None) -> tuple[torch.Tensor, dict]:
    """Scores ``(B,)`` and per-label refusal counts of the batch (``{"ook": (refused, n), "ik": ...}``)."""
    idx = rollout.prompt_index
    scores = scorer.score([prompts.messages[i] for i in idx], rollout.texts, [prompts.meta[i] for i in idx])
    scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    if scores.shape[0] != rollout.batch_size:
        raise HalluguardError(f"the scorer returned {scores.shape[0]} scores for {rollout.batch_size} responses")
    refusals: dict[str, tuple[int, int]] = {}
    if detector is not None:
        refused = detector.is_refusal(rollout.texts)
        for label in ("ook", "ik"):
            rows = [j for j, i in enumerate(idx) if prompts.meta[i].get("label") == label]
            refusals[label] = (int(sum(bool(refused[j]) for j in rows)), len(rows))
    return scores.to(rollout.response_ids.device), refusals


@dataclass
class KLTerms:
    k1: torch.Tensor       # (B, R) log pi - log pi_ref of each sampled token
    k3: torch.Tensor       # (B, R) (r - 1) - log r, r = pi_ref / pi
    penalty: torch.Tensor  # (B, R) the estimator that enters the reward
    rewards: torch.Tensor  # (B, R) -beta * penalty, plus the score at the last token


def kl_phase(scores: torch.Tensor, old: PolicyPass, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float,
             penalty: str) -> KLTerms:
    k1 = kl_k1(old.logprobs, ref_logprobs) * mask
    k3 = kl_k3(old.logprobs, ref_logprobs) * mask
    pen = kl_per_token(old.logprobs, ref_logprobs, penalty) * mask
    return KLTerms(k1, k3, pen, kl_penalised_rewards(scores, pen, mask, beta))


def advantage_phase(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
                    reduce_sum=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened GAE advantages and the (unwhitened) returns the value head regresses on."""
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    return masked_whiten(advantages, mask, reduce_sum=reduce_sum), returns


def ppo_update(model, optimizer, accelerator, rollout: Rollout, old: PolicyPass, advantages: torch.Tensor,
               returns: torch.Tensor, settings, generator: torch.Generator) -> dict[str, float]:
    """``ppo_epochs`` passes over the rollout in shuffled minibatches; the averages of what they measured."""
    unwrapped = accelerator.unwrap_model(model)
    policy_params = [p for p in unwrapped.policy.parameters() if p.requires_grad]
    value_params = list(unwrapped.value_head.parameters())
    stats: dict[str, list[float]] = defaultdict(list)
    size = int(settings.mini_batch_size)
    for _ in range(int(settings.ppo_epochs)):
        order = torch.randperm(rollout.batch_size, generator=generator).tolist()
        for first in range(0, rollout.batch_size, size):
            rows = order[first:first + size]
            part = rollout.select(rows)
            width = part.response_width
            index = torch.as_tensor(rows, device=advantages.device)
            mb_old_logprobs, mb_old_values = old.logprobs[index, :width], old.values[index, :width]
            mb_advantages, mb_returns = advantages[index, :width], returns[index, :width]
            mask = part.response_mask
            ids, attention = part.model_inputs()
            logits, values = model(ids, attention, part.response_start, width, part.trunk_hidden)
            logprobs = token_logprobs(logits, part.response_ids, settings.temperature)
            pg = clipped_policy_loss(logprobs, mb_old_logprobs, mb_advantages, mask, settings.cliprange)
            vf = clipped_value_loss(values, mb_old_values, mb_returns, mask, settings.cliprange_value)
            loss = pg.loss + settings.vf_coef * vf.loss
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            # Clipped apart: a large value gradient must not shrink the policy's step (one global norm would).
            grad_norm = accelerator.clip_grad_norm_(policy_params, settings.max_grad_norm)
            accelerator.clip_grad_norm_(value_params, settings.max_grad_norm)
            optimizer.step()
            for key, value in (("policy_loss", pg.loss), ("value_loss", vf.loss), ("clip_frac", pg.clip_frac),
                               ("approx_kl", pg.approx_kl), ("value_clip_frac", vf.clip_frac), ("grad_norm", grad_norm)):
                if value is None:  # DeepSpeed clips inside its own step and may not report the norm
                    value = float("nan")
                stats[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
    optimizer.zero_grad(set_to_none=True)
    return {k: float(np.mean(v)) for k, v in stats.items()}


def probe_phase(model: PolicyWithValue, tokenizer, prompts: PromptSet, indices: list[int], settings, step: int,
                detector=None) -> list[dict]:
    """Greedy completions of the fixed probe prompts by the current policy."""
    if not indices:
        return []
    with sampling_threads(model, int(settings.generate_threads)):
        out = sample_responses(model.policy, tokenizer, [prompts.token_ids[i] for i in indices],
                               settings.max_new_tokens, greedy=True, prompt_index=indices)
    refused = detector.is_refusal(out.texts) if detector is not None else [None] * len(indices)
    rows = []
    for i, text, ref in zip(indices, out.texts, refused):
        rows.append({"step": step, "case_id": prompts.case_ids[i] if prompts.case_ids else str(i),
                     "label": prompts.meta[i].get("label"),
                     "question": prompts.questions[i] if prompts.questions else None,
                     "completion": text, "refusal": None if ref is None else bool(ref)})
    return rows


def probe_refusals(probes: list[dict]) -> dict[str, tuple[int, int]]:
    """``{label: (refused, judged)}`` over probe rows the refusal detector judged."""
    out = {}
    for label in ("ook", "ik"):
        judged = [r["refusal"] for r in probes if r.get("label") == label and r.get("refusal") is not None]
        out[label] = (sum(bool(x) for x in judged), len(judged))
    return out


# ---------------------------------------------------------------- the loop

class PpoTrainer:
    """Runs PPO on ``policy`` (a PeftModel: start model + PPO's adapter) with ``scorer`` as the reward.

    ``settings``: the ``ppo`` config group (``PpoConfig``). ``scorer``: anything with
    ``score(prompts, responses, meta)``. ``detector``: a refusal detector for the OOK/IK refusal rates
    (None leaves them out). ``fingerprint``: what else must match for a resume (model, reward, ...).
    ``on_step_end(step, row)``: called after each logged row (tests use it to interrupt a run).
    """

    def __init__(self, policy, tokenizer, scorer, prompts: PromptSet, settings, work_dir: Path, seed: int = 0,
                 detector=None, accelerator=None, fingerprint: dict | None = None, run_name: str = "ppo",
                 on_step_end: Callable[[int, dict], None] | None = None, progress: bool = True):
        from halluguard.config import _check_ppo

        settings = _as_config(settings)
        _check_ppo(settings)
        check_report_to(list(settings.report_to))  # a missing package fails here, not after step 0
        if len(prompts) < 1:
            raise HalluguardError("PPO needs at least one prompt")
        self.settings = settings
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.prompts = prompts
        self.work_dir = Path(work_dir)
        self.seed = int(seed)
        self.detector = detector
        self.fingerprint = {"ppo": _free_of_resume_keys(_plain(settings)), "seed": self.seed, **(fingerprint or {})}
        self.run_name = run_name
        self.on_step_end = on_step_end
        self.progress = progress
        self.accelerator = accelerator or make_accelerator(getattr(settings, "use_cpu", None))
        if self.accelerator.num_processes > 1:
            # Each process samples its own slice of the prompts: another process count is another run.
            self.fingerprint["processes"] = self.accelerator.num_processes
        self.model = PolicyWithValue(policy)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(settings.learning_rate), weight_decay=0.0)
        _fit_deepspeed(self.accelerator, settings)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        self.model.eval()  # dropout off throughout: the update's ratio must compare the function that sampled
        self.controller = make_kl_controller(settings.kl)
        self.probe_indices = prompts.probe_indices(int(settings.probe_prompts), self.seed)
        self.checkpoints = self.work_dir / "checkpoints"
        self.runlog: RunLog | None = None
        self._local: list[dict] = []  # this process's prompts and rows, for the weights digest (tests)

    # -- helpers
    @property
    def unwrapped(self) -> PolicyWithValue:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _sum_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum")

    def _save(self, step: int) -> None:
        if self.is_main:
            save_checkpoint(self.checkpoints, step, self.unwrapped, self.optimizer, self.controller)
        self.accelerator.wait_for_everyone()

    # -- start or resume
    def _resume_point(self) -> tuple[int, Path] | None:
        """The newest checkpoint of an interrupted run to continue (``ppo.resume``), or None after
        clearing the work folder for a fresh start."""
        found = latest_checkpoint(self.checkpoints, at_most=int(self.settings.steps))
        if self.settings.resume and found is not None:
            if self.accelerator.state.deepspeed_plugin is not None:
                raise HalluguardError(
                    f"ppo.resume=true found an interrupted run in {self.work_dir}, but under DeepSpeed a checkpoint "
                    "holds process 0's slice of the optimiser state only, so it cannot be continued exactly; set "
                    "ppo.resume=false to start over, or continue it under DDP (conf/accelerate/ddp_gpu.yml)")
            self._check_same_run()
            return found
        self.accelerator.wait_for_everyone()  # every process has looked before process 0 clears the folder
        if self.is_main:
            if self.work_dir.exists():
                shutil.rmtree(self.work_dir)
            self.work_dir.mkdir(parents=True)
            atomic_write_json(self.work_dir / RUN_INFO, self.fingerprint)
        self.accelerator.wait_for_everyone()
        return None

    def _start(self, resume: tuple[int, Path] | None) -> int:
        """Load the checkpoint to resume from (dropping what came after it), or save ``step-0``."""
        if resume is None:
            self._save(0)
            return 0
        step, path = resume
        load_checkpoint(path, self.unwrapped, self.optimizer, self.controller)
        if self.is_main:
            remove_checkpoints_after(self.checkpoints, step)
            self.runlog.drop_from(step)
        self.accelerator.wait_for_everyone()
        log.info("resuming PPO from %s (beta %.4g)", path, self.controller.beta)
        return step

    def _check_same_run(self) -> None:
        import json

        path = self.work_dir / RUN_INFO
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        now = json.loads(json.dumps(self.fingerprint, default=str))
        differ = sorted(k for k in set(_flatten(saved)) | set(_flatten(now))
                        if _flatten(saved).get(k) != _flatten(now).get(k))
        if differ:
            shown = ", ".join(f"{k}: {_flatten(saved).get(k)!r} -> {_flatten(now).get(k)!r}" for k in differ[:4])
            raise HalluguardError(
                f"ppo.resume=true found an interrupted run in {self.work_dir} made with other settings ({shown}); "
                "restore those settings to continue it, or set ppo.resume=false to start over")

    # -- one row
    def _measure(self, step: int) -> tuple[dict, dict]:
        """Phases 1-5 for the policy after ``step`` updates; returns (row, tensors for the update)."""
        s = self.settings
        acc = self.accelerator
        torch.manual_seed(step_seed(self.seed, step, acc.process_index))
        indices = self.prompts.step_indices(self.seed, step, int(s.batch_size), acc.process_index, acc.num_processes,
                                            balance=bool(s.get("balance_labels", False)))
        timings: dict[str, float] = {}
        model = self.unwrapped
        with _timer(timings, "generate"):
            rollout = sample_phase(model, self.tokenizer, self.prompts, indices, s)
        with _timer(timings, "score"):
            scores, refusals = score_phase(self.scorer, self.prompts, rollout, self.detector)
        with _timer(timings, "policy_forward"):
            old = policy_logprobs_and_values(model, rollout, s.temperature, int(s.mini_batch_size))
        with _timer(timings, "ref_forward"):
            ref = reference_logprobs(model, rollout, s.temperature, int(s.mini_batch_size))
        beta = self.controller.beta
        kl = kl_phase(scores, old, ref, rollout.response_mask, beta, s.kl.penalty)
        row = self._batch_stats(step, beta, rollout, scores, refusals, kl, old)
        row.update({f"time_{k}": round(v, 4) for k, v in timings.items()})
        self._local.append({"step": step, "prompts": list(indices), "row": row})
        return row, {"rollout": rollout, "old": old, "kl": kl}

    def _batch_stats(self, step: int, beta: float, rollout: Rollout, scores: torch.Tensor, refusals: dict,
                     kl: KLTerms, old: PolicyPass) -> dict:
        """Batch means, summed across processes first so every process sees the same numbers."""
        mask = rollout.response_mask
        lengths = mask.sum(1)
        no_eos = (rollout.response_ids == self.tokenizer.eos_token_id).sum(1).eq(0)
        parts = [torch.tensor(rollout.batch_size), kl.rewards.sum(), scores.sum(), kl.k1.sum(), kl.k3.sum(),
                 kl.penalty.sum(), old.entropy.sum(), lengths.sum(), no_eos.sum(),
                 *[torch.tensor(v) for label in ("ook", "ik") for v in refusals.get(label, (0, 0))]]
        sums = torch.stack([t.detach().double().cpu() for t in parts])
        (n, reward, score, k1, k3, pen, entropy, tokens, truncated, ook_ref, ook_n, ik_ref, ik_n) = \
            self._sum_across_processes(sums).tolist()
        row = {"step": step, "reward": reward / n, "score": score / n, "kl_k1": k1 / n, "kl_k3": k3 / n,
               "kl": pen / n, "beta": beta, "entropy": entropy / max(tokens, 1), "response_length": tokens / n,
               "truncated": truncated / n,
               "refusal_rate_ook": ook_ref / ook_n if ook_n else None,
               "refusal_rate_ik": ik_ref / ik_n if ik_n else None}
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}

    def _update(self, step: int, row: dict, batch: dict) -> None:
        """Phases 6-7, then beta moves toward its target."""
        s = self.settings
        rollout, old, kl = batch["rollout"], batch["old"], batch["kl"]
        timings: dict[str, float] = {}
        with _timer(timings, "update"):
            advantages, returns = advantage_phase(kl.rewards, old.values, rollout.response_mask, s.gamma, s.lam,
                                                  reduce_sum=self._sum_across_processes)
            generator = torch.Generator().manual_seed(step_seed(self.seed, step, self.accelerator.process_index) + 1)
            stats = ppo_update(self.model, self.optimizer, self.accelerator, rollout, old, advantages, returns, s,
                               generator)
        if self.accelerator.num_processes > 1:
            keys = sorted(stats)
            mean = self._sum_across_processes(torch.tensor([stats[k] for k in keys], dtype=torch.float64))
            stats = {k: v / self.accelerator.num_processes for k, v in zip(keys, mean.tolist())}
        row.update({k: round(v, 6) for k, v in stats.items()})
        row["time_update"] = round(timings["update"], 4)
        self.controller.update(row["kl"], int(s.batch_size) * self.accelerator.num_processes)

    def _probe(self, step: int, row: dict | None = None) -> None:
        # Main process only, and no barrier: the others wait at the next collective anyway.
        if self.is_main and self.probe_indices:
            start = time.perf_counter()
            probes = probe_phase(self.unwrapped, self.tokenizer, self.prompts, self.probe_indices, self.settings,
                                 step, self.detector)
            self.runlog.probes(probes)
            if row is not None:
                row["time_probe"] = round(time.perf_counter() - start, 4)
                # Greedy, on the same prompts every time: what the evaluation reads, unlike the sampled batch.
                for label, (refused, n) in probe_refusals(probes).items():
                    if n:
                        row[f"probe_refusal_rate_{label}"] = round(refused / n, 4)

    # -- the loop
    def train(self) -> PpoResult:
        from tqdm.auto import tqdm

        s = self.settings
        steps = int(s.steps)
        started = time.perf_counter()
        resume = self._resume_point()
        self.runlog = RunLog(self.work_dir, list(s.report_to), self.run_name, self.fingerprint, enabled=self.is_main)
        first = self._start(resume)
        resumed_from = resume[0] if resume else None
        stop_reason, last = "completed", first
        bar = tqdm(total=steps + 1, initial=first, desc="ppo", unit="step", disable=not (self.is_main and self.progress))
        try:
            for step in range(first, steps + 1):
                last = step
                step_start = time.perf_counter()
                row, batch = self._measure(step)
                if step % int(s.probe_every) == 0 or step == steps:
                    self._probe(step, row)
                stop = over_budget(row["kl"], float(s.kl.budget))
                if stop:
                    stop_reason = "kl_budget"
                    row["stop"] = f"KL {row['kl']:.4g} passed ppo.kl.budget={s.kl.budget}"
                elif step < steps:
                    self._update(step, row, batch)
                row["time_step"] = round(time.perf_counter() - step_start, 4)
                self.runlog.metrics(row)
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}", beta=f"{row['beta']:.3g}")
                if not stop and step < steps and ((step + 1) % int(s.save_every) == 0 or step + 1 == steps):
                    self._save(step + 1)
                if self.on_step_end is not None:
                    self.on_step_end(step, row)
                if stop:
                    break
            chosen = self._choose(last, stop_reason)
            result = self._finish(chosen, last, stop_reason, resumed_from, time.perf_counter() - started)
            write_weights_digest("ppo", self.unwrapped, {"chosen_step": chosen, "steps": self._local})
        finally:
            bar.close()
            self.runlog.close()
        return result

    def _choose(self, last: int, stop_reason: str) -> int:
        """The last row's policy when it was within budget, else the newest checkpoint before it."""
        saved = [n for n, _ in list_checkpoints(self.checkpoints)]
        if stop_reason == "completed" and last in saved:
            return last
        within = [n for n in saved if n < last]
        if not within:  # step-0 is saved before anything else; this means the folder was tampered with
            raise HalluguardError(f"no checkpoint within the KL budget in {self.checkpoints}; set ppo.resume=false")
        return within[-1]

    def _finish(self, chosen: int, last: int, stop_reason: str, resumed_from: int | None,
                seconds: float) -> PpoResult:
        """Leave the chosen checkpoint's weights in the model and make sure its probes are logged."""
        path = self.checkpoints / f"step-{chosen}"
        if chosen != last:
            load_checkpoint(path, self.unwrapped)
            if not any(p["step"] == chosen for p in self.runlog.read_probes()):
                self._probe(chosen)
        rows = self.runlog.read_metrics() if self.is_main else []
        probes = self.runlog.read_probes() if self.is_main else []
        return PpoResult(rows, probes, chosen, path, stop_reason != "completed", stop_reason, last, resumed_from,
                         round(seconds, 2))


# ---------------------------------------------------------------- small helpers

def make_accelerator(use_cpu: bool | None = None):
    """``accelerate.Accelerator`` on CPU when asked, or when no CUDA device is present (``ppo.use_cpu=null``)."""
    from accelerate import Accelerator

    cpu = (not torch.cuda.is_available()) if use_cpu is None else bool(use_cpu)
    return Accelerator(cpu=cpu)


def _fit_deepspeed(accelerator, settings) -> None:
    """Fill what DeepSpeed cannot infer without a dataloader (untested here: no GPU, no deepspeed).

    Refuses ZeRO-3: every step samples from the whole policy (``generate`` on the unwrapped model), which
    ZeRO-3 keeps in slices across processes. A LoRA policy's weights are replicated anyway; ZeRO-2 shards
    the optimiser state.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    if int(plugin.zero_stage) == 3:
        raise HalluguardError(PPO_ZERO3)
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = int(settings.mini_batch_size)
    if config.get("gradient_clipping", "auto") == "auto":
        # DeepSpeed clips all gradients together, not the policy's and the value head's apart as under DDP.
        config["gradient_clipping"] = float(settings.max_grad_norm)


@contextlib.contextmanager
def _timer(timings: dict, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - start


def _as_config(settings: Any):
    """``ppo`` settings as an OmegaConf node (a ``PpoConfig`` dataclass is accepted too)."""
    from omegaconf import DictConfig, OmegaConf

    return settings if isinstance(settings, DictConfig) else OmegaConf.structured(settings)


def _plain(settings: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(settings, DictConfig):
        return OmegaConf.to_container(settings, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(settings):
        return dataclasses.asdict(settings)
    return dict(settings)


def _free_of_resume_keys(ppo: dict) -> dict:
    return {k: v for k, v in ppo.items() if k not in RESUME_FREE_KEYS and k not in ("dpo", "grpo")}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
