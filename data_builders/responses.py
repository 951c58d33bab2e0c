"""The responses a preference pair is made of, and the pairs themselves.

chosen
    ``grounded_answer`` (in-knowledge: the gold answer with the evidence sentence that states it) or
    ``refusal`` (out-of-knowledge: says what is missing, what the evidence does cover, and what the
    user could add; never states a fact).
rejected
    ``near_miss_fabrication`` (a confident answer using a same-type value from a neighbouring
    passage: a real price, duration or name, about the wrong thing), ``external_negatives``
    (HaluEval / SQuAD 2.0 plausible answers), ``evasive_quote`` (a shown sentence quoted as if it
    answered the question: grounded in form, no answer in fact), on-policy samples passed in by the caller,
    ``needless_refusal`` and ``wrong_answer`` (in-knowledge: a refusal although the answer is there,
    or the grounded answer with its value swapped for a contradicting one).

Responses are short (one or two sentences) and meant to read like what a support assistant would
say. Every function is deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import lru_cache
from typing import Optional, Sequence

from data_builders import responses_zh
from data_builders.kb_memo import KBMemo
from data_builders.kb_text import count_mentions
from data_builders.answer_types import (NUMBER_WORDS, answer_type, contains_answer, extract_entities,
                                        extract_values, normalize_answer, numeric_core, unit_of)
from data_builders.records import (EVASIVE_QUOTE, FABRICATION_EXTERNAL, FABRICATION_NEAR_MISS, FABRICATION_ON_POLICY,
                                   GROUNDED,
                                   IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG, NEEDLESS_REFUSAL,
                                   OOK_REFUSAL_VS_FABRICATION, REFUSAL, WRONG_ANSWER, Case, Pair)
from halluguard.kb import Passage
from halluguard.language import detect_language, has_cjk

MAX_WORDS = 60


# ---------------------------------------------------------------- small text helpers

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9€$£\"'(])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _end(s: str) -> str:
    s = s.rstrip()
    return s if s.endswith((".", "!", "?")) else s + "."


_FUNCTION_STARTERS = {"the", "a", "an", "if", "when", "every", "each", "all", "any", "after", "before", "once",
                      "there", "this", "these", "it", "its", "they", "in", "on", "at", "for", "from", "with",
                      "without", "to", "by", "up", "only", "both", "no", "that", "during", "between", "until",
                      "while", "where", "as", "outside"}
_COMMON_STARTERS = {"the", "a", "an", "if", "when", "every", "each", "all", "any", "customers", "calls", "bills",
                    "after", "before", "once", "there", "this", "these", "it", "its", "they", "in", "on", "at",
                    "for", "from", "with", "without", "to", "by", "up", "only", "both", "phones", "accessories",
                    "unused", "payment", "payments", "data", "roaming", "new", "business", "prepaid", "monthly", "no",
                    "that", "you", "call", "experienced", "standard", "batteries", "devices", "home",
                    "suspicious", "outside", "during", "between", "until", "while", "where", "as"}


def _lower_start(sentence: str, context: str = "") -> Optional[str]:
    """The sentence with its first letter lower-cased, or None when the first word looks like a name."""
    first = sentence.split()[0] if sentence.split() else ""
    core = re.sub(r"['’](?:s|ll|re|ve|d)$", "", first.strip(",;:"))
    if not core.isalpha() or not core[:1].isupper() or (core[1:] and not core[1:].islower()):
        return None
    words = sentence.split()
    next_is_name = len(words) > 1 and words[1][:1].isupper()
    if core.lower() in _FUNCTION_STARTERS or (not next_is_name and core.lower() in _COMMON_STARTERS) or (
            not next_is_name and re.search(
            r"(?<![\w])" + re.escape(core.lower()) + r"(?![\w])", context)):
        return sentence[:1].lower() + sentence[1:]
    return None


def _rng(rng) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if rng is None:
        return random.Random(0)
    if isinstance(rng, int):
        return random.Random(rng)
    return random.Random(int(rng.integers(0, 2**31 - 1)))  # numpy Generator


def _titles(case: Case, limit: int = 2) -> list[str]:
    seen: list[str] = []
    for p in case.evidence:
        t = " ".join(p.title.replace("_", " ").split())
        if t and t.lower() not in (s.lower() for s in seen):
            seen.append(t)
    return seen[:limit]


def _words(text: str) -> int:
    return len(text.split())


def case_language(case: Case) -> str:
    """The language a case's responses are written in: set by the pipeline, else detected from the question."""
    return str(case.meta.get("language") or detect_language(case.question))


# ---------------------------------------------------------------- expected answer type

_QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    (r"\b(?:phone number|number (?:do|should|can) i (?:call|ring|dial)|what number|which number|short number|"
     r"hotline|telephone)\b", "phone"),
    (r"\b(?:what time|which time|what hours?|opening hours|at what hour|until what time|by what time)\b", "time"),
    (r"\b(?:what percentage|what percent|what share|what rate of|what proportion|how many percent)\b", "percent"),
    (r"\b(?:discount|interest rate|vat rate)\b", "percent"),
    (r"\b(?:how long|how many (?:days|weeks|months|years|hours|minutes)|how soon|how quickly|how fast|"
     r"for how long|within what period|what period|how far in advance|how often)\b", "duration"),
    (r"\b(?:how much (?:does|do|is|are|would|will|did|to|extra|money)|costs?|price[sd]?|fees?|(?<!in )charged?|charges|"
     r"excess|deposit|what do i pay|how much)\b(?!.*\b(?:data|storage|space|gb|mb)\b)", "money"),
    (r"\b(?:what date|which date|which day|what day|which year|what year|in what year|when)\b", "date"),
    (r"\b(?:how many|how much|what number of|what is the (?:maximum|minimum) number|how big|how heavy|"
     r"how far|how tall|how old|what speed|what capacity)\b", "number"),
    (r"^\s*(?:who|whom|whose|which|what(?:'s| is| are)? (?:the )?name)\b", "entity"),
)


