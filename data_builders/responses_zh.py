"""Chinese responses for the pairs: grounded answers, calibrated refusals, confident fabrications.

``responses`` hands a case here when its language is ``zh`` (``case.meta["language"]``, set by the
pipeline from ``kb.language`` or detected from the question). The roles are the English ones:
a refusal says what is missing and what the evidence covers, never a fact; a grounded answer keeps
the gold answer verbatim next to the evidence sentence that states it; a fabrication states a
wrong value with confidence.

Chinese asks a question with the question word where the answer goes ("套餐每月多少钱？" ->
"套餐每月39元。"), so a confident statement is the question with its question word replaced by the
value; that is simpler and more faithful than the English rewrite rules.
"""

from __future__ import annotations

import random
import re
from typing import Optional, Sequence

from data_builders.answer_types import answer_type, contains_answer, extract_values
from data_builders.records import Case

MAX_CHARS = 140

_SENTENCE_SPLIT = re.compile(r"(?<=[。！？!?])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def _end(s: str) -> str:
    s = s.rstrip().rstrip("，,；;：:")
    return s if s.endswith(("。", "！", "？", "!", "?", ".")) else s + "。"


# ---------------------------------------------------------------- expected answer type

_QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    (r"电话|热线|号码|拨打哪个|打哪个", "phone"),
    (r"几点|什么时间(?:开门|关门|营业|截止)|营业时间|开放时间", "time"),
    (r"百分之|比例|折扣|几折|打几折|百分比", "percent"),
    (r"多久|多长时间|几天|几个工作日|几个月|几年|多少天|多少个月|多少年|期限|有效期|时长", "duration"),
    (r"多少钱|什么价|价格|费用|收费|资费|月租|押金|违约金|花多少|付多少|要多少钱|多少元", "money"),
    (r"哪天|哪一天|哪年|哪一年|什么时候|何时|日期|几号|几月", "date"),
    (r"多少|几个|几次|几台|几张|几条|几位|几部|多大|多快|多少GB|速率|容量", "number"),
    (r"哪个|哪家|哪款|哪种|哪一个|叫什么|什么名字|名称|谁", "entity"),
)


def expected_type(question: str) -> str:
    for pattern, type_ in _QUESTION_TYPES:
        if re.search(pattern, question):
            return type_
    return "other"


# ---------------------------------------------------------------- confident statements (fabrications)

# Question word -> how the value replaces it; the longest forms first.
_IN_SITU: tuple[tuple[str, str], ...] = (
    (r"是多少钱|要多少钱|需要多少钱|花多少钱|多少钱", "{v}"),
    (r"是多少|为多少", "是{v}"),
    (r"有多少|有几(?:个|次|台|张|条|位)?", "有{v}"),
    (r"多长时间|多久|几个工作日|几个月|几年|几天|多少天", "{v}"),
    (r"什么时候|何时|哪一天|哪天|几号", "{v}"),
    (r"几点", "{v}"),
    (r"叫什么名字|叫什么", "叫{v}"),
    (r"是什么|是哪个|是哪家|是哪款|是哪种", "是{v}"),
    (r"哪个|哪家|哪款|哪种|什么", "{v}"),
    (r"几(?:个|次|台|张|条|位|部)|多少", "{v}"),
)
_LEADING = re.compile(r"^(?:请问一下|请问|想问一下|想问|我想知道|我想了解一下|我想了解|麻烦问一下|问一下|你好|您好)[，,]?\s*")
_TRAILING = re.compile(r"[呢呀啊吧嘛]?[？?！!。.\s]*$")
_CONFIDENT_OPENERS = ("", "", "", "根据我的信息，", "好的！")
_FALLBACKS = {
    "money": ("费用是{v}。", "需要{v}。", "价格为{v}。", "收费{v}。"),
    "percent": ("是{v}。", "比例为{v}。"),
    "duration": ("需要{v}。", "一般是{v}。", "期限为{v}。"),
    "time": ("是{v}。", "时间是{v}。"),
    "date": ("是{v}。", "日期是{v}。"),
    "number": ("是{v}。", "一共{v}。", "数量是{v}。"),
    "phone": ("号码是{v}。", "电话是{v}。"),
    "entity": ("是{v}。", "答案是{v}。", "就是{v}。"),
    "other": ("是{v}。", "答案是{v}。"),
}


