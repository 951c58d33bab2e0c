"""halluguard's reward as veRL's custom reward function.

Point veRL at this file, with the parquet files of ``halluguard export-rl export_rl.format=verl``::

    python3 -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=<this file> custom_reward_function.name=compute_score

or, with veRL's batch reward manager (one scorer call per batch instead of per response: the refusal detector
encodes the whole batch at once), ``reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch``.

veRL loads this file by path, so halluguard must be installed in veRL's Python environment. Each row's
``reward_model.ground_truth`` is halluguard's scoring record (:mod:`~halluguard.integrations.reward_bridge`);
``extra_info["scorer_config"]`` may name other scorer settings for that row (a ``scorer.json``, or a
``runs/<exp>/reward`` folder for the hybrid scorer), and ``$HALLUGUARD_SCORER`` overrides both.

The signatures follow veRL's documentation and reward managers: a custom function takes ``data_source``,
``solution_str``, ``ground_truth`` and ``extra_info`` and returns the score
(https://github.com/volcengine/verl/blob/main/docs/preparation/reward_function.rst, "Customized"); the batch
manager passes ``data_sources``, ``solution_strs``, ``ground_truths`` and ``extra_infos`` as keywords and takes a
list back (verl/workers/reward_manager/batch.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from halluguard.integrations.reward_bridge import clean_response, read_record, resolve_source, score


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[Mapping] = None,
                  **kwargs) -> float:
    """halluguard's score of one response (higher is better): the refusal/answer rule terms, plus the reward model
    when the settings say ``rm`` or ``hybrid``."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Optional[Sequence[Optional[Mapping]]] = None, **kwargs) -> list[float]:
    """:func:`compute_score` for a whole batch (veRL's ``reward_model.reward_manager=batch``)."""
    n = len(solution_strs)
    extras = list(extra_infos) if extra_infos is not None else [None] * n
    records = [read_record(g, where=f"reward_model.ground_truth of row {i}") for i, g in enumerate(ground_truths)]
    sources = [resolve_source(_row_setting(extras[i]) or records[i].get("scorer_config")) for i in range(n)]
    return score([clean_response(s) for s in solution_strs], records, sources)


def _row_setting(extra_info: Optional[Mapping]) -> Optional[str]:
    if isinstance(extra_info, Mapping):
        value = extra_info.get("scorer_config")
        return str(value) if value else None
    return None
