"""Out-of-knowledge cases made from in-knowledge questions, each verified before it is kept.

Four ways to turn an answerable question into one the prompt cannot answer:

``context_swap``
    The same question, shown with the nearest passages that do *not* hold its answer. Only the
    evidence differs from the in-knowledge case: the minimal pair that teaches reading the context.
``entity_swap``
    The question's key name or number is replaced by one the knowledge base never mentions
    (``Nimbus Flex 20`` -> ``Nimbus Flex 35``), shown with the original evidence.
``unstated_detail``
    A new question about the evidence's subject (its title) asking for an attribute that neither
    the evidence nor any passage about that subject states (colour, weight, launch year ...).
``false_premise``
    A question that presupposes something about the subject that nothing in the knowledge base
    says ("Why was Nimbus Flex 20 discontinued last month?").

Every builder checks its own condition and returns ``None`` when it cannot make a clean case;
:func:`verify_ook` re-checks a finished case (the pipeline calls it once more before keeping it).
All functions are deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections import Counter
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from data_builders.kb_text import count_mentions
from data_builders.answer_types import answer_type, contains_answer, extract_entities
from data_builders.records import Case
from halluguard.kb import Passage, Question

CONTEXT_SWAP, ENTITY_SWAP, UNSTATED_DETAIL, FALSE_PREMISE = "context_swap", "entity_swap", "unstated_detail", "false_premise"
SYNTHETIC_KINDS = (CONTEXT_SWAP, ENTITY_SWAP, UNSTATED_DETAIL, FALSE_PREMISE)
_SUFFIX = {CONTEXT_SWAP: "swap", ENTITY_SWAP: "entity", UNSTATED_DETAIL: "detail", FALSE_PREMISE: "premise"}


# ---------------------------------------------------------------- shared helpers

def _full_text(p: Passage) -> str:
    return f"{p.title}\n{p.text}" if p.title else p.text


def _mentions(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as whole words, ignoring case."""
    return re.search(r"(?<![\w])" + re.escape(phrase) + r"(?![\w])", text, re.IGNORECASE) is not None


def _in_kb(phrase: str, passages: Sequence[Passage]) -> bool:
    return count_mentions(phrase, passages) > 0


def _synthetic(question: Question, kind: str, text: str, evidence: list[Passage], group: str,
               meta: dict) -> Case:
    return Case(id=f"{question.id}~{_SUFFIX[kind]}", question=text, label="ook", kind=kind, evidence=list(evidence),
                answers=[], source_question_id=question.id, group=group, synthetic=True,
                meta={"original_question": question.question, **meta})


def _gold_type(answers: Sequence[str]) -> str:
    types = [answer_type(a) for a in answers if a.strip()]
    return types[0] if types else "other"


# ---------------------------------------------------------------- (a) context swap

def context_swap(question: Question, gold_evidence_ids: set[str], neighbours: list[Passage], k: int,
                 group: str = "") -> Optional[Case]:
    """The same question with the nearest passages that neither are gold nor hold a gold answer.

    ``neighbours`` are ordered by similarity to the question. Up to ``k`` are kept; ``None`` when
    none qualifies (or when the question has no gold answer to check against).
    """
    answers = [a for a in question.answers if a.strip()]
    if not answers or k < 1:
        return None
    gold = set(gold_evidence_ids)
    if question.passage_id:
        gold.add(question.passage_id)
    kept: list[Passage] = []
    for p in neighbours:
        if p.id in gold or any(p.id == q.id for q in kept):
            continue
        if contains_answer(_full_text(p), answers):
            continue
        kept.append(p)
        if len(kept) == k:
            break
    if not kept:
        return None
    return _synthetic(question, CONTEXT_SWAP, question.question, kept, group,
                      {"original_answers": list(question.answers), "expected_type": _gold_type(answers),
                       "swapped_from": sorted(gold)})


# ---------------------------------------------------------------- (b1) entity swap

_COMPARATIVES = re.compile(r"\b(?:more|less|fewer|over|under|above|below|than|worth|least|most|up to|within)\s*$",
                           re.IGNORECASE)
