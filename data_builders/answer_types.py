"""Answer types, value extraction and SQuAD-style answer matching.

The builders need to know *what kind* of value a question asks for (a price, a duration, a name)
to make fabrications that are plausible (same type as the true answer) and to check that a
passage does or does not hold an answer. Everything here is regular expressions: fast, no model,
tuned on the demo handbook's answers (``€9.99``, ``14 days``, ``0800 646 2900``, ``Kestrel K9``)
and on SQuAD-like short answers (years, dates, names, counts).

Types, in the order :func:`answer_type` tries them::

    phone, time, date, percent, money, duration, number, entity, other
"""

from __future__ import annotations

import re
from functools import lru_cache
import string
from typing import Iterable

from halluguard.language import CJK_PUNCTUATION, contains_phrase, has_cjk

TYPES = ("money", "percent", "duration", "time", "date", "number", "phone", "entity", "other")

# ---------------------------------------------------------------- vocabulary

NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "hundred", "thousand", "million",
                "billion", "dozen")
_NUMWORD = r"(?:" + "|".join(NUMBER_WORDS) + r")"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_MONTH = r"(?:" + "|".join(MONTHS) + r")"
_MONTH_NOT_MAY = r"(?:" + "|".join(m for m in MONTHS if m != "May") + r")"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAY = r"(?:" + "|".join(WEEKDAYS) + r")"
_TIME_UNIT = r"(?:seconds?|minutes?|hours?|days?|nights?|weeks?|fortnights?|months?|years?|decades?|centuries|century)"
_NUM = r"\d[\d,]*(?:\.\d+)?"
# Units that make a bare number a quantity (counted by the number type, never names).
UNITS = ("GB", "MB", "TB", "KB", "Mbps", "Gbps", "kbps", "MP", "W", "Wh", "kWh", "mAh", "mm", "cm", "m", "km", "kg", "g",
         "grams", "metres", "meters", "metre", "meter", "inch", "inches", "mph", "km/h", "degrees", "°C", "°F", "Hz",
         "GHz", "MHz", "p")
_UNIT = r"(?:" + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True)) + r")"
_CURRENCY_SIGN = r"[€$£¥]"
_CURRENCY_WORD = r"(?:euros?|dollars?|pounds?|cents?|pence|yen|EUR|USD|GBP)"
_PER_UNIT = r"(?:month|minute|MB|GB|line|text|message|day|week|year|device|call|hour|person|user|SIM|bill month)"
_PER = r"(?:\s(?:per|a|an|each)\s" + _PER_UNIT + r")"

# Qualifiers that may precede a value in an answer span ("up to 3", "within 48 hours").
_QUALIFIERS = ("up to", "at least", "at most", "more than", "less than", "fewer than", "no more than", "over",
               "under", "about", "around", "roughly", "approximately", "nearly", "almost", "only", "just", "exactly",
               "within", "from", "between", "after", "before", "below", "above", "every", "once every", "some",
               "the", "a", "an", "by", "for", "in", "on", "at", "each")
_QUALIFIER_RE = re.compile(r"^(?:(?:" + "|".join(re.escape(q) for q in sorted(_QUALIFIERS, key=len, reverse=True))
                           + r")\s+)+", re.IGNORECASE)

STOPWORDS = {"a", "an", "the", "and", "or", "of", "for", "to", "in", "on", "at", "by", "with", "de", "la", "le",
             "von", "van", "del", "da", "&"}

# ---------------------------------------------------------------- patterns (for extraction and typing)

