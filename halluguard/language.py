"""Which language a text is in, for the parts of halluguard that speak one.

Builders' templates, prompt templates and the refusal detector's patterns exist per language.
A config says ``en``, ``zh`` or ``auto``; ``auto`` is resolved here from the text itself.

Detection is deliberately simple: the share of CJK ideographs among the letters of a text. That
separates Chinese from English reliably (a Chinese sentence is mostly ideographs even when it
names "5G" or "eSIM"; an English one has none), needs no model, and is the same on every machine.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from halluguard.errors import HalluguardError, did_you_mean

SUPPORTED_LANGUAGES = ("en", "zh")
LANGUAGE_SETTINGS = SUPPORTED_LANGUAGES + ("auto",)
# A text is Chinese when at least this share of its letters are CJK ideographs. Chinese customer-service
# text that names products ("Flex 20 套餐支持 5G 网络") stays far above it; English text has none.
ZH_MIN_SHARE = 0.3


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF
            or 0xF900 <= o <= 0xFAFF)


def cjk_share(text: str) -> float:
    """CJK ideographs / (ideographs + other letters) in ``text``; 0.0 for a text without letters."""
    cjk = letters = 0
    for ch in text:
        if _is_cjk(ch):
            cjk += 1
            letters += 1
        elif ch.isalpha():
            letters += 1
    return cjk / letters if letters else 0.0


def detect_language(text: str) -> str:
    """``zh`` or ``en`` (the default for text with no letters, or in any other script)."""
    return "zh" if cjk_share(text or "") >= ZH_MIN_SHARE else "en"


def count_languages(texts: Iterable[str]) -> dict[str, int]:
    """How many of ``texts`` are in each language, most common first."""
    return dict(Counter(detect_language(t) for t in texts).most_common())


def check_language(language: str, where: str) -> str:
    """``language`` itself when it is supported, else an error naming ``where`` and the choices."""
    if language not in SUPPORTED_LANGUAGES:
        raise HalluguardError(f"{where}: no templates for language '{language}'"
                              f"{did_you_mean(language, SUPPORTED_LANGUAGES)}; available: "
                              f"{', '.join(SUPPORTED_LANGUAGES)} (or 'auto' to detect it from the text)")
    return language


def resolve_language(setting: str, texts: Iterable[str], where: str) -> str:
    """The language a config setting means: itself, or for ``auto`` the most common language of ``texts``."""
    if setting != "auto":
        return check_language(setting, where)
    counts = count_languages(texts)
    return next(iter(counts), "en")


# Full-width punctuation of Chinese text: answer matching drops it like ASCII punctuation.
CJK_PUNCTUATION = frozenset("，。！？；：、（）《》〈〉「」『』【】〔〕“”‘’…—～·｜＂＇")


def has_cjk(text: str) -> bool:
    return any(_is_cjk(ch) for ch in text)


def _open_boundary(ch: str) -> bool:
    # Chinese has no spaces between words, so an ideograph next to a match is a boundary.
    return ch == " " or _is_cjk(ch)


def contains_phrase(haystack: str, needle: str) -> bool:
    """``needle`` occurs in ``haystack`` (both normalised) on token boundaries.

    A boundary is a space, either end, or a CJK ideograph next to the match: "39元" is found in
    "月租39元包含" but not in "月租139元", and English keeps whole-word matching ("6" is not in "699").
    """
    if not needle:
        return False
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        left_ok = start == 0 or _open_boundary(haystack[start - 1]) or _is_cjk(needle[0])
        right_ok = end == len(haystack) or _open_boundary(haystack[end]) or _is_cjk(needle[-1])
        if left_ok and right_ok:
            return True
        start = haystack.find(needle, start + 1)
    return False


def mixed_tokens(text: str) -> list[str]:
    """Whitespace tokens, with every CJK ideograph a token of its own.

    The "mixed segmentation" used to score Chinese reading comprehension (Cui et al., 2019, "A
    Span-Extraction Dataset for Chinese Machine Reading Comprehension", CMRC 2018): no word
    segmenter, so scores do not depend on one.
    """
    out: list[str] = []
    for word in text.split():
        buf = ""
        for ch in word:
            if _is_cjk(ch):
                if buf:
                    out.append(buf)
                    buf = ""
                out.append(ch)
            else:
                buf += ch
        if buf:
            out.append(buf)
    return out


def localized(value: Any, language: str, key: str) -> str:
    """A config text in one language. A plain string serves every language; a mapping such as
    ``{en: "...", zh: "..."}`` gives one text per language, and a language it lacks is an error
    that names the key and the languages it has."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    mapping = {str(k): v for k, v in dict(value).items()}
    if language not in mapping:
        raise HalluguardError(f"config key '{key}' has no text for language '{language}'; it has: "
                              f"{', '.join(mapping) or 'none'}. Add '{key}.{language}' or write one string for "
                              "every language")
    return str(mapping[language])


def check_localized(value: Any, key: str) -> None:
    """A config text is a string, or a mapping from supported languages to strings."""
    if value is None or isinstance(value, str):
        return
    try:
        items = dict(value).items()
    except (TypeError, ValueError):
        raise HalluguardError(f"config key '{key}' must be a string or a mapping from language to string, "
                              f"got {type(value).__name__}") from None
    for lang, text in items:
        check_language(str(lang), f"config key '{key}.{lang}'")
        if not isinstance(text, str):
            raise HalluguardError(f"config key '{key}.{lang}' must be a string, got {type(text).__name__}")
