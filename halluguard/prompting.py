"""The one prompt builder. Every stage (build, sft, reward, ppo, eval, ask) renders prompts here,
so a model is trained and judged on exactly the text it will see in use.

RAG mode: system instruction, then the retrieved passages (numbered, with their titles), then the
question. Closed-book mode: system instruction and the question alone.
"""

from __future__ import annotations

from typing import Any, Sequence

from halluguard.kb import Passage


def user_message(question: str, passages: Sequence[Passage], prompt_cfg) -> str:
    mode = str(getattr(prompt_cfg.mode, "value", prompt_cfg.mode))
    if mode == "closed_book":
        return f"Question: {question.strip()}"
    limit = int(prompt_cfg.max_passage_chars)
    blocks = []
    for i, p in enumerate(list(passages)[: int(prompt_cfg.passages)], start=1):
        text = p.text if len(p.text) <= limit else p.text[:limit].rsplit(" ", 1)[0] + " ..."
        head = f"[{i}] {p.title}" if p.title else f"[{i}]"
        blocks.append(f"{head}\n{text}")
    context = "\n\n".join(blocks) if blocks else "(no passages found)"
    return f"Passages:\n{context}\n\nQuestion: {question.strip()}"


def build_messages(question: str, passages: Sequence[Passage], prompt_cfg) -> list[dict[str, str]]:
    messages = []
    if prompt_cfg.system:
        messages.append({"role": "system", "content": str(prompt_cfg.system).strip()})
    messages.append({"role": "user", "content": user_message(question, passages, prompt_cfg)})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat-formatted prompt string, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: a plain transcript with the same structure.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"
