"""Which of the build's PPO prompts PPO trains on (``ppo.prompts``): all, or those the SFT reference never saw.

Why it matters: SFT trains on nearly every training prompt of the smaller label, so every in-knowledge prompt
PPO sees is one the reference has fitted, while every held-out question is new. Measured on the demo build
(README, "A fourth GPU run"): PPO kept in-knowledge refusal flat on its training batches and raised it on new
questions. ``unseen_by_sft`` (with ``sft.reserve_ik_questions`` leaving questions out of SFT) trains PPO on
prompts that are as new to the reference as the held-out ones.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from halluguard.errors import HalluguardError

PROMPT_CHOICES = ("all", "unseen_by_sft")


@dataclass
class PromptSelection:
    mode: str
    kept: int
    seen_by_sft: int                 # prompts left out because SFT trained on them (0 for ``all``)
    kept_by_label: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in self.kept_by_label.items())
        if self.mode == "all":
            return f"PPO prompts: all {self.kept} of the build ({labels})"
        return (f"PPO prompts (ppo.prompts={self.mode}): {self.kept} the SFT reference did not train on ({labels}); "
                f"{self.seen_by_sft} it trained on left out")


def sft_case_ids(examples_path: Path) -> set[str]:
    """The case ids of the prompts SFT trained on, from its ``examples.jsonl``; a bad line names file and line."""
    seen: set[str] = set()
    with Path(examples_path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                case_id = json.loads(line)["case_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HalluguardError(f"{examples_path}, line {number}: not an SFT example with a 'case_id'; "
                                      "re-run `halluguard sft`") from None
            seen.add(str(case_id))
    return seen


def select_prompts(rows: Sequence[dict], meta: Sequence[dict], mode: str,
                   seen_case_ids: set[str] | None = None) -> tuple[list[dict], list[dict], PromptSelection]:
    """``rows`` and their scoring ``meta`` kept under ``mode``, in their original order, and what was kept."""
    if mode not in PROMPT_CHOICES:
        raise HalluguardError(f"ppo.prompts must be one of {', '.join(PROMPT_CHOICES)}, got '{mode}'")
    if len(rows) != len(meta):
        raise HalluguardError(f"{len(rows)} PPO prompts but {len(meta)} meta entries")
    keep = list(range(len(rows)))
    if mode == "unseen_by_sft":
        if seen_case_ids is None:
            raise HalluguardError("ppo.prompts=unseen_by_sft needs the case ids SFT trained on")
        keep = [i for i in keep if str(rows[i].get("case_id")) not in seen_case_ids]
    if not keep:
        raise HalluguardError(f"ppo.prompts={mode} leaves no PPO prompt: the SFT reference trained on all "
                              f"{len(rows)} of them; leave questions out of SFT (sft.reserve_ik_questions) or set "
                              "ppo.prompts=all")
    kept_rows, kept_meta = [rows[i] for i in keep], [meta[i] for i in keep]
    by_label = dict(sorted(Counter(str(m.get("label", "")) for m in kept_meta).items()))
    return kept_rows, kept_meta, PromptSelection(mode, len(keep), len(rows) - len(keep), by_label)


def select_configured(cfg, rows: Sequence[dict], meta: Sequence[dict]
                      ) -> tuple[list[dict], list[dict], PromptSelection, Path | None]:
    """``cfg.ppo.prompts`` applied to the build's PPO prompts, for every stage that trains on or exports them.

    Returns the kept rows and meta, the selection, and the SFT ``examples.jsonl`` it read (None for ``all``),
    for the caller's manifest. Without the SFT stage, ``unseen_by_sft`` is a clear error."""
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir

    mode = str(cfg.ppo.prompts)
    examples = seen = None
    if mode == "unseen_by_sft":
        try:
            examples = Manifest.load(stage_dir(cfg, "sft")).output_path("examples")
        except HalluguardError as exc:
            raise HalluguardError(f"ppo.prompts=unseen_by_sft needs the SFT examples of experiment '{cfg.exp}' ({exc}); "
                                  f"run `halluguard sft exp={cfg.exp}` first, or set ppo.prompts=all") from None
        seen = sft_case_ids(examples)
    kept_rows, kept_meta, selection = select_prompts(rows, meta, mode, seen)
    return kept_rows, kept_meta, selection, examples
