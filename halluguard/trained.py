"""The trained policy of an experiment, for the commands that use it (``halluguard export``, ``halluguard ask``).

Which one (``auto``: ppo when its stage finished, else sft), where its weights are and what it was made of.
The weights are found and loaded exactly as the evaluation finds and loads them
(:func:`halluguard.evaluation.models.resolve_source` and :func:`~halluguard.evaluation.models.load_model`):
the SFT reference is a merged folder, ``ppo``/``dpo``/``grpo`` a PEFT adapter merged onto the model it was
trained from (the SFT reference with ``ppo.start=sft``, the base model with ``ppo.start=base``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from halluguard.config import TRAINED_POLICY_CHOICES as CHOICES  # auto, sft, ppo, dpo, grpo
from halluguard.errors import HalluguardError

AUTO_ORDER = ("ppo", "sft")
"""``auto``: the first of these whose stage finished (its ``manifest.json`` exists)."""


def train_command(cfg, name: str) -> str:
    """The command that produces policy ``name`` for ``cfg.exp``."""
    exp = cfg.exp
    if name == "sft":
        return f"halluguard sft exp={exp}"
    if name == "ppo":
        return f"halluguard ppo exp={exp}"
    return f"halluguard ppo ppo.algo={name} exp={exp}"


def missing_message(cfg, name: str) -> str:
    from halluguard.config import stage_dir

    folder = stage_dir(cfg, name)
    state = "does not exist" if not folder.exists() else "holds no manifest.json (the stage did not finish)"
    needs = ""
    if name != "sft":
        needs = (f" (with the default ppo.start=sft it needs the SFT reference first: `halluguard sft exp={cfg.exp}`;"
                 f" `halluguard run exp={cfg.exp}` runs the whole chain)")
    return (f"no {name} policy for experiment '{cfg.exp}': {folder} {state}. "
            f"Run `{train_command(cfg, name)}` first{needs}")


def pick_policy(cfg, wanted: str, key: str) -> tuple[Optional[str], str]:
    """``(name, why)``: the policy ``wanted`` (``auto`` or a name) resolves to, and a sentence saying why.

    ``auto`` with no trained stage gives ``(None, why)``; an explicit name whose stage did not finish raises.
    """
    from halluguard.config import stage_dir
    from halluguard.evaluation.models import stage_exists

    wanted = str(wanted)
    if wanted not in CHOICES:
        raise HalluguardError(f"config key '{key}' must be one of {', '.join(CHOICES)}, got '{wanted}'")
    if wanted != "auto":
        if not stage_exists(cfg, wanted):
            raise HalluguardError(missing_message(cfg, wanted))
        return wanted, f"{key}={wanted}"
    for name in AUTO_ORDER:
        if stage_exists(cfg, name):
            if name == "ppo":
                return name, f"{key}=auto: ppo ({stage_dir(cfg, 'ppo')} exists)"
            return name, (f"{key}=auto: sft, the SFT reference (no finished ppo stage at "
                          f"{stage_dir(cfg, 'ppo')})")
    folders = " nor ".join(str(stage_dir(cfg, n)) for n in AUTO_ORDER)
    return None, (f"experiment '{cfg.exp}' has no trained policy: neither {folders} holds a finished stage "
                  f"(manifest.json). Train one with `halluguard run exp={cfg.exp}` (or `{train_command(cfg, 'sft')}`)")


def policy_source(cfg, name: str):
    """Where policy ``name``'s weights are (:class:`~halluguard.evaluation.models.PolicySource`); a missing or
    broken stage output is a :class:`HalluguardError` naming the folder and the command that makes it."""
    from halluguard.config import stage_dir
    from halluguard.evaluation.models import resolve_source

    try:
        return resolve_source(cfg, name)
    except HalluguardError as exc:
        raise HalluguardError(f"the {name} policy of experiment '{cfg.exp}' ({stage_dir(cfg, name)}) cannot be "
                              f"used: {str(exc).rstrip('.')}. Re-run `{train_command(cfg, name)}`") from None


def load_quietly(source, cfg, device: str):
    """:func:`halluguard.evaluation.models.load_model` (how eval loads a policy: adapter merged, padding set),
    without the library deprecation warnings a PEFT merge prints."""
    import warnings

    from halluguard.evaluation.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return load_model(source, cfg, device)


@dataclass
class Lineage:
    """What a trained policy was made of, read from its stage's manifest."""

    policy: str
    description: str
    stages: list[str]
    """The training stages merged into its weights, in order (``["sft", "ppo"]``, or ``["ppo"]`` from the base)."""
    base_model: Optional[str]
    """``model.name_or_path`` the chain started from."""
    start: Optional[str]
    """``ppo.start`` of an adapter stage (``sft`` or ``base``); None for sft."""
    weights: dict = field(default_factory=dict)
    """The :class:`PolicySource` loaded: ``base`` folder and ``adapter`` folder (or None)."""
    stage_manifest: str = ""
    stage_created: Optional[str] = None
    finetune: Optional[str] = None
    """``sft.finetune`` (``lora`` or ``full``) when the SFT stage is part of it."""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @property
    def chain(self) -> str:
        return " -> ".join(self.stages)


def lineage(cfg, name: str, source) -> Lineage:
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir
    from halluguard.evaluation.models import DESCRIPTIONS

    manifest = Manifest.load(stage_dir(cfg, name))
    conf = manifest.config or {}
    base_model = (conf.get("model") or {}).get("name_or_path")
    start = None
    if name == "sft":
        stages = ["sft"]
    else:
        start = (conf.get("ppo") or {}).get("start")
        stages = ["sft", name] if start == "sft" else [name]
    finetune = None
    if "sft" in stages:
        sft_conf = conf if name == "sft" else _stage_config(cfg, "sft")
        finetune = (sft_conf.get("sft") or {}).get("finetune")
    return Lineage(policy=name, description=DESCRIPTIONS[name], stages=stages, base_model=base_model, start=start,
                   weights=source.to_dict(), stage_manifest=str(manifest.path), stage_created=manifest.created,
                   finetune=finetune)


def _stage_config(cfg, stage: str) -> dict:
    from halluguard.artifacts import Manifest
    from halluguard.config import stage_dir

    try:
        return Manifest.load(stage_dir(cfg, stage)).config or {}
    except HalluguardError:
        return {}


def eval_results(cfg) -> tuple[Optional[dict], Optional[Path], Optional[str]]:
    """``(results, path, created)`` of the experiment's evaluation, or ``(None, path, None)`` when it has not run."""
    import json

    from halluguard.artifacts import MANIFEST
    from halluguard.config import stage_dir

    folder = stage_dir(cfg, "eval")
    path = folder / "results.json"
    if not path.is_file():
        return None, path, None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None, path, None
    created = results.get("created")
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            created = json.loads(manifest.read_text(encoding="utf-8")).get("created", created)
        except json.JSONDecodeError:
            pass
    return results, path, created


def older(a: Optional[str], b: Optional[str]) -> bool:
    """Whether ISO timestamp ``a`` is before ``b`` (False when either is unknown)."""
    try:
        return _dt.datetime.fromisoformat(str(a)) < _dt.datetime.fromisoformat(str(b))
    except (TypeError, ValueError):
        return False