_NUMBER_UNIT = re.compile(r"(?<![\w€$£.,])(\d+)(?:(\s?(?:GB|MB|TB|W|mAh|MP|Mbps))|(-(?:minute|month|day|year|GB|inch)))\b")
_NAME_SUFFIXES = ("Plus", "Pro", "Max", "Lite", "Ultra", "Mini", "Prime", "Edge", "Air", "Neo")
_GENERIC_SHARE = 0.15
"""A name found in more than this share of passages (the company's own name) is not a key entity."""


def _number_variants(n: int, rng: random.Random) -> list[int]:
    if n < 10:
        cands = [n + 1, n + 2, n + 3, n + 4, n + 6, n + 9, n * 3]
    elif n < 100:
        cands = [n + 5, n + 10, n + 15, n + 25, n * 2, n - 5, n + 40]
    elif n < 1000:
        cands = [n + 50, n + 100, n * 2, n + 250, n - 50, n * 3]
    else:
        cands = [n * 2, n + 1000, n + n // 2, n - n // 4]
    cands = [c for c in dict.fromkeys(cands) if c > 0 and c != n]
    rng.shuffle(cands)
    return cands


def _entity_variants(entity: str, rng: random.Random) -> list[tuple[str, str]]:
    """``(new entity, the distinctive part to check)`` candidates, in rng order."""
    tokens = entity.split()
    # Digits in a network generation ("Basic 4G") are not a model number: "13G" would read as nonsense.
    digit_idx = [i for i, t in enumerate(tokens) if re.search(r"\d", t) and not re.fullmatch(r"\d+G", t)]
    out: list[tuple[str, str]] = []
    if digit_idx:
        i = digit_idx[-1]
        tok = tokens[i]
        m = list(re.finditer(r"\d+", tok))[-1]
        n = int(m.group(0))
        for v in _number_variants(n, rng):
            new_tok = tok[:m.start()] + str(v) + tok[m.end():]
            new_tokens = tokens[:i] + [new_tok] + tokens[i + 1:]
            # The part that must be new: the changed token with its left neighbour when it is a bare number.
            probe = new_tok if re.search(r"[A-Za-z]", new_tok) or i == 0 else f"{tokens[i - 1]} {new_tok}"
            out.append((" ".join(new_tokens), probe))
    else:
        suffixes = [s for s in _NAME_SUFFIXES if s.lower() not in entity.lower()]
        rng.shuffle(suffixes)
        out += [(f"{entity} {s}", f"{tokens[-1]} {s}") for s in suffixes]
    return out


def _key_entities(text: str, all_passages: Sequence[Passage]) -> list[tuple[int, int, str]]:
    """Spans in a question worth swapping, best first: names with a number, other names, numbers with units."""
    n = max(1, len(all_passages))
    found = []
    for s, e in extract_entities(text):
        name = text[s:e]
        if name.endswith("'s") or name.endswith("’s"):
            name, e = name[:-2], e - 2
        share = count_mentions(name, all_passages) / n
        if share > _GENERIC_SHARE:
            continue
        has_digit = bool(re.search(r"\d", name))
        words = len(name.split())
        if not has_digit and words == 1 and not re.search(r"[a-z][A-Z]", name):
            continue  # a lone capitalised word ("Junior") is too weak to carry the swap
        rank = 0 if has_digit else (1 if words > 1 else 2)
        found.append((rank, s, e, "name"))
    for m in _NUMBER_UNIT.finditer(text):
        if _COMPARATIVES.search(text[:m.start()]):
            continue  # "more than €700": another number may still satisfy the condition
        if any(s <= m.start() < e for _, s, e, _ in found):
            continue
        found.append((3, m.start(), m.end(), "quantity"))
    found.sort(key=lambda t: (t[0], t[1]))
    return [(s, e, how) for _, s, e, how in found]


def entity_swap(question: Question, evidence: list[Passage], all_passages: Sequence[Passage],
                rng: random.Random, group: str = "") -> Optional[Case]:
    """Replace the question's key name (or number with a unit) by a variant no passage mentions."""
    text = question.question
    for s, e, how in _key_entities(text, all_passages):
        old = text[s:e]
        if how == "quantity":
            m = _NUMBER_UNIT.fullmatch(old)
            n = int(m.group(1))
            unit = old[len(m.group(1)):]
            variants = [(f"{v}{unit}", f"{v}{unit}") for v in _number_variants(n, rng)]
        else:
            variants = _entity_variants(old, rng)
        for new, probe in variants:
            if _in_kb(new, all_passages) or _in_kb(probe, all_passages):
                continue
            new_text = text[:s] + new + text[e:]
            if any(_mentions(_full_text(p), new) for p in evidence):
                continue
            return _synthetic(question, ENTITY_SWAP, new_text, evidence, group,
                              {"from": old, "to": new, "checked": probe,
                               "source_answers": list(question.answers),
                               "expected_type": _gold_type(question.answers),
                               "subject": new})
    return None


# ---------------------------------------------------------------- (b2, b3) templates about the subject

@dataclass(frozen=True)
class Template:
    text: str
    """Question with ``{s}`` for the subject."""
    absent: tuple[str, ...]
    """Regexes (case-insensitive, matched from a word start) that must not occur in the evidence nor in any
    passage about the subject: if one does, the detail may be stated and the case is not clean."""
    type: str
    """Expected answer type of the new question (drives which fabrications fit it)."""
    missing: str
    """What a refusal says is missing, with ``{s}``."""
    subjects: tuple[str, ...] = ("device", "offer")
    """Which subjects it fits: ``device`` (a physical product), ``offer`` (a named plan or service), ``plan``
    (an offer with a monthly price and an allowance; also fits ``offer`` templates), ``topic``."""


_YEAR = r"(?:1[89]|20)\d\d\b"

UNSTATED_TEMPLATES: tuple[Template, ...] = (
    Template("What colour options does {s} come in?", (r"colou?r", "black", "white", "gr[ae]y", "graphite", "navy",
             "blue", "red\\b", "green", "silver", "gold\\b", "sand", "pink", "purple"), "other",
             "the colour options for {s}", ("device",)),
    Template("How much does {s} weigh?", ("weigh", "grams?\\b", "kg\\b", r"\d+\s?g\b"), "number",
             "the weight of {s}", ("device",)),
    Template("Which company manufactures {s}?", ("manufactur", "made by", "produced by", "built by", "maker",
             "brand", "supplier", "factory"), "entity", "who manufactures {s}", ("device",)),
    Template("How long does the battery of {s} last on standby?", ("battery", "standby", "mah\\b", "hours?\\b"),
             "duration", "the standby battery life of {s}", ("device",)),
    Template("In which year was {s} first introduced?", ("introduc", "launch", "since", "first (?:sold|offered)",
             _YEAR), "date", "when {s} was introduced"),
    Template("Who is the manager responsible for {s}?", ("manager", "responsible", "in charge", "head of", "lead"),
             "entity", "who is responsible for {s}"),
    Template("What discount do students get on {s}?", ("student", "discount", r"\d+\s?%", "percent", "cheaper",
             "reduc"), "percent", "any student discount on {s}"),
    Template("How many customers currently use {s}?", ("customers use", "subscriber", "users", "million",
             "popular", "customers have"), "number", "how many customers use {s}"),
    Template("What is the one-off activation fee for {s}?", ("activat", "set-?up fee", "connection fee", "one-off",
             "joining fee"), "money", "an activation fee for {s}", ("offer",)),
    Template("How long is the free trial period for {s}?", ("trial", "try", "free for", "test"), "duration",
             "a free trial of {s}"),
    Template("What customer satisfaction score does {s} have?", ("satisf", "rating", "rated", "review", "score",
             "stars?\\b"), "percent", "a satisfaction score for {s}"),
    Template("What is the maximum number of people who can share {s}?", ("share", "sharing", "people", "users",
             "maximum", "up to", "family"), "number", "how many people can share {s}", ("plan",)),
    Template("Which department is responsible for {s}?", ("department", "team", "handled by", "responsible",
             "desk", "office", "unit\\b"), "entity", "which department handles {s}", ("topic",)),
    Template("When was the policy on {s} last updated?", ("updated", "revised", "last changed", "amend", "version",
             _YEAR), "date", "when the policy on {s} was last updated", ("topic",)),
    Template("How many complaints about {s} were received last year?", ("complain", "last year", "per year",
             "each year", "annual", "statistic"), "number", "the number of complaints about {s}", ("topic",)),
    Template("Which regulation is the policy on {s} based on?", ("regulat", "law\\b", "laws\\b", "legal",
             "act\\b", "directive", "authorit", "gdpr", "statut"), "entity", "the regulation behind {s}", ("topic",)),
    Template("What is the direct phone number for questions about {s}?", ("phone", "call", r"0\d{3}", "number",
             "line\\b", "ring"), "phone", "a phone number for {s}", ("topic",)),
)

FALSE_PREMISE_TEMPLATES: tuple[Template, ...] = (
    Template("Why was {s} discontinued last month?", ("discontinu", "withdrawn", "no longer", "stopped",
             "replaced", "last month", "end of sale"), "other", "anything saying {s} was discontinued"),
    Template("How do I claim the free upgrade that comes with {s}?", ("upgrade", "claim", "free gift", "bonus"),
             "other", "any free upgrade with {s}"),
    Template("Since {s} doubled in price this year, what does it cost now?", ("doubl", "price ris", "rise",
             "went up", "increase", "price change"), "money", "any price doubling for {s}", ("offer", "device")),
    Template("How many loyalty points do I earn each month with {s}?", ("points?\\b", "loyalty", "earn",
             "reward"), "number", "a loyalty points scheme for {s}"),
    Template("When will {s} be back in stock after the recall?", ("recall", "stock", "back in", "withdrawn",
             "sold out", "availab"), "date", "any recall of {s}", ("device",)),
    Template("What refund do I get for the {s} outage last week?", ("outage", "refund", "compensat", "disrupt",
             "fault"), "money", "any outage affecting {s}", ("offer",)),
    Template("What is the cancellation fee for the 48-month version of {s}?", ("48", "cancel", "term",
             "contract", "version", "month"), "money", "a 48-month version of {s}", ("offer", "device")),
    Template("Which streaming services come free with {s}?", ("stream", "music", "video", "tv\\b", "film",
             "zero-rat", "included free", "subscription"), "entity", "any streaming services included with {s}",
             ("offer",)),
    Template("What number do I call to join the waiting list for {s}?", ("waiting list", "queue", "register",
             "sign up", "call", r"0\d{3}"), "phone", "a waiting list for {s}", ("device",)),
    Template("Why were the rules on {s} changed last week?", ("chang", "new rules", "updated", "amend",
             "last week", "revised"), "other", "any recent change to the rules on {s}", ("topic",)),
    Template("How much is the new admin fee for {s} that started this year?", ("admin", "fee", "charge",
             "€", r"\$", "£", "cost", "pay"), "money", "any admin fee for {s}", ("topic",)),
    Template("Since {s} {is} now handled only by post, what address do I write to?", ("post\\b", "postal",
             "letter", "address", "write", "mail"), "other", "anything saying {s} is handled by post",
             ("topic",)),
    Template("When does the holiday suspension of {s} end?", ("suspen", "holiday", "pause", "christmas",
             "closed"), "date", "any holiday suspension of {s}", ("topic",)),
    Template("Why is {s} no longer offered to customers under 30?", ("under", "aged?\\b", "years old",
             "young", "no longer", "age\\b"), "other", "any age limit on {s}", ("topic", "offer")),
)

_DEVICE_WORDS = re.compile(r"\b(?:screen|battery|charger|charging|inch|mAh|earbuds|cases?|cable|router|mount|"
                           r"camera|watch|wireless|USB|plug|weighs?|storage|smartphone|keypad|foldable)\b", re.IGNORECASE)
_OFFER_WORDS = re.compile(r"\b(?:per month|a month|monthly|plans?|add-ons?|bundles?|pass|service|subscription|"
                          r"allowance|data|minutes|texts|tariff|scheme|option|insurance|programme|team)\b", re.IGNORECASE)
_PLAN_TEXT = re.compile(r"\b(?:per month|a month|monthly)\b", re.IGNORECASE)
_TITLE_NAME_TOKEN = re.compile(r"^(?:[A-Z][\w'’+\-]*|[A-Za-z]*\d[\w\-]*|[a-z]+[A-Z][\w\-]*)$")
_WH_START = re.compile(r"^(?:who|what|when|where|why|how|which|is|are|can|do|does)\b", re.IGNORECASE)


def _subject(evidence: list[Passage], answers: Sequence[str]) -> Optional[Passage]:
    """The passage whose subject a new question is about: the first one holding a gold answer, else the first."""
    with_title = [p for p in evidence if p.title.strip()]
    if not with_title:
        return None
    for p in with_title:
        if answers and contains_answer(p.text, answers):
            return p
    return with_title[0]


def _subject_phrase(title: str, text: str) -> tuple[str, str]:
    """``(phrase, kind)``: the name to put in a question and whether it is a device, an offer or a topic.

    A title that opens with two or more name-like tokens (``Nimbus Flex 20``, ``Kestrel K9 Pro``,
    ``Nimbus Go bundles`` -> ``Nimbus Go``) is a named thing; anything else (``Late payment``) is a
    topic, lower-cased at the start unless its first word looks like a name.
    """
    title = " ".join(title.replace("_", " ").split())
    tokens = title.split()
    if not tokens:
        return "", "topic"
    run = 0
    for t in tokens:
        if not _TITLE_NAME_TOKEN.match(t):
            break
        run += 1
    if re.search(r"(?:ing|ed)$", tokens[0]) and tokens[0][1:].islower():
        run = 0  # "Leaving Nimbus with your number", "Braided USB-C cable": a topic, not a name
    camel = bool(re.search(r"[a-z][A-Z]", tokens[0]))
    if run >= 2 or (len(tokens) == 1 and re.search(r"[a-z][A-Z]|[A-Z]{2,}|\d", tokens[0])) or (run == 1 and camel):
        name = " ".join(tokens[:run]) if run >= 2 else title
        device = len(_DEVICE_WORDS.findall(f"{title} {text}"))
        offer = len(_OFFER_WORDS.findall(f"{title} {text}"))
        if device > offer:
            return name, "device"
        return name, ("plan" if _PLAN_TEXT.search(text) and re.search(r"\b(?:GB|data|minutes)\b", text) else "offer")
    if _WH_START.match(title):
        return "", "topic"
    first = tokens[0]
    if first[:1].isupper() and first[1:].islower():
        title = first.lower() + title[len(first):]
    return title, "topic"


def _absent(template: Template, subject: str, evidence: list[Passage], all_passages: Sequence[Passage]) -> tuple[bool, str]:
    """Whether none of the template's keywords occurs in the evidence or in any passage about the subject."""
    about = [p for p in all_passages if _mentions(_full_text(p), subject)] if subject else []
    for p in list(evidence) + about:
        body = _full_text(p)
        for pattern in template.absent:
            if re.search(r"(?<![\w])" + pattern, body, re.IGNORECASE):
                return False, f"passage {p.id} may state it ('{pattern}')"
    return True, ""


def _from_templates(templates: Sequence[Template], kind: str, question: Question, evidence: list[Passage],
                    all_passages: Sequence[Passage], rng: random.Random, group: str) -> Optional[Case]:
    subject_passage = _subject(evidence, question.answers)
    if subject_passage is None:
        return None
    phrase, subject_kind = _subject_phrase(subject_passage.title, subject_passage.text)
    if not phrase:
        return None
    kinds = {subject_kind, "offer"} if subject_kind == "plan" else {subject_kind}
    fitting = [t for t in templates if kinds & set(t.subjects)]
    order = list(range(len(fitting)))
    rng.shuffle(order)
    check_subject = phrase if subject_kind != "topic" else ""
    words = {"s": phrase, "is": "are" if subject_kind == "topic" and re.search(r"[^s]s$", phrase) else "is"}
    if subject_kind == "device" and not phrase.lower().startswith("the "):
        words["s"] = "the " + phrase
    for i in order:
        t = fitting[i]
        ok, _ = _absent(t, check_subject, evidence, all_passages)
        if not ok:
            continue
        text = t.text.format(**words)
        text = text[0].upper() + text[1:]
        return _synthetic(question, kind, text, evidence, group,
                          {"subject": phrase, "subject_kind": subject_kind, "subject_passage": subject_passage.id,
                           "template": t.text, "absent": list(t.absent), "expected_type": t.type,
                           "missing": t.missing.format(**words)})
    return None


def unstated_detail(question: Question, evidence: list[Passage], all_passages: Sequence[Passage],
                    rng: random.Random, group: str = "") -> Optional[Case]:
    """Ask for an attribute of the evidence's subject that neither the evidence nor the KB states."""
    return _from_templates(UNSTATED_TEMPLATES, UNSTATED_DETAIL, question, evidence, all_passages, rng, group)


def false_premise(question: Question, evidence: list[Passage], all_passages: Sequence[Passage],
                  rng: random.Random, group: str = "") -> Optional[Case]:
    """Ask a question that presupposes something about the evidence's subject that nothing supports."""
    return _from_templates(FALSE_PREMISE_TEMPLATES, FALSE_PREMISE, question, evidence, all_passages, rng, group)


# ---------------------------------------------------------------- verification and the driver

def verify_ook(case: Case, answers: list[str]) -> tuple[bool, str]:
    """Re-check that the prompt of a synthetic case cannot be answered from its evidence.

    ``answers`` are the source question's gold answers. For ``context_swap`` (and any case that
    keeps the source question) none may appear in the evidence. The question-edit kinds ask a
    *different* question, so the source's answer may legitimately sit in the evidence; for them the
    check is the edit's own: the swapped-in name is absent from the evidence (``entity_swap``), or
    no keyword of the asked detail occurs in it (``unstated_detail``, ``false_premise``).
    Returns ``(ok, reason)``; ``reason`` is empty when ok.
    """
    if case.kind == ENTITY_SWAP:
        new = str(case.meta.get("to", ""))
        if not new:
            return False, "entity_swap case without meta['to']"
        for p in case.evidence:
            if _mentions(_full_text(p), new):
                return False, f"swapped-in '{new}' appears in evidence passage {p.id}"
        return True, ""
    if case.kind in (UNSTATED_DETAIL, FALSE_PREMISE) and "absent" in case.meta:
        t = Template("", tuple(case.meta["absent"]), "other", "")
        ok, why = _absent(t, "", case.evidence, [])
        return ok, why
    for a in answers:
        for p in case.evidence:
            if contains_answer(_full_text(p), [a]):
                return False, f"gold answer '{a}' appears in evidence passage {p.id}"
    return True, ""


def synthesize(question: Question, evidence: list[Passage], neighbours: list[Passage],
               all_passages: Sequence[Passage], cfg, k: int, rng: random.Random, group: str = "",
               language: str = "en", counts: Optional[Counter] = None) -> list[Case]:
    """Verified OOK cases from one IK question: context swap first, then the question edits.

    ``evidence`` is what the IK prompt shows (top-``k`` retrieval); ``neighbours`` the wider
    retrieval pool, best first (``cfg.context_swap_pool`` of them are searched). At most
    ``cfg.max_per_question`` cases: the context swap, then an entity swap where the question names
    something, then the two template edits in an rng-chosen order.
    """
    limit = int(cfg.max_per_question)
    if limit <= 0:
        return []
    out: list[Case] = []
    if cfg.context_swap:
        gold = {p.id for p in evidence if contains_answer(_full_text(p), question.answers)}
        case = context_swap(question, gold, list(neighbours)[:int(cfg.context_swap_pool)], k, group)
        if case is not None and verify_ook(case, question.answers)[0]:
            out.append(case)
    # Entity swaps apply to few questions (those that name something) and make the closest pairs:
    # try them first; the two template edits follow in an rng-chosen order.
    templated = [fn for flag, fn in ((cfg.unstated_detail, unstated_detail), (cfg.false_premise, false_premise))
                 if flag]
    rng.shuffle(templated)
    edits = ([entity_swap] if cfg.entity_swap else []) + templated
    if language != "en":
        # The question edits rewrite English questions (templates, capitalised names); in other
        # languages only the context swap, which keeps the question, applies. Counted, not silent.
        if counts is not None and edits:
            counts[f"question_edits_skipped:{language}"] += 1
        edits = []
    for fn in edits:
        if len(out) >= limit:
            break
        case = fn(question, evidence, all_passages, rng, group)
        if case is not None and verify_ook(case, question.answers)[0]:
            out.append(case)
    return out[:limit]
