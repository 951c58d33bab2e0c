"""Answers of every model on the same held-out questions, classified and scored as :class:`Outcome`s.

One policy is loaded at a time and freed before the next. Each generates greedily (by default) in
batches with a progress bar, from the same prompt builder as training; the one refusal detector
calls each response a refusal or an answer; answers to in-knowledge questions are scored against
the gold answers. Model-free baselines decide without text, and a gated model takes the gate's
refusal where the gate fires and its policy's answer elsewhere.

Answer correctness (``correct``): the normalised gold answer appears, as whole words, inside the
normalised response (SQuAD normalisation). Generative answers are sentences, so exact match is
near zero even when right; EM and token F1 are still reported as SQuAD defines them. A refusal is
never correct. Model-free baselines that produce no answer text (``never_refuse``, ``gate``) have
no correctness judgement: their accuracy metrics are "n/a".
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from halluguard.errors import HalluguardError
from halluguard.language import contains_phrase, detect_language, localized
from halluguard.evaluation.answer_match import exact_match, normalize_answer, token_f1
from halluguard.evaluation.heldout import EvalQuestion
from halluguard.evaluation.models import (
    ModelSpec,
    PolicySource,
    Unavailable,
    load_model,
    resolve_source,
)
from halluguard.evaluation.outcomes import Outcome

log = logging.getLogger(__name__)

OK, UNAVAILABLE, FAILED = "ok", "unavailable", "failed"


@dataclass
class ModelResult:
    """One model's behaviour on every question (lists in question order), or why there is none."""

    spec: ModelSpec
    status: str = OK
    reason: str | None = None
    answers: list[str] = field(default_factory=list)
    refused: list[bool] = field(default_factory=list)
    refusal_scores: list[float | None] = field(default_factory=list)
    em: list[float | None] = field(default_factory=list)
    f1: list[float | None] = field(default_factory=list)
    correct: list[bool | None] = field(default_factory=list)
    gate_refused: list[bool] | None = None  # gated models: where the gate answered for the policy
    source: dict | None = None
    seconds: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def questions_per_s(self) -> float | None:
        if not self.ok or not self.seconds:
            return None
        return round(len(self.answers) / self.seconds, 3)


@dataclass(frozen=True)
class GenerationSettings:
    batch_size: int = 8
    max_new_tokens: int = 64
    greedy: bool = True
    temperature: float = 0.7
    seed: int = 0

    @classmethod
    def from_config(cls, ecfg) -> GenerationSettings:
        return cls(batch_size=int(ecfg.batch_size), max_new_tokens=int(ecfg.max_new_tokens), greedy=bool(ecfg.greedy),
                   temperature=float(ecfg.temperature), seed=int(ecfg.seed))


# ---------------------------------------------------------------- policies

def run_policy(cfg, spec: ModelSpec, questions: Sequence[EvalQuestion], detector, device: str = "cpu",
               settings: GenerationSettings | None = None) -> ModelResult:
    """Load ``spec``'s policy, answer every question, free the model. A missing or broken model gives
    a result whose ``status`` and ``reason`` say why, never an exception."""
    settings = settings or GenerationSettings.from_config(cfg.eval)
    try:
        source = resolve_source(cfg, spec.name)
    except Unavailable as exc:
        return ModelResult(spec, status=UNAVAILABLE, reason=str(exc))
    except HalluguardError as exc:
        return ModelResult(spec, status=FAILED, reason=str(exc))
    start = time.perf_counter()
    try:
        answers = answer_with_policy(source, cfg, questions, settings, device, desc=f"eval {spec.name}")
    except HalluguardError as exc:
        return ModelResult(spec, status=FAILED, reason=str(exc), source=source.to_dict())
    except Exception as exc:  # a broken checkpoint must not stop the other models
        log.exception("model %s failed", spec.name)
        return ModelResult(spec, status=FAILED, reason=f"{type(exc).__name__}: {exc}", source=source.to_dict())
    seconds = time.perf_counter() - start
    return classified(spec, questions, answers, detector, source=source.to_dict(), seconds=seconds)


def answer_with_policy(source: PolicySource, cfg, questions: Sequence[EvalQuestion], settings: GenerationSettings,
                       device: str, desc: str = "eval") -> list[str]:
    """Generated responses to every question, in question order (the model is freed afterwards)."""
    from halluguard.generation import generate
    from halluguard.prompting import render_prompt

    model, tokenizer = load_model(source, cfg, device)
    try:
        prompts = [render_prompt(tokenizer, q.messages_with_system(source.system)) for q in questions]
        temperature = 0.0 if settings.greedy else settings.temperature
        return generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                        batch_size=settings.batch_size, progress=True, desc=desc, temperature=temperature,
                        seed=settings.seed)
    finally:
        del model
        free_memory()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def classified(spec: ModelSpec, questions: Sequence[EvalQuestion], answers: list[str], detector,
               source: dict | None = None, seconds: float | None = None) -> ModelResult:
    """Responses classified by the detector and scored against the gold answers."""
    scores = [float(s) for s in detector.score(answers)] if answers else []
    refused = [bool(r) for r in detector.is_refusal(answers)] if answers else []
    result = ModelResult(spec, answers=list(answers), refused=refused, refusal_scores=scores, source=source,
                         seconds=seconds)
    score_answers(result, questions)
    return result