def expected_type(question_text: str, answers: Sequence[str] = ()) -> str:
    """The type of the gold answer when there is one, else a guess from the question's wording."""
    for a in answers or ():
        if a and a.strip():
            return answer_type(a)
    if has_cjk(question_text):
        return responses_zh.expected_type(question_text)
    q = question_text.lower()
    for pattern, type_ in _QUESTION_TYPES:
        if re.search(pattern, q):
            return type_
    if re.match(r"\s*(?:What|Which)\s+[A-Z]", question_text):  # "What Governor ...", "Which Kestrel model ..."
        return "entity"
    return "other"


def _case_expected_type(case: Case) -> str:
    if case.meta.get("expected_type"):
        return str(case.meta["expected_type"])
    return expected_type(case.question, case.answers or case.meta.get("original_answers") or [])


def _gold(case: Case) -> list[str]:
    """Answers a fabrication must not repeat: the case's own and, for a context swap, the source's."""
    return [a for a in list(case.answers) + list(case.meta.get("original_answers") or []) if a and a.strip()]


# ---------------------------------------------------------------- confident statements (fabrications)

_PRONOUNS = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're",
             "i've": "you've", "i'd": "you'd", "i'll": "you'll", "we": "you", "our": "your", "us": "you",
             "you": "we", "your": "our", "yours": "ours", "you're": "we're", "you've": "we've"}
_PRONOUN_RE = re.compile(r"(?<![\w'’])(" + "|".join(sorted((re.escape(k) for k in _PRONOUNS), key=len, reverse=True))
                         + r")(?![\w'’])", re.IGNORECASE)


def _swap_pronouns(text: str) -> str:
    """Turn the customer's words into the assistant's: my -> your, you -> we."""
    def sub(m: re.Match) -> str:
        word = m.group(0)
        if len(word) > 1 and word.isupper():
            return word  # "US" is a country, not "us"
        out = _PRONOUNS[word.lower().replace("’", "'")]
        if word.lower().startswith("i") and word[0] == "I":  # "I", "I'm": capitalised wherever they stand
            return _cap(out) if m.start() == 0 else out
        return out if word[0].islower() else _cap(out)
    return _PRONOUN_RE.sub(sub, text)


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


_STATEMENT_RULES: tuple[tuple[re.Pattern, str], ...] = (
    # "How much does the K9 Pro cost without a plan?" -> "The K9 Pro costs €649 without a plan."
    (re.compile(r"^(?:how much|what) (does|do) (.+?) cost(\b.*)?$", re.I), "cost"),
    # "How long does a replacement SIM take to arrive?" -> "A replacement SIM takes 5 working days to arrive."
    (re.compile(r"^how long (does|do|will) (.+?) take(\b.*)?$", re.I), "take"),
    # "What time does the phone line close on weekdays?" -> "The phone line closes at 18:00 on weekdays."
    (re.compile(r"^(?:what time|when) (does|do) (.+?) (open|close|start|finish|end|stop|begin|reopen)(\b.*)?$", re.I),
     "at"),
    # "When was the bridge opened?" -> "The bridge was opened in 1932."
    (re.compile(r"^when (was|were) (.+?) (?:(last|first|originally|officially|finally) )?(\w+ed)$", re.I),
     "when_passive"),
    # "What's your trade-in scheme called?" -> "Our trade-in scheme is called Nimbus Cloud."
    (re.compile(r"^what(?:'s| is| are) (.+?) called$", re.I), "called"),
    # "Which is the cheapest 5G phone?" / "Who is allowed to ...?" -> "X is the cheapest 5G phone."
    (re.compile(r"^(?:which|who) (is|are) (.+)$", re.I), "subject"),
    # "How much is Unlimited Max a month?" -> "Unlimited Max is €34.99 a month."
    (re.compile(r"^how (?:much|long|big|old|heavy|far) (is|are) (.+)$", re.I), "is"),
    # "What's the price of the Lumo A5?" -> "The price of the Lumo A5 is €199."
    (re.compile(r"^what(?:'s| is| are) ((?:the|your|my|our) .+)$", re.I), "what_is"),
)

_FALLBACKS = {
    "money": ("It costs {v}.", "The charge is {v}.", "That comes to {v}.", "You'll pay {v} for that."),
    "percent": ("It's {v}.", "The rate is {v}.", "That's {v}."),
    "duration": ("It's {v}.", "That takes {v}.", "The period is {v}."),
    "time": ("That's at {v}.", "It's {v}.", "The time is {v}."),
    "date": ("That's {v}.", "It's {v}.", "The date is {v}."),
    "number": ("It's {v}.", "The number is {v}.", "That's {v} in total."),
    "phone": ("The number to call is {v}.", "You can reach the team on {v}.", "Call {v}."),
    "entity": ("It's {v}.", "That's {v}.", "The answer is {v}."),
    "other": ("It's {v}.", "The answer is {v}."),
}
_DETERMINERS = {"the", "a", "an", "your", "our", "my", "each", "every", "this", "that", "these", "those", "its"}
_CONFIDENT_OPENERS = ("", "", "", "According to my information, ", "Sure! ")


