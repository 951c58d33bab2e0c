"""Answer questions with retrieval: search the index, build the prompt, generate, keep the evidence."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from halluguard.generation import generate
from halluguard.kb import Question
from halluguard.prompting import build_messages, render_prompt


@dataclass
class AnswerRecord:
    question_id: str
    question: str
    label: str | None
    kind: str
    gold: list[str]
    answer: str
    evidence: list[dict[str, Any]] = field(default_factory=list)  # {"id", "title", "score"}

    def to_dict(self) -> dict:
        return asdict(self)


def answer_questions(model, tokenizer, kb_index, encoder, questions: Sequence[Question], prompt_cfg,
                     max_new_tokens: int = 64, batch_size: int = 8) -> list[AnswerRecord]:
    if not questions:
        return []
    mode = str(getattr(prompt_cfg.mode, "value", prompt_cfg.mode))
    k = int(prompt_cfg.passages)
    hits = kb_index.search([q.question for q in questions], encoder, k) if mode == "rag" else [[] for _ in questions]
    prompts = [render_prompt(tokenizer, build_messages(q.question, [h.passage for h in hs], prompt_cfg,
                                                       retrieval_score=max((h.score for h in hs), default=0.0)))
               for q, hs in zip(questions, hits)]
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       progress=True, desc="answering")
    return [
        AnswerRecord(question_id=q.id, question=q.question, label=q.label, kind=q.kind, gold=list(q.answers),
                     answer=a, evidence=[{"id": h.passage.id, "title": h.passage.title, "score": round(h.score, 4)}
                                         for h in hs])
        for q, hs, a in zip(questions, hits, answers)
    ]


def format_answer(rec: AnswerRecord, width: int = 100) -> str:
    tag = {"ik": "IN-KNOWLEDGE", "ook": "OUT-OF-KNOWLEDGE"}.get(rec.label or "", "UNLABELLED")
    lines = [f"\n[{tag}{' / ' + rec.kind if rec.kind else ''}] {rec.question}"]
    for i, ev in enumerate(rec.evidence, start=1):
        lines.append(f"   retrieved {i}: {ev['score']:.3f}  {ev['id']}  {ev['title']}")
    if rec.gold:
        lines.append(f"   gold: {' | '.join(rec.gold)}")
    lines.append(textwrap.fill(rec.answer or "(empty)", width=width, initial_indent="   model: ",
                               subsequent_indent="          "))
    return "\n".join(lines)