def _swap_pronouns(text: str) -> str:
    """The customer's words as the assistant's: 我 -> 您, 你们 -> 我们."""
    text = text.replace("你们", "\0")
    text = re.sub(r"我(?!们)", "您", text)
    return text.replace("\0", "我们")


def confident_statement(question: str, value: str, type_: str, rng: random.Random) -> str:
    """A confident one-sentence answer to a Chinese ``question`` that states ``value``."""
    q = _TRAILING.sub("", _LEADING.sub("", "".join(question.split()) if not re.search(r"[A-Za-z]\s", question)
                                       else question.strip()))
    v = value.strip()
    out: Optional[str] = None
    if out is None and not re.search(r"吗$", q):
        for pattern, repl in _IN_SITU:
            hit = list(re.finditer(pattern, q))
            if hit:
                last = hit[-1]
                out = q[:last.start()] + repl.format(v=v) + q[last.end():]
                break
    if out is None:
        out = rng.choice(_FALLBACKS.get(type_, _FALLBACKS["other"])).format(v=v)
    out = _end(_swap_pronouns(out))
    return rng.choice(_CONFIDENT_OPENERS) + out


# ---------------------------------------------------------------- grounded answers (IK chosen)

_GROUNDED_STYLES = ("plain", "according", "short_first", "title_says", "based_on", "answer_is")


def _supporting(case: Case) -> tuple[str, str, str]:
    answers = [a for a in case.answers if a and a.strip()]
    # The gold passage first: a short value ("6个月") can also stand in another passage about something else.
    gold_id = case.meta.get("passage_id")
    ordered = sorted(case.evidence, key=lambda p: p.id != gold_id)
    sents = [(s, p.title) for p in ordered for s in sentences(p.text)]
    for a in answers:
        for s, title in sents:
            if a in s:
                return a, s, title
    for a in answers:
        for s, title in sents:
            if contains_answer(s, [a]):
                return a, s, title
    return (answers[0] if answers else ""), "", ""


def grounded_answer(case: Case, rng: random.Random) -> str:
    """The gold answer with the evidence sentence that states it, in one of a few styles."""
    gold, support, title = _supporting(case)
    if not gold:
        raise ValueError(f"case {case.id} has no gold answer to ground")
    if not support:
        return confident_statement(case.question, gold, answer_type(gold), rng)
    style = rng.choice(_GROUNDED_STYLES)
    support = _end(support)
    if style == "according" and title:
        text = f"根据《{title}》的资料，{support}"
    elif style == "short_first" and len(gold) <= 12:
        text = f"{gold}。{support}"
    elif style == "title_says" and title:
        text = f"关于{title}的资料写道：{support}"
    elif style == "based_on":
        text = f"根据提供的资料，{support}"
    elif style == "answer_is" and len(gold) <= 12:
        text = f"答案是{gold}：{support}"
    else:
        text = support
    if gold not in text:
        text = f"{gold}。{support}"
    if len(text) > MAX_CHARS:
        text = support
    return text


# ---------------------------------------------------------------- refusals (OOK chosen, IK needless refusal)

_MISSING_NOUN = {
    "money": ("价格", "费用", "具体金额"),
    "percent": ("具体比例", "折扣力度"),
    "duration": ("所需时间", "具体期限"),
    "time": ("具体时间", "确切时间"),
    "date": ("具体日期", "确切日期"),
    "number": ("具体数量", "确切数字"),
    "phone": ("联系电话", "对应的号码"),
    "entity": ("具体名称", "对应的名称"),
    "other": ("相关信息", "这方面的说明"),
}

