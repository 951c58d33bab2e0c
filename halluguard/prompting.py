"""The one prompt builder. Every stage (build, sft, reward, ppo, eval, ask) renders prompts here,
so a model is trained and judged on exactly the text it will see in use.

RAG mode: system instruction, then the retrieved passages (numbered, with their titles), then the
question. Closed-book mode: system instruction and the question alone.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from halluguard.kb import Passage
from halluguard.language import check_language, detect_language, localized

# The prompt's fixed words, per language (the system message is config: prompt.system).
_LABELS = {
    "en": {"passages": "Passages:", "question": "Question: ", "none": "(no passages found)", "cut": " ..."},
    "zh": {"passages": "资料：", "question": "问题：", "none": "（没有检索到资料）", "cut": "……"},
}


def prompt_language(question: str, prompt_cfg, language: Optional[str] = None) -> str:
    """``language`` when given, else ``prompt.language`` (``auto``: the question's own language)."""
    setting = language or str(getattr(prompt_cfg, "language", None) or "auto")
    if setting == "auto":
        return detect_language(question)
    return check_language(setting, "config key 'prompt.language'")


def user_message(question: str, passages: Sequence[Passage], prompt_cfg, language: Optional[str] = None) -> str:
    labels = _LABELS[prompt_language(question, prompt_cfg, language)]
    mode = str(getattr(prompt_cfg.mode, "value", prompt_cfg.mode))
    if mode == "closed_book":
        return f"{labels['question']}{question.strip()}"
    limit = int(prompt_cfg.max_passage_chars)
    blocks = []
    for i, p in enumerate(list(passages)[: int(prompt_cfg.passages)], start=1):
        text = p.text if len(p.text) <= limit else p.text[:limit].rsplit(" ", 1)[0] + labels["cut"]
        head = f"[{i}] {p.title}" if p.title else f"[{i}]"
        blocks.append(f"{head}\n{text}")
    context = "\n\n".join(blocks) if blocks else labels["none"]
    return f"{labels['passages']}\n{context}\n\n{labels['question']}{question.strip()}"


def build_messages(question: str, passages: Sequence[Passage], prompt_cfg,
                   language: Optional[str] = None) -> list[dict[str, str]]:
    """System message (in the prompt's language) and the user message with the passages and the question."""
    lang = prompt_language(question, prompt_cfg, language)
    messages = []
    system = localized(prompt_cfg.system, lang, "prompt.system")
    if system:
        messages.append({"role": "system", "content": system.strip()})
    messages.append({"role": "user", "content": user_message(question, passages, prompt_cfg, lang)})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat-formatted prompt string, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: a plain transcript with the same structure.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"