def confident_statement(question: str, value: str, type_: str, rng: random.Random) -> str:
    """A confident one-sentence answer to ``question`` that states ``value`` as the answer."""
    if has_cjk(question):
        return responses_zh.confident_statement(question, value, type_, rng)
    q = " ".join(question.strip().split()).rstrip("?").strip()
    v = value.strip()
    out: Optional[str] = None
    for pattern, how in _STATEMENT_RULES:
        m = pattern.match(q)
        if not m:
            continue
        if how in ("cost", "take"):
            aux, subj, rest = m.group(1).lower(), _swap_pronouns(m.group(2)), m.group(3) or ""
            verb = how if aux != "does" else _third_person(how)
            if subj.lower() in ("it", "this", "that"):
                verb, subj = _third_person(how), "it"
                obj = re.match(r"^\s+(.+?)\s+(to .+)$", rest)
                if obj:  # "How long does it take the Earth to ..." -> "It takes the Earth 365 days to ..."
                    out = f"It {verb} {_swap_pronouns(obj.group(1))} {v} {_swap_pronouns(obj.group(2))}."
                    break
            out = f"{_cap(subj)} {verb} {v}{_swap_pronouns(rest)}."
        elif how == "at":
            aux, subj, verb, rest = m.group(1).lower(), _swap_pronouns(m.group(2)), m.group(3), m.group(4) or ""
            verb = _third_person(verb) if aux == "does" else verb
            prep = "at " if type_ == "time" else ""
            if type_ == "date":
                prep = "on " if re.match(r"\d", v) else ("in " if re.match(r"[A-Z][a-z]+\b", v) else "")
            out = f"{_cap(subj)} {verb} {prep}{v}{_swap_pronouns(rest)}."
        elif how == "when_passive":
            if type_ not in ("date", "time") or re.search(r"\bnot\b", m.group(2)):
                continue
            if type_ == "time":
                prep = "at"
            elif re.match(r"(?:the )?\d{1,2}(?:st|nd|rd|th)?\b(?!\d)", v) or re.match(r"[A-Z][a-z]+ \d{1,2}\b", v):
                prep = "on"
            else:
                prep = "in"
            adverb = f"{m.group(3)} " if m.group(3) else ""
            out = f"{_cap(_swap_pronouns(m.group(2)))} {m.group(1).lower()} {adverb}{m.group(4)} {prep} {v}."
        elif how == "called":
            subj = _swap_pronouns(m.group(1))
            out = f"{_cap(subj)} {'are' if q.lower().startswith('what are') else 'is'} called {v}."
        elif how == "subject":
            if type_ not in ("entity", "other"):
                continue
            out = f"{_cap(v)} {m.group(1).lower()} {_swap_pronouns(m.group(2))}."
        elif how == "is":
            subj = _swap_pronouns(m.group(2))
            first = subj.split()[0] if subj.split() else ""
            if len(subj.split()) > 10 or not (first[:1].isupper() or first.lower() in _DETERMINERS):
                continue  # "How much is still left to pay ...?" has no subject to restate
            # "How much is Unlimited Max a month?": keep a trailing "a month" / "each month" after the value.
            tail = re.search(r"\s(?:a|per|each|every) (?:month|year|week|day|line)$", subj)
            if tail:
                subj, tail_s = subj[:tail.start()], subj[tail.start():]
            else:
                tail_s = ""
            out = f"{_cap(subj)} {m.group(1).lower()} {v}{tail_s}."
        elif how == "what_is":
            subj = _swap_pronouns(m.group(1))
            if len(subj.split()) > 14 or re.search(r"\b(?:than|about)\b|\b(?:of|for|with|to|in|on|at|from|by)$", subj):
                continue  # "What is the US concerned more about than inflation?" is no noun phrase
            out = f"{_cap(subj)} {'are' if q.lower().startswith('what are') else 'is'} {v}."
        if out:
            break
    if out is None:
        templates = _FALLBACKS.get(type_, _FALLBACKS["other"])
        out = rng.choice(templates).format(v=v)
        opener = rng.choice(_CONFIDENT_OPENERS)
        if opener.endswith(", "):
            out = opener + out[:1].lower() + out[1:]  # every fallback starts with a plain word
        else:
            out = opener + out
    return _cap(out)


# ---------------------------------------------------------------- grounded answers (IK chosen)

def _evidence_sentences(case: Case) -> list[tuple[str, str]]:
    """``(sentence, passage title)`` for every evidence sentence, in order."""
    out = []
    for p in case.evidence:
        for s in sentences(p.text):
            out.append((s, p.title))
    return out


def _supporting(case: Case) -> tuple[str, str, str]:
    """``(gold answer, supporting text, title)``: the first answer found verbatim in an evidence sentence.

    When several answers are in the evidence (a list question), a second sentence that holds another
    answer is added while the text stays short.
    """
    answers = [a for a in case.answers if a and a.strip()]
    sents = _evidence_sentences(case)
    for a in answers:
        for i, (s, title) in enumerate(sents):
            if a in s:
                text = s
                others = [b for b in answers if b != a and b not in s]
                for s2, t2 in sents[i + 1:i + 3]:
                    if t2 == title and any(b in s2 for b in others) and _words(text) + _words(s2) <= 45:
                        text = f"{text} {s2}"
                        break
                return a, text, title
    for a in answers:  # case or punctuation differ: match after normalisation
        for s, title in sents:
            if contains_answer(s, [a]):
                return a, s, title
    return (answers[0] if answers else ""), "", ""


_GROUNDED_STYLES = ("plain", "according", "short_first", "title_says", "based_on", "answer_is")


def grounded_answer(case: Case, rng) -> str:
    """A short answer built from the gold answer and the evidence sentence that states it.

    Styles vary (the bare sentence, "According to ...", the value first, ...); the gold answer
    always appears verbatim. Without a supporting sentence it falls back to a plain statement.
    """
    rng = _rng(rng)
    if case_language(case) == "zh":
        return responses_zh.grounded_answer(case, rng)
    gold, support, title = _supporting(case)
    if not gold:
        raise ValueError(f"case {case.id} has no gold answer to ground")
    if not support:
        return confident_statement(case.question, gold, answer_type(gold), rng)
    context = " ".join(p.text for p in case.evidence)
    lowered = _lower_start(support, context)
    style = rng.choice(_GROUNDED_STYLES)
    short_value = answer_type(gold) != "other" and _words(gold) <= 5
    if style in ("according", "based_on", "answer_is") and lowered is None:
        style = "title_says" if title else "short_first"
    if style in ("short_first", "answer_is") and not short_value:
        style = "plain"
    if style == "according":
        source = f"the information on {title}" if title else "the information I have"
        text = f"According to {source}, {lowered}"
    elif style == "short_first":
        text = f"{_cap(gold)}. {support}"
    elif style == "title_says" and title:
        text = f"The section on {title} says: {support}"
    elif style == "based_on":
        text = f"Based on the passage{' on ' + title if title else ''}, {lowered}"
    elif style == "answer_is":
        text = f"It's {gold}: {lowered}"
    else:
        text = support
    text = _end(text)
    if gold not in text:  # never lose the verbatim answer
        text = _end(f"{_cap(gold)}. {support}")
    if _words(text) > MAX_WORDS:
        text = _end(support)
    return text


