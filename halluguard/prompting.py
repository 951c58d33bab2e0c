"""The one prompt builder. Every stage (build, sft, reward, ppo, eval, ask) renders prompts here,
so a model is trained and judged on exactly the text it will see in use.

RAG mode: system instruction, then the retrieved passages (numbered, with their titles), then the
question. Closed-book mode: system instruction and the question alone.

``prompt.retrieval_hint``: the user message also states how well the shown passages match the question
(the highest cosine similarity between the question and a shown passage, the retrieval gate's input), so
the model can learn from the gate's signal instead of having it applied beside it. Every caller then
passes that similarity (``retrieval_score``); the build stores it per case.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from halluguard.errors import HalluguardError
from halluguard.kb import Passage
from halluguard.language import check_language, detect_language, localized

# The prompt's fixed words, per language (the system message is config: prompt.system).
_LABELS = {
    "en": {"passages": "Passages:", "question": "Question: ", "none": "(no passages found)", "cut": " ...",
           "hint": "Retrieval match: {level} (similarity {score:.2f})", "strong": "strong", "weak": "weak"},
    "zh": {"passages": "资料：", "question": "问题：", "none": "（没有检索到资料）", "cut": "……",
           "hint": "检索匹配度：{level}（相似度 {score:.2f}）", "strong": "强", "weak": "弱"},
}


def prompt_language(question: str, prompt_cfg, language: Optional[str] = None) -> str:
    """``language`` when given, else ``prompt.language`` (``auto``: the question's own language)."""
    setting = language or str(getattr(prompt_cfg, "language", None) or "auto")
    if setting == "auto":
        return detect_language(question)
    return check_language(setting, "config key 'prompt.language'")


def wants_retrieval_score(prompt_cfg) -> bool:
    """Whether prompts under ``prompt_cfg`` state the retrieval match (callers must pass ``retrieval_score``)."""
    mode = str(getattr(prompt_cfg.mode, "value", prompt_cfg.mode))
    return mode == "rag" and bool(getattr(prompt_cfg, "retrieval_hint", False))


def retrieval_hint(score: float, prompt_cfg, language: str) -> str:
    """The line that tells the model how well retrieval matched: a level (against ``prompt.hint_threshold``)
    and the similarity itself, two decimals, so nearby scores read alike."""
    labels = _LABELS[language]
    level = labels["strong"] if float(score) >= float(prompt_cfg.hint_threshold) else labels["weak"]
    return labels["hint"].format(level=level, score=float(score))


def user_message(question: str, passages: Sequence[Passage], prompt_cfg, language: Optional[str] = None,
                 retrieval_score: Optional[float] = None) -> str:
    lang = prompt_language(question, prompt_cfg, language)
    labels = _LABELS[lang]
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
    hint = ""
    if wants_retrieval_score(prompt_cfg):
        if retrieval_score is None:
            raise HalluguardError("prompt.retrieval_hint is on but no retrieval similarity was given for the "
                                  f"question {question.strip()[:60]!r}: pass retrieval_score (the highest cosine "
                                  "between the question and a shown passage), or set prompt.retrieval_hint=false")
        hint = retrieval_hint(retrieval_score, prompt_cfg, lang) + "\n\n"
    return f"{labels['passages']}\n{context}\n\n{hint}{labels['question']}{question.strip()}"


def build_messages(question: str, passages: Sequence[Passage], prompt_cfg,
                   language: Optional[str] = None, retrieval_score: Optional[float] = None) -> list[dict[str, str]]:
    """System message (in the prompt's language) and the user message with the passages and the question
    (and the retrieval match, with ``prompt.retrieval_hint``)."""
    lang = prompt_language(question, prompt_cfg, language)
    messages = []
    system = localized(prompt_cfg.system, lang, "prompt.system")
    if system:
        messages.append({"role": "system", "content": system.strip()})
    messages.append({"role": "user", "content": user_message(question, passages, prompt_cfg, lang, retrieval_score)})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat-formatted prompt string, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: a plain transcript with the same structure.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"
