"""One model's behaviour on one question (:class:`Outcome`), and those outcomes as numpy columns.

The metrics and the bootstrap work on :class:`OutcomeTable`: resampling questions is then one
fancy index per column instead of rebuilding Python objects a thousand times.

Conventions every metric relies on:

- a refusal is never a correct answer, whatever ``correct``/``em``/``f1`` say (its EM and F1
  count as 0);
- answering a should-abstain (OOK) question is always wrong: there is nothing right to say;
- ``correct is None`` on an in-knowledge question means "no gold answers, cannot be judged":
  such questions are left out of every accuracy-type metric (never counted as wrong), and an
  accuracy metric with nothing left to judge is None ("n/a"). Judge every IK question that has
  gold answers, refused or not, so that leaving the others out does not depend on the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

from halluguard.errors import HalluguardError

# Verdict codes, one per question: what the model's response amounts to.
REFUSED, CORRECT, WRONG, UNJUDGED = 0, 1, 2, 3

# Reference-model knowledge codes ("Alignment for Honesty": known = the reference answered correctly).
UNKNOWN, KNOWN, UNDETERMINED = 0, 1, -1


@dataclass(frozen=True)
class Outcome:
    """What one model did on one question.

    question_id: unique within one model's outcomes; pairs models and the reference.
    should_abstain: the question is out of knowledge (OOK): the right behaviour is to refuse.
    refused: the shared refusal detector called the response a refusal.
    refusal_score: the detector's refusal probability (for the AUC); None when not available.
    correct: for IK questions, whether the answer is right; None when there are no gold answers.
    em, f1: SQuAD exact match and token F1 of the response against the gold answers, in [0, 1];
        None without gold answers (see :mod:`halluguard.evaluation.answer_match`).
    kind: the question kind (in_knowledge, off_topic, uncovered, false_premise, unknowable, ...);
        None when the set has no kinds.
    context_holds_answer: for IK questions, whether the retrieved context holds the gold answer;
        None when unknown (closed-book sets).
    """

    question_id: str
    should_abstain: bool
    refused: bool
    refusal_score: float | None = None
    correct: bool | None = None
    em: float | None = None
    f1: float | None = None
    kind: str | None = None
    context_holds_answer: bool | None = None

    def __post_init__(self) -> None:
        where = f"outcome for question {self.question_id!r}"
        if not isinstance(self.question_id, str) or not self.question_id:
            raise HalluguardError(f"an outcome needs a non-empty string question_id, got {self.question_id!r}")
        for name in ("should_abstain", "refused"):
            if not _is_bool(getattr(self, name)):
                raise HalluguardError(f"{where}: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("correct", "context_holds_answer"):
            value = getattr(self, name)
            if value is not None and not _is_bool(value):
                raise HalluguardError(f"{where}: {name} must be True, False or None, got {value!r}")
        if self.refusal_score is not None and not _is_finite_number(self.refusal_score):
            raise HalluguardError(f"{where}: refusal_score must be a finite number or None, "
                                  f"got {self.refusal_score!r}")
        for name in ("em", "f1"):
            value = getattr(self, name)
            if value is not None and not (_is_finite_number(value) and 0.0 <= value <= 1.0):
                raise HalluguardError(f"{where}: {name} must be a number in [0, 1] or None, got {value!r}")
        if self.kind is not None and not isinstance(self.kind, str):
            raise HalluguardError(f"{where}: kind must be a string or None, got {self.kind!r}")

    @property
    def verdict(self) -> int:
        """REFUSED, CORRECT, WRONG or UNJUDGED (answered an IK question that has no gold answers)."""
        if self.refused:
            return REFUSED
        if self.should_abstain:
            return WRONG
        if self.correct is None:
            return UNJUDGED
        return CORRECT if self.correct else WRONG


@dataclass(frozen=True)
class OutcomeTable:
    """Outcomes as aligned numpy columns (one row per question), optionally with the reference's knowledge.

    ``judged`` marks the questions an accuracy-type metric may count: every OOK question, and the
    IK questions with a correctness judgement. ``reference`` holds KNOWN / UNKNOWN / UNDETERMINED
    per question, or is None when no reference model was given.
    """

    should_abstain: np.ndarray
    refused: np.ndarray
    verdict: np.ndarray
    judged: np.ndarray
    refusal_score: np.ndarray
    em: np.ndarray
    f1: np.ndarray
    context_holds_answer: np.ndarray
    kind: np.ndarray
    reference: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.should_abstain)

    def take(self, rows: np.ndarray) -> OutcomeTable:
        """The table restricted to (or resampled at) ``rows``: an index array or a boolean mask."""
        return OutcomeTable(
            should_abstain=self.should_abstain[rows], refused=self.refused[rows],
            verdict=self.verdict[rows], judged=self.judged[rows],
            refusal_score=self.refusal_score[rows], em=self.em[rows], f1=self.f1[rows],
            context_holds_answer=self.context_holds_answer[rows], kind=self.kind[rows],
            reference=None if self.reference is None else self.reference[rows])


def build_table(outcomes: Sequence[Outcome], reference: Sequence[Outcome] | None = None) -> OutcomeTable:
    """Check ``outcomes`` (and ``reference``, matched by question_id) and lay them out as columns."""
    outcomes = _checked_outcomes(outcomes, "outcomes")
    return OutcomeTable(
        should_abstain=np.array([o.should_abstain for o in outcomes], dtype=bool),
        refused=np.array([o.refused for o in outcomes], dtype=bool),
        verdict=np.array([o.verdict for o in outcomes], dtype=np.int8),
        judged=np.array([o.should_abstain or o.correct is not None for o in outcomes], dtype=bool),
        refusal_score=_floats([o.refusal_score for o in outcomes]),
        em=_floats([o.em for o in outcomes]),
        f1=_floats([o.f1 for o in outcomes]),
        context_holds_answer=np.array([_tristate(o.context_holds_answer) for o in outcomes], dtype=np.int8),
        kind=np.array([o.kind for o in outcomes], dtype=object),
        reference=None if reference is None else _reference_knowledge(outcomes, reference))


def match_by_question(first: Sequence[Outcome], second: Sequence[Outcome],
                      first_name: str, second_name: str) -> list[Outcome]:
    """``second``'s outcomes in ``first``'s question order; refuses a missing question or a label clash."""
    second = _checked_outcomes(second, second_name)
    by_id = {o.question_id: o for o in second}
    missing = [o.question_id for o in first if o.question_id not in by_id]
    if missing:
        raise HalluguardError(
            f"{second_name} have no outcome for {len(missing)} of the {len(first)} questions in "
            f"{first_name} (e.g. {', '.join(repr(q) for q in missing[:3])}): run both on the same questions")
    clashes = [o.question_id for o in first if by_id[o.question_id].should_abstain != o.should_abstain]
    if clashes:
        raise HalluguardError(
            f"{first_name} and {second_name} disagree on should_abstain for {len(clashes)} questions "
            f"(e.g. {', '.join(repr(q) for q in clashes[:3])}): they must come from the same question labels")
    return [by_id[o.question_id] for o in first]


def pair_runs(before: Sequence[Outcome], after: Sequence[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """Two runs on exactly the same questions, ``after`` put in ``before``'s order."""
    before, after = list(before), list(after)
    matched = match_by_question(before, after, "before", "after")
    if len(after) != len(before):
        raise HalluguardError(f"after holds {len(after) - len(before)} questions that before lacks: "
                              "compare the two runs on the same questions")
    return before, matched