_ASKS = (
    "您能提供更多细节吗，比如具体的套餐或业务名称？",
    "如果您有相关的合同或订单信息，可以发给我，我再帮您看看。",
    "请问您指的是哪一项业务？",
    "如果能告诉我更具体的情况，我可以再帮您查一下。",
    "您可以换个方式描述一下问题吗？",
    "如果您能指出相关的资料来源，我很乐意再看一遍。",
)

# Each family says what is missing ({missing}); most name what the evidence covers ({covers}) or
# ask for what would make the question answerable ({ask}). None states a fact.
_REFUSALS: tuple[str, ...] = (
    "我在{covers}中没有找到{missing}，所以不想随便猜测。{ask}",
    "{covers}没有提到{missing}。{ask}",
    "抱歉，我不知道：我掌握的资料里没有{missing}。我可以帮您解答关于{topics}的问题。",
    "很抱歉，这个问题我无法可靠地回答，因为资料中没有提及{missing}。{ask}",
    "我拿到的资料无法回答这个问题：资料涉及{topics}，但没有{missing}。",
    "根据{covers}，我无法确认{missing}。{ask}",
    "抱歉，我没有关于{missing}的信息。如果需要，我可以介绍一下{topics}的相关内容。",
    "{covers}里没有关于{missing}的记载，任何回答都只是猜测。{ask}",
    "这个问题我无法根据现有资料回答。{ask}",
    "我不能确定。{covers}没有给出{missing}，我不想编造答案。",
    "很遗憾，我回答不了。我只有{covers}，其中没有说明{missing}。",
    "我没有足够的信息来回答：我收到的资料中没有说明{missing}。{ask}",
)


def _subject(question: str) -> str:
    """A Latin product name the question is about ("Flex 20"), or ''."""
    names = extract_values(question, "entity")
    return names[0] if names else ""


def _missing(case: Case, rng: random.Random, type_: str) -> str:
    if case.meta.get("missing_zh"):
        return str(case.meta["missing_zh"])
    noun = rng.choice(_MISSING_NOUN.get(type_, _MISSING_NOUN["other"]))
    name = _subject(case.question)
    return f"{name}的{noun}" if name else f"您问的{noun}"


def _titles(case: Case, limit: int = 2) -> list[str]:
    seen: list[str] = []
    for p in case.evidence:
        t = p.title.strip()
        if t and t not in seen:
            seen.append(t)
    return seen[:limit]


def refusal(case: Case, rng: random.Random, type_: str, n: int = 1) -> list[str]:
    """``n`` distinct calibrated Chinese refusals for a case."""
    titles = _titles(case)
    if titles:
        topics = "、".join(titles)
        covers = "关于" + "和".join(f"《{t}》" for t in titles) + "的资料"
    else:
        topics, covers = "所提供资料中的内容", "我收到的资料"
    order = list(range(len(_REFUSALS)))
    rng.shuffle(order)
    out: list[str] = []
    for i in order:
        if len(out) >= max(0, n):
            break
        text = _REFUSALS[i].format(missing=_missing(case, rng, type_), covers=covers, topics=topics,
                                   ask=rng.choice(_ASKS))
        if len(text) <= MAX_CHARS and text not in out:
            out.append(text)
    return out


# ---------------------------------------------------------------- wrong answers (IK rejected)

# Most specific first: "不收费" must flip before "收费".
_NEGATION_FLIPS: tuple[tuple[str, str], ...] = (
    ("不收费", "收费"), ("免费", "收费"), ("不支持", "支持"), ("不能", "可以"), ("无法", "可以"), ("无需", "需要"),
    ("不需要", "需要"), ("不包含", "包含"), ("不包括", "包括"), ("不会", "会"), ("不可以", "可以"),
    ("包含", "不包含"), ("可以", "不可以"), ("支持", "不支持"), ("需要", "不需要"),
)


def flip_negation(gold: str) -> Optional[str]:
    for old, new in _NEGATION_FLIPS:
        if old in gold:
            out = gold.replace(old, new, 1)
            if out != gold:
                return out
    return None


def sentences_of(passages: Sequence) -> list[str]:
    return [s for p in passages for s in sentences(p.text)]