_PATTERNS: dict[str, re.Pattern] = {
    "phone": re.compile(
        r"(?:\+\d{1,3}[\s-]?)?\b0\d{2,4}[\s-]\d{3}[\s-]\d{3,4}\b"  # 0800 646 2900
        r"|(?:\+\d{1,3}[\s-]?)?\(?\b\d{3}\)?[\s-]\d{3}-\d{4}\b"  # (555) 123-4567
        r"|\*\d{2,6}#"  # *5051#
    ),
    "time": re.compile(
        r"\b(?:[01]?\d|2[0-3]):[0-5]\d\b"
        r"|\b(?:1[0-2]|0?[1-9])(?::[0-5]\d)?\s?(?:am|pm|a\.m\.|p\.m\.)(?!\w)"
        r"|\b(?:noon|midday|midnight)\b", re.IGNORECASE),
    "date": re.compile(
        r"\b\d{1,2}(?:st|nd|rd|th)?\s" + _MONTH + r"(?:,?\s\d{4})?\b"
        r"|\b" + _MONTH + r"\s\d{1,2}(?:st|nd|rd|th)?(?:,\s\d{4})?\b"
        r"|\b" + _MONTH + r"\s\d{4}\b"
        r"|\b(?:the\s)?\d{1,2}(?:st|nd|rd|th)\b(?!\s(?:" + _TIME_UNIT + r"|anniversary|birthday))"
        r"|\b(?:1[0-9]|20)\d{2}s?\b(?![\s-]?(?:" + _UNIT + r"|" + _TIME_UNIT + r")\b)(?![.,]\d)"
        r"|\b" + _MONTH_NOT_MAY + r"\b"
        r"|\b(?:first|second|third|fourth|last)\s" + _WEEKDAY + r"\b"),
    "percent": re.compile(r"(?<![\w.])" + _NUM + r"\s?(?:%|percent\b|per cent\b)"),
    "money": re.compile(
        r"(?:" + _CURRENCY_SIGN + r"\s?" + _NUM + r"(?:\s?(?:million|billion|bn|m|k)\b)?"
        r"|(?<![\w.])" + _NUM + r"\s?(?:million\s|billion\s)?" + _CURRENCY_WORD + r"\b)" + _PER + r"{0,2}"),
    "duration": re.compile(
        r"(?<![\w.:€$£])(?:" + _NUM + r"|" + _NUMWORD + r"|a\sfew|several)"
        r"(?:[\s-](?:more|extra|working|business|calendar|full|consecutive))?[\s-]" + _TIME_UNIT + r"\b",
        re.IGNORECASE),
    "number": re.compile(
        r"(?<![\w.:€$£*+#/])" + _NUM + r"(?:(?:\s?|-)" + _UNIT + r")?(?![\w%#:]|[.,]\d)"
        r"|\b(?i:" + "|".join(w for w in NUMBER_WORDS if w not in ("one", "hundred", "thousand", "million", "billion"))
        + r")\b"),
}
_ORDER = ("phone", "time", "date", "percent", "money", "duration")


# ---------------------------------------------------------------- normalisation and matching

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation) | {"’", "‘", "“", "”", "–", "—", "…", "«", "»", "€", "£", "¥"} | CJK_PUNCTUATION