def score_answers(result: ModelResult, questions: Sequence[EvalQuestion]) -> None:
    """Fill EM, F1 and correctness for in-knowledge questions with gold answers (None elsewhere)."""
    result.em, result.f1, result.correct = [], [], []
    for q, answer, refused in zip(questions, result.answers, result.refused, strict=True):
        if q.should_abstain or not q.answers:
            result.em.append(None), result.f1.append(None), result.correct.append(None)
            continue
        result.em.append(exact_match(answer, q.answers))
        result.f1.append(token_f1(answer, q.answers))
        result.correct.append(not refused and contains_gold(answer, q.answers))


def contains_gold(prediction: str, golds: Sequence[str]) -> bool:
    """Some normalised gold answer appears in the normalised prediction as whole words (in Chinese, where
    words are not spaced, an ideograph next to it counts as a boundary: "39元" is in "月租39元")."""
    predicted = normalize_answer(prediction)
    return any(contains_phrase(predicted, normalize_answer(g)) for g in golds)


# ---------------------------------------------------------------- model-free and gated

def gate_refuses(q: EvalQuestion, max_top1: float) -> bool:
    """The retrieval gate: out of knowledge when the top-1 similarity is below the threshold.
    A question without a similarity (its evidence is not in the index) is let through."""
    return q.gate_top1 is not None and q.gate_top1 < max_top1


def _refusal_in(refusal_text, q: EvalQuestion) -> str:
    """The gate's refusal in the question's language (``eval.gate_refusal`` may hold one per language)."""
    return localized(refusal_text, detect_language(q.question), "eval.gate_refusal")


def model_free(spec: ModelSpec, questions: Sequence[EvalQuestion], max_top1: float, refusal_text) -> ModelResult:
    """``always_refuse``, ``never_refuse`` or ``gate``: decisions by construction, not by the detector.

    The refusal score of the gate is ``1 - top1`` (so its AUC ranks by retrieval similarity); the
    others score 1 (refuse) or 0 (answer). A decision without answer text has no correctness.
    """
    result = ModelResult(spec)
    for q in questions:
        if spec.name == "always_refuse":
            refuse, score = True, 1.0
        elif spec.name == "never_refuse":
            refuse, score = False, 0.0
        else:
            refuse = gate_refuses(q, max_top1)
            score = 1.0 - q.gate_top1 if q.gate_top1 is not None else 0.0
        result.answers.append(_refusal_in(refusal_text, q) if refuse else "")
        result.refused.append(refuse)
        result.refusal_scores.append(score)
        # always_refuse is judged (a refusal is never correct); the others write no answer text, so
        # judging only their refusals would report a meaningless 0: their accuracy is n/a.
        judged = spec.name == "always_refuse" and not q.should_abstain and bool(q.answers)
        result.correct.append(False if judged else None)
        result.em.append(0.0 if judged else None)
        result.f1.append(0.0 if judged else None)
    return result


def gated(spec: ModelSpec, policy: ModelResult, questions: Sequence[EvalQuestion], max_top1: float,
          refusal_text) -> ModelResult:
    """The gate in front of ``policy``: the gate's refusal where it fires, the policy's response elsewhere."""
    if not policy.ok:
        return ModelResult(spec, status=policy.status,
                           reason=f"needs {policy.spec.name}, which did not run: {policy.reason}")
    result = ModelResult(spec, source=policy.source, seconds=policy.seconds, gate_refused=[])
    for i, q in enumerate(questions):
        fires = gate_refuses(q, max_top1)
        result.gate_refused.append(fires)
        result.answers.append(_refusal_in(refusal_text, q) if fires else policy.answers[i])
        result.refused.append(True if fires else policy.refused[i])
        result.refusal_scores.append(1.0 if fires else policy.refusal_scores[i])
        result.em.append(0.0 if fires and policy.em[i] is not None else policy.em[i])
        result.f1.append(0.0 if fires and policy.f1[i] is not None else policy.f1[i])
        result.correct.append(False if fires and policy.correct[i] is not None else policy.correct[i])
    return result


# ---------------------------------------------------------------- outcomes

def attach_outcomes(result: ModelResult, questions: Sequence[EvalQuestion]) -> ModelResult:
    """Fill ``result.outcomes`` (one :class:`Outcome` per question) from its lists."""
    if not result.ok:
        return result
    result.outcomes = [
        Outcome(question_id=q.case_id, should_abstain=q.should_abstain, refused=result.refused[i],
                refusal_score=result.refusal_scores[i], correct=result.correct[i], em=result.em[i],
                f1=result.f1[i], kind=q.kind or None,
                context_holds_answer=None if q.should_abstain else q.evidence_holds_answer)
        for i, q in enumerate(questions)]
    return result