def evasive_quote(case: Case, rng) -> Optional[str]:
    """An out-of-knowledge case's rejected response in the grounded answers' own styles: a sentence of a
    shown passage, quoted as if it answered. It states only true things, but not what was asked.

    Measured on the demo: PPO drifted to exactly this form ("The section on X says: ..."), and a reward
    model trained without it scored such quotes on OOK questions as high as grounded answers. None for
    Chinese cases (no such templates yet) and cases without evidence sentences.
    """
    rng = _rng(rng)
    if case_language(case) != "en" or not case.evidence:
        return None
    top = case.evidence[0]  # the passage the model is most likely to lean on
    candidates = [s for s in sentences(top.text) if 4 <= _words(s) <= 40]
    if not candidates:
        return None
    sentence = rng.choice(candidates)
    title = " ".join(top.title.replace("_", " ").split())
    lowered = _lower_start(sentence, " ".join(p.text for p in case.evidence))
    styles = ["plain"] + (["title_says"] if title else []) + (["according", "based_on"] if lowered else [])
    style = rng.choice(styles)
    if style == "title_says":
        return _end(f"The section on {title} says: {sentence}")
    if style == "according":
        return _end(f"According to the information on {title or 'this'}, {lowered}")
    if style == "based_on":
        return _end(f"Based on the passage{' on ' + title if title else ''}, {lowered}")
    return _end(sentence)


# ---------------------------------------------------------------- refusals (OOK chosen, IK needless refusal)

_MISSING_NOUN = {
    "money": ("the price", "the cost", "the amount"),
    "percent": ("the percentage", "the rate"),
    "duration": ("the time period", "the duration"),
    "time": ("the time", "the exact time"),
    "date": ("the date", "the exact date"),
    "number": ("the exact number", "the figure"),
    "phone": ("the phone number", "the number to call"),
    "entity": ("the name", "the specific name"),
    "other": ("the detail", "the information"),
}
_QUESTION_WORDS = {"do", "does", "did", "can", "could", "is", "are", "was", "were", "will", "would", "should",
                   "how", "what", "what's", "which", "who", "when", "where", "why", "i", "i'm", "i've", "i'd",
                   "my", "nimbus"}


def _question_subject(question: str) -> str:
    """The name a question is about (``Unlimited Max``, ``ToughShell``), or '' when it names none."""
    for s, e in extract_entities(question):
        tokens = question[s:e].split()
        while tokens and tokens[0].lower().strip("?,") in _QUESTION_WORDS:
            tokens = tokens[1:]
        name = re.sub(r"['’]s$", "", " ".join(tokens))
        if not name or "'" in name or "’" in name:
            continue
        if len(tokens) == 1 and not re.search(r"\d|[a-z][A-Z]", name):
            continue  # a lone capitalised word ("Nimbus") is usually the company, not the subject
        return name
    return ""


def _missing(case: Case, rng: random.Random) -> str:
    if case.meta.get("missing"):
        return str(case.meta["missing"])
    noun = rng.choice(_MISSING_NOUN.get(_case_expected_type(case), _MISSING_NOUN["other"]))
    name = str(case.meta.get("subject") or "") or _question_subject(case.question)
    return f"{noun} for {name}" if name else f"{noun} you're asking about"


_ASKS = (
    "Could you tell me a bit more about what you need, or where you came across it?",
    "If you have a document that covers this, share it and I'll go through it.",
    "Can you give me more detail, such as the exact name of what you're asking about?",
    "If you can point me to the right source, I'm happy to look again.",
    "Could you rephrase the question or tell me which item you mean?",
    "Is there a reference, such as a contract or an order, you can share?",
    "If you tell me which specific item you have, I can check whether it's covered.",
)

# Each family says what is missing ({missing}); most name what the evidence covers ({covers}) or ask
# for the detail that would make the question answerable ({ask}). None states a fact.
_REFUSALS: tuple[str, ...] = (
    "I can't find {missing} in {covers}, so I'd rather not guess. {ask}",
    "{Covers_cap} {dont} state {missing}. {ask}",
    "I don't know: {missing} isn't covered in what I have. I can help with {topics} instead.",
    "Sorry, I can't answer that reliably, because nothing here mentions {missing}. {ask}",
    "The information I was given doesn't answer this. It covers {topics}, but not {missing}.",
    "I'm not able to confirm {missing} from the material available to me. {ask}",
    "Based on {covers}, I can't tell you {missing}. {ask}",
    "Sorry, I don't have any information on {missing}. If it helps, I can explain what I know about {topics}.",
    "There's no mention of {missing} in the sources I can see, so any answer would be a guess. {ask}",
    "I can't answer that without guessing: {missing} isn't in my material on {topics}.",
    "That isn't something I can answer from the information provided. {ask}",
    "I can't say for sure. {Covers_cap} {dont} give {missing}, and I don't want to make it up.",
    "Unfortunately I can't answer that. I only have {covers}, and none of it states {missing}.",
    "I don't have the facts to answer that; {missing} isn't stated in the context I was given. {ask}",
    "I can't tell you {missing}: it isn't in {covers}, and I won't guess. {ask}",
)


