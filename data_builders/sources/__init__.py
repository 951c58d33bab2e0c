"""Knowledge-base and question loaders, one module per format, chosen by ``kb.format``."""

from __future__ import annotations

from pathlib import Path

from halluguard.errors import ConfigError, did_you_mean
from halluguard.kb import Passage, Question

from data_builders.sources import jsonl

FORMATS = {"jsonl": jsonl}


def load_kb(kb_cfg) -> tuple[list[Passage], list[Question]]:
    """Passages and (possibly no) questions for the ``kb`` config group."""
    loader = FORMATS.get(kb_cfg.format)
    if loader is None:
        raise ConfigError(f"config key 'kb.format': unknown format '{kb_cfg.format}'"
                          f"{did_you_mean(kb_cfg.format, FORMATS)}; known: {', '.join(FORMATS)}")
    return loader.load(Path(kb_cfg.passages), Path(kb_cfg.questions) if kb_cfg.questions else None)
