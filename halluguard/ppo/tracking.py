"""Where a run's numbers go: ``metrics.jsonl`` and ``probes.jsonl`` (always), TensorBoard / W&B (``ppo.report_to``).

Rows are appended and flushed one by one, so an interrupted run keeps what it measured; a resumed run
first drops the rows at and after the step it resumes from (they are recomputed, identically).

Metrics, one row per step ``N`` (row N measures the policy after N updates, i.e. checkpoint ``step-N``):

===================  =====================================================================
``reward``           mean total reward per response: score - beta * (KL penalty summed over its tokens)
``score``            mean scorer score (``reward.scorer``)
``kl_k1``, ``kl_k3`` mean KL to the reference per response (summed over tokens), two estimators
``kl``               the ``ppo.kl.penalty`` estimator's value: what the controller and the budget read
``beta``             the KL coefficient used for this step's rewards
``entropy``          mean next-token entropy of the policy over response tokens
``policy_loss``, ``value_loss``, ``clip_frac``, ``value_clip_frac``, ``approx_kl``, ``grad_norm``
                     the update's averages over its minibatches (absent on a row with no update)
``response_length``  mean response tokens (eos included); ``truncated`` share that hit max_new_tokens
``refusal_rate_ook``, ``refusal_rate_ik``  share of the batch's out-of / in-knowledge responses that refuse
``time_*``           seconds per phase: generate, score, policy_forward, ref_forward, update, probe, step
===================  =====================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from halluguard.errors import HalluguardError

METRICS = "metrics.jsonl"
PROBES = "probes.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the interruption: the rest is recomputed
            break
    return rows


def keep_rows(path: Path, keep: Callable[[dict], bool]) -> None:
    from halluguard.artifacts import write_jsonl

    path = Path(path)
    if path.is_file():
        write_jsonl(path, [r for r in read_jsonl(path) if keep(r)])


def check_report_to(report_to: Sequence[str]) -> None:
    """Fail before training when a ``ppo.report_to`` backend is not installed."""
    packages = {"tensorboard": "tensorboard", "wandb": "wandb"}
    for name in report_to:
        if name not in packages:
            raise HalluguardError(f"ppo.report_to: unknown backend '{name}' (known: {', '.join(packages)})")
        try:
            __import__(packages[name])
        except ImportError:
            raise HalluguardError(f"ppo.report_to includes '{name}' but the {packages[name]} package is not "
                                  f"installed: `pip install {packages[name]}`, or remove it from ppo.report_to") from None


class RunLog:
    """Appends metric and probe rows in ``folder`` and mirrors metrics to the ``report_to`` backends."""

    def __init__(self, folder: Path, report_to: Sequence[str] = (), run_name: str = "ppo",
                 config: dict | None = None, enabled: bool = True):
        self.folder = Path(folder)
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        check_report_to(report_to)
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.folder / "tensorboard"))
        if "wandb" in report_to:
            import wandb

            self._wandb = wandb.init(project="halluguard", name=run_name, config=config or {},
                                     dir=str(self.folder), resume="allow")

    def drop_from(self, step: int) -> None:
        """Forget rows of ``step`` and later (a resume recomputes them)."""
        if self.enabled:
            keep_rows(self.folder / METRICS, lambda r: r.get("step", 0) < step)
            keep_rows(self.folder / PROBES, lambda r: r.get("step", 0) < step)

    def _append(self, name: str, rows: Sequence[dict]) -> None:
        with open(self.folder / name, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            fh.flush()

    def metrics(self, row: dict) -> None:
        if not self.enabled:
            return
        self._append(METRICS, [row])
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, row["step"])
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=row["step"])

    def probes(self, rows: Sequence[dict]) -> None:
        if self.enabled and rows:
            self._append(PROBES, rows)

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.folder / METRICS)

    def read_probes(self) -> list[dict]:
        return read_jsonl(self.folder / PROBES)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
