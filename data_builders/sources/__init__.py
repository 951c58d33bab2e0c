"""Knowledge-base and question loaders, one module per format, chosen by ``kb.format``.

Every loader module exposes ``load(kb_cfg) -> (passages, questions)`` returning
:class:`halluguard.kb.Passage` and :class:`halluguard.kb.Question` records, and raises
:class:`halluguard.errors.HalluguardError` naming the file (and line or record) on bad input.
"""

from __future__ import annotations

import importlib

from halluguard.errors import ConfigError, did_you_mean
from halluguard.kb import Passage, Question

# format name -> module (imported on use, so one broken optional loader cannot break the others)
FORMATS = {
    "jsonl": "data_builders.sources.jsonl",
    "squad2": "data_builders.sources.squad2",
    "halueval": "data_builders.sources.halueval",
    "selfaware": "data_builders.sources.selfaware",
    "textdir": "data_builders.sources.textdir",
}


def load_kb(kb_cfg, seed: int = 0) -> tuple[list[Passage], list[Question]]:
    """Passages and (possibly no) questions for the ``kb`` config group, with
    ``kb.unindexed_fraction`` of the passages left out (their questions become out-of-knowledge)."""
    module = FORMATS.get(kb_cfg.format)
    if module is None:
        raise ConfigError(f"config key 'kb.format': unknown format '{kb_cfg.format}'"
                          f"{did_you_mean(kb_cfg.format, FORMATS)}; known: {', '.join(FORMATS)}")
    passages, questions = importlib.import_module(module).load(kb_cfg)
    fraction = float(kb_cfg.get("unindexed_fraction", 0.0) or 0.0)
    if fraction and passages:
        from data_builders.unindexed import leave_out_of_index

        passages, questions, _ = leave_out_of_index(passages, questions, fraction,
                                                    str(kb_cfg.get("unindexed_by", "passage")), seed)
    return passages, questions