@lru_cache(maxsize=262144)
def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether any answer occurs in ``text`` after :func:`normalize_answer`, on token boundaries.

    Token boundaries keep ``€6`` from matching inside ``€6.99`` (both normalise to digits); in Chinese
    text, where words are not spaced, an ideograph next to the match is a boundary (``39元`` is in
    ``月租39元``, not in ``月租139元``).
    Answers that normalise to nothing are ignored; no answers -> False.
    """
    hay = normalize_answer(text)
    return any(contains_phrase(hay, normalize_answer(answer)) for answer in answers)


def same_answer(a: str, b: str) -> bool:
    """Both normalise to the same string (``€17.99`` == ``17.99``)."""
    return normalize_answer(a) == normalize_answer(b)


# ---------------------------------------------------------------- typing

def _strip_qualifiers(text: str) -> str:
    return _QUALIFIER_RE.sub("", text.strip())


def _full(pattern: re.Pattern, text: str, slack: int = 0) -> bool:
    """``pattern`` covers ``text`` except for at most ``slack`` extra words."""
    m = pattern.search(text)
    if not m:
        return False
    rest = (text[:m.start()] + " " + text[m.end():]).split()
    return len(rest) <= slack


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,;/]+", text) if t]


def _is_capitalised(token: str) -> bool:
    core = token.strip(string.punctuation + "’‘“”@")
    if not core:
        return False
    if core in UNITS:
        return False
    return core[0].isupper() or (any(c.isupper() for c in core[1:]) and core[0].isalpha())


def _is_numeric_token(token: str) -> bool:
    core = token.strip(string.punctuation)
    return bool(core) and any(c.isdigit() for c in core)


def _looks_like_name(text: str) -> bool:
    """A short span whose content words are capitalised (``Helix Telecom``, ``Lumo A5``, ``Zone 3``)."""
    toks = [t for t in _tokens(text) if t.lower().strip(string.punctuation) not in STOPWORDS]
    if not toks or len(toks) > 6:
        return False
    if toks[0].lower() in ("yes", "no"):
        return False
    if not _is_capitalised(toks[0]):
        # "iOS and Android": lower-case first letter but inner capitals.
        return False
    if any(c in text for c in "@") or re.search(r"\w\.\w", text):
        return False  # e-mail addresses, domains
    caps = sum(1 for t in toks if _is_capitalised(t))
    for t in toks[1:]:
        if not (_is_capitalised(t) or _is_numeric_token(t)):
            return False
    return caps >= 1


@lru_cache(maxsize=262144)
def answer_type(text: str) -> str:
    """The type of a short answer: money, percent, duration, time, date, number, phone, entity or other."""
    t = " ".join(str(text).split())
    if not t:
        return "other"
    if has_cjk(t):
        from data_builders import answer_types_zh

        return answer_types_zh.answer_type(t)
    core = _strip_qualifiers(t)
    n_words = len(t.split())
    if _full(_PATTERNS["phone"], core, slack=1):
        return "phone"
    if _PATTERNS["time"].search(t) and n_words <= 8 and not _PATTERNS["money"].search(t):
        return "time"
    if _full(_PATTERNS["date"], core, slack=2) and not _PATTERNS["money"].search(t) \
            and not _PATTERNS["duration"].search(t):
        # A bare 3-4 digit number is a year only in 1000-2099 and without a unit: checked by the pattern.
        return "date"
    if re.search(r"\b(?:every|each|first|last)\s" + _MONTH + r"\b", t) or re.fullmatch(
            r"(?:the\s)?(?:first|second|third|fourth|last)\s" + _WEEKDAY + r"\b.*", core, re.IGNORECASE):
        return "date"
    if _PATTERNS["percent"].search(t) and n_words <= 8:
        return "percent"
    if _PATTERNS["money"].search(t) and n_words <= 8:
        return "money"
    if _PATTERNS["duration"].search(t) and n_words <= 8:
        return "duration"
    # A count: after the qualifiers, the span starts with a number (or number word) and is short.
    first = core.split()[0] if core.split() else ""
    if first and n_words <= 6 and (re.fullmatch(_NUM + r"(?:-?" + _UNIT + r"|-[a-z]+)?", first.rstrip(".,"))
                                   or first.lower() in NUMBER_WORDS):
        # "14 Harbour Lane" is an address, not a count.
        if not any(_is_capitalised(tok) for tok in core.split()[1:]):
            return "number"
    if _looks_like_name(t):
        return "entity"
    return "other"


# ---------------------------------------------------------------- extraction

def _spans(text: str, type_: str) -> list[tuple[int, int]]:
    return [m.span() for m in _PATTERNS[type_].finditer(text)]


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in spans)


_NAME_TOKEN = r"(?:[A-Z][\w'’+\-]*|[A-Z0-9]*\d[A-Za-z0-9]*)"
_NAME_RUN = re.compile(r"(?<![\w-])" + _NAME_TOKEN + r"(?:(?:\s|\s(?:of|and|de|la|von|van|&)\s)" + _NAME_TOKEN + r")*")
_ACRONYM = re.compile(r"^[A-Z0-9\-]{1,5}$")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)$")
# Capitalised technical words that are not names of things a question could be about.
_COMMON_CAPS = {"Wi-Fi", "WiFi", "USB", "USB-C", "USB-A", "SIM", "SIMs", "eSIM", "PIN", "PDF", "VAT", "EU", "EEA",
                "HD", "Qi", "ID", "IP", "SMS", "MMS", "GPS", "QR", "APN", "OK", "TV", "PC", "4G", "5G", "3G", "2G"}
_CONNECTORS = {"of", "and", "de", "la", "von", "van", "&"}
_NAME_STOP = set(MONTHS) | set(WEEKDAYS) | {"I", "If", "When", "The", "A", "An", "This", "That", "These", "Those",
                                              "It", "Its", "They", "There", "Each", "Every", "All", "Any", "Some",
                                              "No", "Yes", "Customers", "Calls", "Once", "After", "Before", "For",
                                              "From", "With", "Without", "In", "On", "At", "To", "Up", "Only",
                                              "Both", "Between", "Unless", "While", "Outside", "Inside", "Not"}


def extract_entities(text: str) -> list[tuple[int, int]]:
    """Spans of capitalised names: ``Nimbus Flex 20``, ``Helix Telecom``, ``Cirra`` (not sentence-initial words)."""
    out = []
    for m in _NAME_RUN.finditer(text):
        s, e = m.span()
        toks = m.group(0).split()
        # A count with its unit is a quantity, not a name: "Flex 20 GB" -> "Flex", "5 GB" -> nothing.
        for i in range(1, len(toks)):
            if toks[i] in UNITS and re.fullmatch(_NUM, toks[i - 1]):
                toks = toks[:i - 1]
                break
        # Leading function words, numbers and connectors ("The Nimbus Hub app" -> "Nimbus Hub").
        while toks and (toks[0] in _NAME_STOP or toks[0] in _CONNECTORS or toks[0] in _COMMON_CAPS
                        or re.fullmatch(_NUM, toks[0])):
            s += len(toks[0]) + 1
            toks = toks[1:]
        while toks and (toks[-1] in _CONNECTORS or toks[-1] in _NAME_STOP):
            toks = toks[:-1]
        if toks and re.search(r"['’]s$", toks[-1]):
            toks[-1] = toks[-1][:-2]  # "Nimbus Mobile's" -> "Nimbus Mobile"
        if not toks or not toks[-1]:
            continue
        e = s + len(" ".join(toks))
        alpha = [t for t in toks if any(c.isalpha() for c in t)]
        if not alpha:
            continue  # a bare number is not a name
        if len(toks) == 1:
            tok = toks[0]
            if _ACRONYM.match(tok) and not any(c.isdigit() for c in tok):
                continue  # EU, VAT, SIM
            if tok in UNITS or re.fullmatch(r"\d+[A-Za-z]{1,3}", tok):
                continue  # 5G, 15W
            if "-" in tok and any(part[:1].islower() for part in tok.split("-")):
                continue  # SIM-only
            if _SENTENCE_START.search(text[:s]):
                continue  # a capitalised common word opening a sentence
        out.append((s, e))
    return out


def extract_values(text: str, type_: str) -> list[str]:
    """Every substring of ``text`` of the given type, in order of appearance, without repeats."""
    if type_ not in TYPES:
        raise ValueError(f"unknown answer type {type_!r} (one of {', '.join(TYPES)})")
    if type_ == "other":
        return []
    if has_cjk(text):
        from data_builders import answer_types_zh

        return answer_types_zh.extract_values(text, type_)
    if type_ == "entity":
        spans = extract_entities(text)
        # Names are not money or dates ("April" is a date, "€5" is money).
        taken = [sp for t in ("money", "date", "time", "phone") for sp in _spans(text, t)]
        spans = [sp for sp in spans if not _overlaps(sp, taken)]
    else:
        spans = _spans(text, type_)
        # Earlier (more specific) types claim their spans: "€17.99 per month" is money, not a number.
        higher = _ORDER[:_ORDER.index(type_)] if type_ in _ORDER else _ORDER
        taken = [sp for t in higher for sp in _spans(text, t)]
        if type_ == "number":
            taken += _spans(text, "duration")
            taken += extract_entities(text)  # "Flex 20", "Zone 2": numbers inside names
        spans = [sp for sp in spans if not _overlaps(sp, taken)]
    out: list[str] = []
    seen: set[str] = set()
    for s, e in spans:
        value = text[s:e].strip(" ,;")
        key = normalize_answer(value)
        if value and key and key not in seen:
            seen.add(key)
            out.append(value)
    return out


# ---------------------------------------------------------------- helpers shared by the builders

def numeric_core(value: str) -> str:
    """The first number in ``value`` without separators (``€1,499`` -> ``1499``), or ``''``."""
    m = re.search(_NUM, value)
    return m.group(0).replace(",", "") if m else ""


def unit_of(value: str) -> str:
    """What follows (or wraps) the number: ``days``, ``working days``, ``GB``, ``€|per minute`` ..."""
    v = value.strip()
    cur = re.search(_CURRENCY_SIGN, v)
    rest = re.sub(_CURRENCY_SIGN, "", v)
    m = re.search(_NUM + r"|\b" + _NUMWORD + r"\b", rest, re.IGNORECASE)
    after = rest[m.end():] if m else rest
    after = re.sub(r"^[\s-]+", "", after).lower()
    after = re.sub(r"s\b", "", after)  # plural-insensitive: "days" ~ "day"
    return ((cur.group(0) + "|") if cur else "") + " ".join(after.split())
