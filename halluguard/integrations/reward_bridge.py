"""What the engine reward hooks share: scoring records, scorer settings, and one cached scorer per process.

**Scoring record.** What halluguard's scorer needs beside the response, JSON-encoded into one string so that every
engine carries it unchanged (veRL's ``reward_model.ground_truth``, the OpenRLHF column named by ``--label_key``, a
TRL dataset column)::

    {"label": "ik" | "ook",            # does the evidence shown hold the answer
     "evidence": "<passage texts shown, joined by newlines>",
     "answers": ["<gold answer>", ...],
     "prompt": [{"role": "system", ...}, {"role": "user", ...}],   # read by the reward model (rm, hybrid)
     "scorer_config": "<abs path of scorer.json>" | null}

``label``, ``evidence`` and ``answers`` are the ``meta`` of :mod:`halluguard.reward.scoring`.

**Scorer settings** (``scorer.json`` in each export folder)::

    {"scorer": "rules" | "rm" | "hybrid", "rules": {<reward.rules>}, "refusal_threshold": 0.5,
     "rm_weight": 1.0, "eval_batch_size": 16, "reward_dir": null | "<runs/<exp>/reward>",
     "encoder": {"name_or_path": ..., "max_seq_length": ..., "batch_size": ...} | null}

Which settings score a response, first found: ``$HALLUGUARD_SCORER`` (a ``scorer.json``, or a ``runs/<exp>/reward``
folder, which means the hybrid scorer of that trained reward run with its own ``reward.*`` settings); a per-row path
(veRL ``extra_info["scorer_config"]``); the record's ``scorer_config``; halluguard's defaults (the rules scorer with
the default weights and the embedded encoder, as ``halluguard ppo`` with ``reward.scorer=rules``).

The scorer (refusal detector with its sentence encoder, and the reward model for rm/hybrid) is built once per
process and settings, then reused: engines call the reward hook once per sample or batch, thousands of times.
``$HALLUGUARD_REWARD_DEVICE`` (default ``cpu``) places the encoder and the reward model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from halluguard.errors import HalluguardError

SCORER_ENV = "HALLUGUARD_SCORER"
DEVICE_ENV = "HALLUGUARD_REWARD_DEVICE"
SETTINGS_FILE = "scorer.json"
SCORERS = ("rules", "rm", "hybrid")
LABELS = ("ik", "ook")

log = logging.getLogger("halluguard.integrations")

# End-of-turn and padding markers an engine may leave on a decoded response (veRL's naive reward manager decodes
# with special tokens; OpenRLHF's queries can end in eos + padding). They are not part of the answer.
_TRAILING_MARKERS = re.compile(r"(?:\s*(?:<\|[^<>|\s]{1,40}\|>|</s>|<eos>|<end_of_turn>|<\|endoftext\|>))+\s*$")


# ---------------------------------------------------------------- records

def make_record(prompt: Sequence[Mapping], meta: Mapping, scorer_config: Optional[str]) -> str:
    """The scoring record of one prompt (see the module docstring), as a JSON string."""
    record = {"label": meta["label"], "evidence": meta.get("evidence") or "",
              "answers": [str(a) for a in (meta.get("answers") or [])],
              "prompt": [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt],
              "scorer_config": scorer_config}
    return json.dumps(record, ensure_ascii=False)


def read_record(value: Any, where: str = "ground_truth") -> dict:
    """A scoring record from its JSON string (or an already decoded dict); a clear error for anything else."""
    record = value
    if isinstance(value, (str, bytes)):
        try:
            record = json.loads(value)
        except json.JSONDecodeError:
            record = None
    if not isinstance(record, dict) or record.get("label") not in LABELS:
        shown = repr(value)[:120]
        raise HalluguardError(f"{where} is not a halluguard scoring record (a JSON object with label 'ik'/'ook', "
                              f"evidence, answers, prompt, as `halluguard export-rl` writes it): got {shown}")
    return record


def meta_of(record: Mapping) -> dict:
    """The scorer ``meta`` of a record."""
    return {"label": record["label"], "evidence": record.get("evidence") or "",
            "answers": [str(a) for a in (record.get("answers") or [])]}


def clean_response(text: Any) -> str:
    """The response without the end-of-turn / padding markers an engine left after it."""
    return _TRAILING_MARKERS.sub("", "" if text is None else str(text))


# ---------------------------------------------------------------- settings

def settings_from_config(reward: Mapping, retriever: Optional[Mapping], scorer: str,
                         reward_dir: Optional[str]) -> dict:
    """Scorer settings from a ``reward`` and a ``retriever`` config section (plain mappings or OmegaConf nodes)."""
    from halluguard.config import RuleWeightsConfig

    if scorer not in SCORERS:
        raise HalluguardError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    rule_keys = [f.name for f in dataclasses.fields(RuleWeightsConfig)]
    encoder = None
    if retriever is not None:  # the detector of `halluguard ppo`: patterns plus embedding prototypes
        encoder = {"name_or_path": str(retriever["encoder"]), "max_seq_length": int(retriever["max_seq_length"]),
                   "batch_size": int(retriever["batch_size"])}
    return {"scorer": scorer, "rules": {k: float(reward["rules"][k]) for k in rule_keys},
            "refusal_threshold": float(reward["refusal_threshold"]), "rm_weight": float(reward["rm_weight"]),
            "eval_batch_size": int(reward["eval_batch_size"]), "reward_dir": reward_dir, "encoder": encoder}


def default_settings() -> dict:
    """halluguard's default reward: the rules scorer, default weights, the default (embedded) encoder."""
    from halluguard.config import RetrieverConfig, RewardConfig

    return settings_from_config(dataclasses.asdict(RewardConfig()), dataclasses.asdict(RetrieverConfig()),
                                "rules", None)