def refusal(case: Case, rng, n: int = 1) -> list[str]:
    """``n`` distinct calibrated refusals for a case (fewer only if the families run out).

    Each says what is missing, names what the evidence does cover (the evidence titles) or asks for
    the detail that would make the question answerable. Refusals never state facts from the evidence.
    """
    rng = _rng(rng)
    if case_language(case) == "zh":
        return responses_zh.refusal(case, rng, _case_expected_type(case), n)
    titles = _titles(case)
    if titles:
        topics = _join(titles)
        covers = f"the passages on {topics}" if len(titles) > 1 else f"the passage on {topics}"
        dont = "don't" if len(titles) > 1 else "doesn't"
    else:
        topics, covers, dont = "the passages shown", "the passages I was given", "don't"
    order = list(range(len(_REFUSALS)))
    rng.shuffle(order)
    out: list[str] = []
    for i in order:
        if len(out) >= max(0, n):
            break
        text = _REFUSALS[i].format(missing=_missing(case, rng), covers=covers, Covers_cap=_cap(covers), dont=dont,
                                   topics=topics, ask=rng.choice(_ASKS))
        text = " ".join(text.split())
        if _words(text) > MAX_WORDS:
            continue
        if text not in out:
            out.append(text)
    return out


def needless_refusal(case: Case, rng) -> str:
    """For in-knowledge cases: a refusal although the evidence holds the answer."""
    return refusal(case, rng, n=1)[0]


# ---------------------------------------------------------------- near-miss fabrications (OOK rejected)

def _is_generic(value: str, passages: Sequence[Passage]) -> bool:
    """A single-word name found in most passages (the company name) is not a believable answer."""
    if len(value.split()) > 1 or len(passages) < 3:
        return False
    hits = count_mentions(value, passages, with_title=False, ignore_case=False)
    return hits >= max(3, len(passages) // 2)


def _clashes(value: str, gold: Sequence[str]) -> bool:
    return any(contains_answer(value, [g]) or contains_answer(g, [value]) for g in gold)


def _fit_value(value: str, question: str, type_: str) -> str:
    """Drop a "per month" / "per line" the question already says ("What does X cost per line?")."""
    if type_ != "money":
        return value
    q = question.lower()
    out = value
    for m in reversed(list(re.finditer(r"\s(?:per|a|an|each)\s(\w+(?: month)?)", value))):
        unit = m.group(1).lower()
        said = re.search(r"\b" + re.escape(unit.split()[-1]) + r"s?\b", q) or (
            unit.endswith("month") and re.search(r"\bmonthly\b", q))
        if said and m.end() == len(out):
            out = out[:m.start()]
    return out


def _shape(value: str) -> str:
    """Surface form of a value: digits -> 9, month names -> M (``30 June 2024`` -> ``9 M 9``)."""
    out = re.sub(r"\d[\d,.]*", "9", value)
    return re.sub(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b",
                  "M", out)


_UNIT_HINTS = (
    (r"\b(?:data|storage|space|backup|allowance|gb|mb)\b", ("gb", "mb", "tb")),
    (r"\b(?:speed|broadband|download|upload|mbps)\b", ("mbps", "gbps", "kbps")),
    (r"\b(?:battery|capacity|mah)\b", ("mah", "wh")),
    (r"\b(?:weigh|weight|heavy|grams?|kg)\b", ("gram", "g", "kg")),
    (r"\b(?:screen|display|inch)\b", ("inch",)),
    (r"\b(?:camera|megapixels?|mp)\b", ("mp",)),
    (r"\b(?:power|output|watts?|charger)\b", ("w",)),
)


def _question_unit(question: str) -> Optional[tuple[str, ...]]:
    q = question.lower()
    if re.search(r"\bhow many\b(?!\s+(?:gb|mb|megapixels|mbps|watts|grams))", q):
        return None
    for pattern, units in _UNIT_HINTS:
        if re.search(pattern, q):
            return units
    return None


def _tier(value: str, gold: Optional[str], type_: str, question: str = "") -> int:
    """0: same unit (or same form) as the gold answer, 1: close, 2: same type only."""
    if type_ == "entity":
        strong = len(value.split()) > 1 or bool(re.search(r"\d|[a-z][A-Z]", value))
        if re.match(r"\s*who\b", question, re.IGNORECASE) and re.search(r"\d", value):
            return 2  # "Who is responsible ...?" is not answered by a model number
        if gold is None:
            return 0 if strong else 2
        same_len = len(value.split()) == len(gold.split())
        return 0 if strong and same_len else (1 if strong else 2)
    if gold is None:
        if type_ == "number":
            hint, unit = _question_unit(question), unit_of(value).strip()
            if hint is None:
                return 0 if not unit else 2  # "How many ...?": a bare count, not "10,000 mAh"
            return 0 if unit.rstrip("s") in hint else 2
        return 0
    if type_ in ("date", "time", "phone"):
        if _shape(value) == _shape(gold):
            return 0
        return 1 if type_ == "time" and _shape(value) == "9:9" else 2  # one time for a range of times
    unit, gold_unit = unit_of(value), unit_of(gold)
    if ("-" in value) != ("-" in gold):
        return 2  # "two-hour" is no stand-in for "24 hours"
    if unit == gold_unit:
        return 0
    if unit.split("|")[0] == gold_unit.split("|")[0] and unit[:3] == gold_unit[:3]:
        return 1
    return 2


def _count_noun(gold: str) -> str:
    """What a count counts (``4 calls`` -> ``calls``, ``20 or more lines`` -> ``or more lines``), or ''.

    Measurement units (GB, Mbps, grams) are not count nouns: a bare number cannot borrow them.
    """
    m = re.search(r"\d[\d,]*|\b(?:" + "|".join(NUMBER_WORDS) + r")\b", gold, re.IGNORECASE)
    if not m:
        return ""
    tail = gold[m.end():].strip()
    first = tail.split()[0] if tail.split() else ""
    if not re.fullmatch(r"[a-z][a-z-]*", first) or first.rstrip("s") in _MEASURES:
        return ""
    return tail


_MEASURES = {"gram", "metre", "meter", "inch", "kg", "km", "cm", "mm", "degree", "mph", "mah", "mbp", "gbp", "kbp"}


def near_miss_fabrication(case: Case, neighbours: list[Passage], expected_type: str,
                          rng) -> Optional[tuple[str, dict]]:
    """A confident answer using a value of ``expected_type`` taken from a neighbouring passage.

    The value differs from every gold answer (and, for a context swap, from the source question's
    answer: that one is true, only unsupported here). Values with the gold's unit are preferred
    (``€0.39 per minute`` for a per-minute rate), then the nearest passages. Returns
    ``(text, meta)`` with the value and its passage id, or ``None`` when no such value exists.
    """
    rng = _rng(rng)
    if expected_type not in ("money", "percent", "duration", "time", "date", "number", "phone", "entity"):
        return None
    gold = _gold(case)
    # The unit to match: the gold's, or for an entity swap the source question's ("Flex 35" is priced like "Flex 20").
    ref = (gold or [a for a in case.meta.get("source_answers") or [] if a.strip()] or [None])[0]
    q_norm = f" {normalize_answer(case.question)} "
    pool = list(neighbours)
    count_noun = _count_noun(ref) if ref and expected_type == "number" else ""
    candidates: list[tuple[int, int, str, Passage]] = []
    seen: set[str] = set()
    for rank, p in enumerate(pool):
        for v in _values(p.text, expected_type):
            key = normalize_answer(v)
            if not key or key in seen:
                continue
            seen.add(key)
            if count_noun and not unit_of(v) and re.fullmatch(r"[\d,]+|[a-z]+", v):
                v = f"{v} {count_noun}"  # "300" with the gold's "lines" -> "300 lines"
            if _clashes(v, gold) or f" {normalize_answer(v)} " in q_norm:
                continue
            if answer_type(v) != expected_type and expected_type != "entity":
                continue
            if expected_type == "entity" and (_is_generic(v, pool) or answer_type(v) != "entity"):
                continue
            if re.fullmatch(r"0\d+", v) and not any(re.match(r"0\d", g) for g in gold):
                continue  # "0909" is a code, not a count
            if expected_type == "entity" and (" and " in v or "," in v):
                continue  # a list of names is no single answer
            tier = _tier(v, ref, expected_type, case.question)
            candidates.append((tier, rank, v, p))
    if (ref and expected_type in ("date", "time", "phone")) or expected_type == "number":
        # "first Monday" is no stand-in for "30 June 2024", nor "100 Wh" for a length in metres.
        candidates = [c for c in candidates if c[0] < 2]
    if not candidates:
        return None
    best = min(c[0] for c in candidates)
    top = [c for c in candidates if c[0] == best][:4]
    tier, rank, value, source = rng.choice(top)
    shown = _fit_value(value, case.question, expected_type)
    text = confident_statement(case.question, shown, expected_type, rng)
    meta = {"value": value, "source_passage_id": source.id, "neighbour_rank": rank, "unit_tier": tier,
            "value_type": answer_type(value)}
    return text, meta


# ---------------------------------------------------------------- wrong answers (IK rejected)

_NEGATION_FLIPS = (
    (r"\bcannot\b", "can"), (r"\bcan't\b", "can"), (r"\bdoes not\b", "does"), (r"\bdo not\b", "do"),
    (r"\bis not\b", "is"), (r"\bare not\b", "are"), (r"\bnot available\b", "available"),
    (r"\bnever\b", "always"), (r"\bno extra cost\b", "an extra cost"), (r"\bno charge\b", "a charge"),
    (r"\bfree of charge\b", "for a fee"), (r"\bis free\b", "is charged"), (r"\bincluded free\b", "charged extra"),
    (r"\bno need to\b", "you need to"), (r"\bnot\s", ""), (r"\bclosed\b", "open"), (r"\bunlocked\b", "locked"),
    (r"\bis included\b", "is not included"),
)
_NUMBER_WORD_VALUES = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven",
                                                   "eight", "nine", "ten", "eleven", "twelve"))}


