"""Evaluation of abstention: the metrics the literature uses, with intervals and paired tests.

Input is one :class:`Outcome` per (model, question). The public API, importable from here:

- ``Outcome(question_id, should_abstain, refused, refusal_score=None, correct=None, em=None,
  f1=None, kind=None, context_holds_answer=None)``: one model's behaviour on one question;
- ``exact_match(prediction, golds) -> float | None`` and ``token_f1(prediction, golds) -> float | None``:
  SQuAD answer matching, None without gold answers (:mod:`.answer_match`);
- ``METRICS`` (name -> :class:`Metric`, each with ``direction``, ``definition``, ``source`` and
  ``__call__(outcomes, reference=None) -> float | None``) and ``get_metric(name)``; the table of
  metrics, their directions, definitions and papers is in :mod:`.metrics`;
- ``summarize(outcomes, reference=None, ci=True, n_boot=1000, seed=0, alpha=0.05) -> dict``,
  ``by_kind(outcomes, reference=None, ci=False, ...) -> dict`` and
  ``compare(before, after, reference=None, ci=True, n_boot=1000, seed=0, alpha=0.05) -> dict``
  (:mod:`.summary`);
- ``bootstrap_ci(outcomes, metric, n=1000, seed=0, alpha=0.05, reference=None)``,
  ``paired_bootstrap_diff(before, after, metric, ...)``, ``mcnemar(before, after)`` and
  ``mann_whitney_auc(scores, positives)`` (:mod:`.stats`);
- ``sign_flip_p_value(diffs, permutations=10000, seed=0)``: the paired permutation test of the sampled
  refusal rates (:mod:`.sampled_refusal`, the ``eval.sampled`` section).

Names resolve lazily so that importing the package (e.g. from the CLI) loads nothing else.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Outcome": "outcomes",
    "exact_match": "answer_match",
    "token_f1": "answer_match",
    "normalize_answer": "answer_match",
    "METRICS": "metrics",
    "Metric": "metrics",
    "get_metric": "metrics",
    "summarize": "summary",
    "by_kind": "summary",
    "compare": "summary",
    "bootstrap_ci": "stats",
    "paired_bootstrap_diff": "stats",
    "mcnemar": "stats",
    "mann_whitney_auc": "stats",
    "sign_flip_p_value": "sampled_refusal",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