def load_settings(source: str) -> dict:
    """Settings from ``source``: ``""`` (defaults), a ``scorer.json``, or a ``runs/<exp>/reward`` folder (hybrid)."""
    if not source:
        return default_settings()
    path = Path(source)
    if path.is_dir():
        manifest = path / "manifest.json"
        if not (manifest.is_file() and (path / "reward_model").is_dir()):
            raise HalluguardError(f"{path} is not a finished `halluguard reward` run (no manifest.json and "
                                  "reward_model/ in it); point the scorer at a scorer.json or at runs/<exp>/reward")
        config = json.loads(manifest.read_text(encoding="utf-8")).get("config") or {}
        if "reward" not in config:
            raise HalluguardError(f"{manifest} records no reward config; re-run `halluguard reward`")
        return settings_from_config(config["reward"], config.get("retriever"), "hybrid", str(path))
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HalluguardError(f"cannot read the scorer settings {path} ({exc}); re-run `halluguard export-rl`") from None
    missing = [k for k in ("scorer", "rules", "refusal_threshold", "rm_weight", "eval_batch_size") if k not in settings]
    if missing or settings.get("scorer") not in SCORERS:
        raise HalluguardError(f"{path} is not a halluguard scorer.json (missing {', '.join(missing) or 'nothing'}, "
                              f"scorer {settings.get('scorer')!r}); re-run `halluguard export-rl`")
    return settings


def resolve_source(row_source: Optional[str] = None) -> str:
    """Where this response's settings come from: ``$HALLUGUARD_SCORER``, else ``row_source``, else ``""`` (defaults).

    A named path that does not exist here is an error, not a silent fallback: a different reward than the one
    exported would train a different policy."""
    env = os.environ.get(SCORER_ENV, "").strip()
    chosen = env or (str(row_source).strip() if row_source else "")
    if not chosen:
        return ""
    path = Path(chosen).expanduser()
    if not path.exists():
        where = f"${SCORER_ENV}" if env else "the data row's scorer_config"
        raise HalluguardError(f"the scorer settings {path} (from {where}) do not exist on this machine; copy the export "
                              f"folder here and set {SCORER_ENV}=<its scorer.json>, or re-run `halluguard export-rl` "
                              "with paths.runs on a file system every node sees")
    return str(path.resolve())


# ---------------------------------------------------------------- the scorer

@lru_cache(maxsize=8)
def scorer_for(source: str):
    """The scorer of settings ``source`` (see :func:`load_settings`), built once per process."""
    from types import SimpleNamespace

    from halluguard.refusal import RefusalDetector
    from halluguard.reward.scoring import make_scorer

    settings = load_settings(source)
    device = os.environ.get(DEVICE_ENV, "cpu")
    encoder = None
    if settings.get("encoder"):
        from halluguard.retrieval import Encoder

        enc = settings["encoder"]
        encoder = Encoder(enc["name_or_path"], device=device, max_seq_length=int(enc["max_seq_length"]),
                          batch_size=int(enc["batch_size"]))
    detector = RefusalDetector(encoder=encoder, threshold=float(settings["refusal_threshold"]))
    reward_cfg = SimpleNamespace(scorer=settings["scorer"], rules=SimpleNamespace(**settings["rules"]),
                                 refusal_threshold=float(settings["refusal_threshold"]),
                                 eval_batch_size=int(settings["eval_batch_size"]),
                                 rm_weight=float(settings["rm_weight"]))
    scorer = make_scorer(reward_cfg, settings.get("reward_dir"), detector=detector)
    rm = scorer if getattr(scorer, "name", "") == "rm" else getattr(scorer, "rm", None)
    if rm is not None and device != "cpu":  # make_scorer loads on the CPU
        rm.model.to(device)
        rm.device = device
    log.info("halluguard reward: %s scorer from %s", settings["scorer"], source or "halluguard's defaults")
    return scorer


def score(responses: Sequence[str], records: Sequence[Mapping], sources: Sequence[str]) -> list[float]:
    """One float per response: ``Scorer.score(prompts, responses, meta)`` of each response's settings."""
    if not len(responses) == len(records) == len(sources):
        raise HalluguardError(f"{len(responses)} responses, {len(records)} scoring records and {len(sources)} "
                              "settings sources: give one of each per response")
    out = [0.0] * len(responses)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        groups[source].append(i)
    for source, idx in groups.items():
        scorer = scorer_for(source)
        if getattr(scorer, "name", "") != "rules" and any(not records[i].get("prompt") for i in idx):
            raise HalluguardError("the reward model needs each record's prompt messages, and some records have none; "
                                  "re-export with `halluguard export-rl`")
        prompts = [list(records[i].get("prompt") or []) for i in idx]
        values = scorer.score(prompts, [str(responses[i]) for i in idx], [meta_of(records[i]) for i in idx])
        for i, value in zip(idx, values.tolist()):
            out[i] = float(value)
    return out