def _format_like(old: str, new: float) -> str:
    """``new`` written like ``old``: same decimals, thousands separator when old had one."""
    decimals = len(old.split(".")[1]) if "." in old else 0
    s = f"{new:,.{decimals}f}" if "," in old else f"{new:.{decimals}f}"
    return s


def _perturb_number(core: str, rng: random.Random) -> str:
    v = float(core.replace(",", ""))
    if "." in core:
        whole, frac = int(v), v - int(v)
        step = max(1, round(whole * 0.3)) if whole else 1
        options = [whole + step, whole + 2 * step, max(0, whole - step), whole + 5]
        options = [o for o in options if o != whole and o >= 0]
        return _format_like(core, rng.choice(options) + frac)
    n = int(v)
    if n == 0:
        options = [5, 10, 2]
    elif n <= 12:
        options = [n + 1, n + 2, n * 2, n + 3, max(1, n - 1)]
    elif n < 100:
        step = 5 if n % 5 == 0 else 1
        options = [n + 5 * step, n * 2, max(step, n - 5 * step), n + 10 * step, round(n * 1.5)]
    else:
        options = [n * 2, round(n * 1.5, -1), round(n * 0.5, -1), n + 100]
    options = [int(o) for o in options if int(o) != n and o > 0]
    return _format_like(core, rng.choice(options))


def _perturb_time(value: str, rng: random.Random) -> Optional[str]:
    m = re.search(r"\b([01]?\d|2[0-3]):([0-5]\d)\b", value)
    if not m:
        return None
    h = (int(m.group(1)) + rng.choice([1, 2, 3, -1, -2])) % 24
    return value[:m.start()] + f"{h:02d}:{m.group(2)}" + value[m.end():]