def _reference_knowledge(outcomes: list[Outcome], reference: Sequence[Outcome]) -> np.ndarray:
    matched = match_by_question(outcomes, reference, "outcomes", "reference outcomes")
    return np.array([_knowledge(r) for r in matched], dtype=np.int8)


def _knowledge(reference: Outcome) -> int:
    # OOK questions are unknown by construction; an IK question the reference was not judged on
    # (no gold answers) cannot be placed on either side.
    if reference.should_abstain:
        return UNKNOWN
    if reference.correct is None:
        return UNDETERMINED
    return KNOWN if reference.verdict == CORRECT else UNKNOWN


def _checked_outcomes(outcomes: Sequence[Outcome], name: str) -> list[Outcome]:
    outcomes = list(outcomes)
    for item in outcomes:
        if not isinstance(item, Outcome):
            raise HalluguardError(f"{name} must be Outcome records, got a {type(item).__name__}")
    seen: set[str] = set()
    duplicates = [o.question_id for o in outcomes if o.question_id in seen or seen.add(o.question_id)]
    if duplicates:
        raise HalluguardError(f"{name} hold {len(duplicates)} repeated question ids "
                              f"(e.g. {duplicates[0]!r}): one outcome per question and model")
    return outcomes


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _tristate(value: bool | None) -> int:
    return -1 if value is None else int(value)


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value) \
        and math.isfinite(float(value))