def _perturb(gold: str, type_: str, rng: random.Random) -> Optional[str]:
    if type_ == "time":
        return _perturb_time(gold, rng)
    if type_ == "date":
        m = re.search(r"\b(1[5-9]|20)\d\d\b", gold)
        if m:
            return gold[:m.start()] + str(int(m.group(0)) + rng.choice([1, 2, 3, -1])) + gold[m.end():]
    m = re.search(r"\d[\d,]*(?:\.\d+)?", gold)
    if m:
        for _ in range(8):
            new = _perturb_number(m.group(0), rng)
            if type_ != "percent" or float(new.replace(",", "")) <= 100:
                return gold[:m.start()] + new + gold[m.end():]
        return None
    m = re.search(r"\b(" + "|".join(_NUMBER_WORD_VALUES) + r")\b", gold, re.IGNORECASE)
    if m:
        n = _NUMBER_WORD_VALUES[m.group(1).lower()]
        names = list(_NUMBER_WORD_VALUES)
        new = names[min(12, max(1, n + rng.choice([1, 2, -1]))) if n != 1 else 2]
        if new == m.group(1).lower():
            new = names[(n + 3) % 12 or 2]
        return gold[:m.start()] + new + gold[m.end():]
    return None


def _flip_negation(gold: str) -> Optional[str]:
    for pattern, repl in _NEGATION_FLIPS:
        if re.search(pattern, gold, re.IGNORECASE):
            out = re.sub(pattern, repl, gold, count=1, flags=re.IGNORECASE)
            out = " ".join(out.split())
            if out and out != gold:
                return out
    return None


_GENERIC_SHARE = 0.15


@lru_cache(maxsize=65536)
def _values(text: str, type_: str) -> tuple[str, ...]:
    return tuple(extract_values(text, type_))


_KB_VALUES = KBMemo(max_entries=64)


def _kb_values(all_passages: Sequence[Passage], type_: str) -> tuple[list[tuple[str, str]], Counter]:
    """Every distinct value of ``type_`` in the knowledge base (value, normalised key), in KB order,
    and how many passages state each key. Computed once per knowledge base and type: the scan over all
    passages would otherwise run for every question."""
    def compute():
        recurring: Counter = Counter()
        values: list[tuple[str, str]] = []
        seen: set[str] = set()
        for p in all_passages:
            found = _values(p.text, type_)
            recurring.update({normalize_answer(v) for v in found})
            for v in found:
                k = normalize_answer(v)
                if k not in seen and answer_type(v) == type_:
                    seen.add(k)
                    values.append((v, k))
        return values, recurring
    return _KB_VALUES.get(all_passages, type_, compute)


def _kb_alternative(gold: str, type_: str, case: Case, all_passages: Sequence[Passage],
                    rng: random.Random) -> Optional[str]:
    """A same-type value stated elsewhere in the KB, as close in form as possible.

    Numbers keep the gold's unit and magnitude (within a factor of 4: a €17.99 plan does not become
    €0.04), dates and times keep their shape, names keep their first word or length.
    """
    gold_all = [a for a in case.answers if a.strip()]
    unit, core = unit_of(gold), numeric_core(gold)
    best: list[str] = []
    fallback: list[str] = []
    candidates, recurring = _kb_values(all_passages, type_)
    for v, key in candidates:
        if type_ == "entity":
            if recurring[key] < 2 or recurring[key] > _GENERIC_SHARE * max(1, len(all_passages)):
                continue  # one-off phrases are often noise; the company's own name is no answer
            if _clashes(v, gold_all):
                continue
            close = v.split()[0] == gold.split()[0] or len(v.split()) == len(gold.split())
            (best if close else fallback).append(v)
        elif type_ in ("date", "time", "phone"):
            if _shape(v) == _shape(gold) and not _clashes(v, gold_all):
                best.append(v)
        else:
            if unit_of(v) != unit:
                continue
            vc = numeric_core(v)
            if core and vc:
                ratio = float(vc) / float(core) if float(core) else 0.0
                if not 0.25 <= ratio <= 4:
                    continue
            if not _clashes(v, gold_all):
                best.append(v)
    pick = best or fallback
    return rng.choice(pick) if pick else None


def _wrong_value(case: Case, gold: str, all_passages: Sequence[Passage], rng: random.Random) -> Optional[str]:
    type_ = answer_type(gold)
    answers = [a for a in case.answers if a.strip()]
    tries: list[Optional[str]] = []
    if type_ == "other":
        tries.append(responses_zh.flip_negation(gold) if has_cjk(gold) else _flip_negation(gold))
    elif type_ == "entity":
        if "," in gold or " and " in gold:
            return None  # a list ("iOS and Android") has no single stand-in that reads right
        tries.append(_kb_alternative(gold, type_, case, all_passages, rng))
    elif not re.search(r"\d", gold):  # "three": a perturbed number word reads right, a KB digit does not
        tries.append(_perturb(gold, type_, rng))
    else:
        kb_first = rng.random() < 0.5 and gold == (extract_values(gold, type_) or [""])[0]
        if kb_first:
            tries.append(_kb_alternative(gold, type_, case, all_passages, rng))
        tries.append(_perturb(gold, type_, rng))
        if not kb_first and gold == (extract_values(gold, type_) or [""])[0]:
            tries.append(_kb_alternative(gold, type_, case, all_passages, rng))
    for v in tries:
        if v and v.strip() and not any(normalize_answer(v) == normalize_answer(a) for a in answers) \
                and not _clashes(v, answers):
            return v
    return None


def _wrong_from(grounded: str, case: Case, all_passages: Sequence[Passage], rng: random.Random) -> Optional[tuple[str, str, str]]:
    """``(wrong text, gold, replacement)``: ``grounded`` with its gold answer swapped for a contradicting value."""
    for gold in [a for a in case.answers if a.strip() and a.lower() in grounded.lower()]:
        new = _wrong_value(case, gold, all_passages, rng)
        if new is None:
            continue
        # Every mention, whatever its case ("Three. No more than three ..."), keeping a leading capital.
        text = re.sub(re.escape(gold), lambda m: _cap(new) if m.group(0)[:1].isupper() else new, grounded,
                      flags=re.IGNORECASE)
        # A value written at the start of a sentence keeps the sentence's capital letter.
        text = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
        if text != grounded and normalize_answer(text) != normalize_answer(grounded):
            return text, gold, new
    return None


def wrong_answer(case: Case, all_passages: Sequence[Passage], rng) -> Optional[str]:
    """For in-knowledge cases: the grounded answer with the gold value replaced by a contradicting one."""
    rng = _rng(rng)
    grounded = grounded_answer(case, rng)
    made = _wrong_from(grounded, case, all_passages, rng)
    return made[0] if made else None


# ---------------------------------------------------------------- external negatives

def external_negatives(case: Case) -> list[str]:
    """Dataset-provided fabrications: HaluEval ``hallucinated_answer``, SQuAD 2.0 ``plausible_answers``.

    Short answers become confident sentences; answers equal to a gold answer are dropped.
    """
    rng = random.Random(f"{case.id}:external")
    out: list[str] = []
    raw: list[str] = []
    hal = case.meta.get("hallucinated_answer")
    if isinstance(hal, str):
        raw.append(hal)
    elif isinstance(hal, (list, tuple)):
        raw += [h for h in hal if isinstance(h, str)]
    plausible = case.meta.get("plausible_answers") or []
    if isinstance(plausible, str):
        plausible = [plausible]
    gold = _gold(case)
    seen: set[str] = set()
    for text in raw + [p for p in plausible if isinstance(p, str)]:
        text = " ".join(text.split())
        if normalize_answer(text) in seen:
            continue
        seen.add(normalize_answer(text))
        if not text or any(normalize_answer(text) == normalize_answer(g) for g in gold):
            continue
        if _words(text) <= 6 and not text.endswith((".", "!", "?", "。", "！", "？")):
            text = confident_statement(case.question, text, answer_type(text), rng)
        if text not in out:
            out.append(text)
    return out


# ---------------------------------------------------------------- pairs

def _type_match(text_or_value: str, expected: str, is_value: bool) -> float:
    if is_value:
        return float(answer_type(text_or_value) == expected)
    if expected == "other":
        return 1.0
    return float(bool(extract_values(text_or_value, expected)))


def make_pairs(case: Case, neighbours: list[Passage], all_passages: Sequence[Passage], negatives_cfg, rng,
               refusals_per_case: int = 1, extra_fabrications: Sequence[str] = ()) -> list[Pair]:
    """Preference pairs for one case.

    OOK: every refusal (``refusals_per_case`` distinct ones) against every fabrication: near-miss
    (``negatives_cfg.near_miss``), external (``negatives_cfg.external``), and ``extra_fabrications``
    (on-policy samples from the caller). IK: the grounded answer against a needless refusal
    (``negatives_cfg.needless_refusal``) and against a wrong answer made from the same grounded text
    (``negatives_cfg.wrong_answer``), so the two sides differ only in the value.
    ``Pair.scores["type_match"]`` says whether the rejected value has the expected answer type.
    """
    rng = _rng(rng)
    n_ref = max(1, int(refusals_per_case))
    etype = _case_expected_type(case)
    pairs: list[Pair] = []
    if case.label == "ook":
        fabrications: list[tuple[str, str, dict]] = []
        if getattr(negatives_cfg, "near_miss", True):
            made = near_miss_fabrication(case, neighbours, etype, rng)
            if made is not None:
                text, meta = made
                evidence_ids = {p.id for p in case.evidence}
                fabrications.append((text, FABRICATION_NEAR_MISS, {
                    "type_match": _type_match(meta["value"], etype, True),
                    "value_in_evidence": float(meta["source_passage_id"] in evidence_ids),
                    "neighbour_rank": float(meta["neighbour_rank"]),
                    "unit_tier": float(meta["unit_tier"])}))
        if getattr(negatives_cfg, "external", True):
            for text in external_negatives(case):
                fabrications.append((text, FABRICATION_EXTERNAL, {"type_match": _type_match(text, etype, False)}))
        if getattr(negatives_cfg, "evasive_quote", False):
            text = evasive_quote(case, rng)
            if text is not None:
                fabrications.append((text, EVASIVE_QUOTE, {}))  # no value to type-check: never off-type
        for text in extra_fabrications:
            if text and text.strip():
                fabrications.append((text.strip(), FABRICATION_ON_POLICY,
                                     {"type_match": _type_match(text, etype, False)}))
        if not fabrications:
            return []
        refusals = refusal(case, rng, n=n_ref)
        for text, kind, scores in fabrications:
            for chosen in refusals:
                pairs.append(Pair(case_id=case.id, pair_kind=OOK_REFUSAL_VS_FABRICATION, chosen=chosen,
                                  rejected=text, chosen_kind=REFUSAL, rejected_kind=kind, scores=dict(scores)))
        return pairs

    if case.label != "ik" or not any(a.strip() for a in case.answers):
        return []
    grounded = grounded_answer(case, rng)
    in_evidence = float(any(contains_answer(p.text, case.answers) for p in case.evidence))
    if getattr(negatives_cfg, "needless_refusal", True):
        for text in refusal(case, rng, n=n_ref):
            pairs.append(Pair(case_id=case.id, pair_kind=IK_GROUNDED_VS_REFUSAL, chosen=grounded, rejected=text,
                              chosen_kind=GROUNDED, rejected_kind=NEEDLESS_REFUSAL,
                              scores={"gold_in_evidence": in_evidence}))
    if getattr(negatives_cfg, "wrong_answer", True):
        made = _wrong_from(grounded, case, all_passages, rng)
        if made is not None:
            text, gold, new = made
            pairs.append(Pair(case_id=case.id, pair_kind=IK_GROUNDED_VS_WRONG, chosen=grounded, rejected=text,
                              chosen_kind=GROUNDED, rejected_kind=WRONG_ANSWER,
                              scores={"type_match": float(answer_type(new) == answer_type(gold)),
                                      "gold_in_evidence": in_evidence}))
    return pairs
