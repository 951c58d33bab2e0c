"""Answer types and value extraction for Chinese text (the counterpart of ``answer_types``).

``answer_types.answer_type`` and ``answer_types.extract_values`` hand any text containing CJK
ideographs to this module, so the builders type ``39元`` as money and find ``7天`` in a Chinese
passage the way they find ``€9.99`` and ``14 days`` in an English one. The English patterns
cannot serve: Python's ``\\w`` counts ideographs as word characters, so the English word
boundaries never open inside unspaced Chinese text.

Values are written with Arabic digits in the knowledge bases this targets (``39元``, ``24个月``,
``400-880-1234``); common Chinese numerals are accepted for durations and counts (``两个工作日``).
"""

from __future__ import annotations

import re
from functools import lru_cache

_NUM = r"\d[\d,]*(?:\.\d+)?"
_CN_NUM = r"[一二两三四五六七八九十百千半几]+"
# Left/right edges of a number: not inside a longer number or a Latin word ("Flex 20" is a name).
_L = r"(?<![\d.,A-Za-z])"
_R = r"(?![\d.])"

_PER = r"(?:(?:\s?/\s?|每)(?:月|个月|年|天|日|分钟|GB|MB|条|次|人|台|张|小时|周))"

PATTERNS: dict[str, re.Pattern] = {
    "phone": re.compile(
        _L + r"(?:[48]00-?\d{3}-?\d{4}"  # 400-880-1234
        r"|0\d{2,3}-\d{7,8}"  # 010-12345678
        r"|1[3-9]\d{9}"  # mobile numbers
        r"|1\d{4}(?![\d元块%GMTK年月日天个次分秒小周号万]))" + _R),  # 5-digit hotlines (10086-style)
    "time": re.compile(
        _L + r"(?:[01]?\d|2[0-3])[:：][0-5]\d" + _R +
        r"|(?:上午|下午|晚上|早上|中午|凌晨|傍晚)?" + _L + r"(?:\d{1,2}|[一二两三四五六七八九十]{1,3})点(?:半|\d{1,2}分|整)?"),
    "date": re.compile(
        _L + r"\d{4}年(?:\d{1,2}月(?:\d{1,2}[日号])?)?"
        r"|" + _L + r"\d{1,2}月\d{1,2}[日号]"
        r"|每(?:个)?月\d{1,2}[日号]"
        r"|每月(?:底|初|末)"
        r"|(?:每)?(?:周|星期|礼拜)[一二三四五六日天]"),
    "percent": re.compile(
        _L + _NUM + r"\s?[%％]"
        r"|百分之" + r"[\d一二三四五六七八九十百点]+"
        r"|" + _L + r"(?:\d(?:\.\d)?|[一二三四五六七八九])折"),
    "money": re.compile(
        r"(?:[¥￥]\s?" + _NUM + r"(?:元)?"
        r"|" + _L + _NUM + r"\s?(?:万元|元|块钱|块|美元|欧元|港币|港元|日元|英镑)"
        r"|" + _CN_NUM + r"(?:元|块钱|块))" + _PER + r"?"),
    "duration": re.compile(
        r"(?:" + _L + _NUM + r"|" + _CN_NUM + r")\s?个?(?:工作日|自然日|小时|分钟|秒钟?|天|周|星期|个月|年)(?:内|以内)?"),
    "number": re.compile(
        _L + _NUM + r"\s?(?:GB|MB|TB|KB|Mbps|Gbps|G|M|T|兆|英寸|寸|毫安时|mAh|W|瓦|kg|公斤|克|米|公里|台|张|个|次|条|部|"
        r"位|人|岁|分钟数|分|积分|家|项|种|档|路|倍|小时|Hz|赫兹|像素|万像素)?" + _R
        + r"|" + _CN_NUM + r"(?:台|张|个|次|条|部|位|人|家|项|种|档|倍)"),
    # Names inside Chinese text: Latin product names ("Flex 20", "Galaxy A5", "eSIM Plus") and
    # anything in title or corner quotes.
    "entity": re.compile(
        r"(?<![A-Za-z0-9])[A-Z][A-Za-z+\-]*(?:[ \-]?(?:[A-Z][A-Za-z+\-]*|\d+[A-Za-z]*))*(?![A-Za-z0-9])"
        r"|(?<=《)[^《》]{1,20}(?=》)|(?<=「)[^「」]{1,20}(?=」)|(?<=“)[^“”]{1,16}(?=”)"),
}
# Earlier types claim their spans: "39元/月" is money, not a number; "400-880-1234" is no count.
_ORDER = ("phone", "time", "date", "percent", "money", "duration", "number")
# Qualifiers around a value in a short answer ("约7天", "最多3次", "24个月以内").
_QUALIFIERS = re.compile(r"^(?:约|大约|大概|最多|至多|至少|最少|不超过|不少于|超过|仅|只|只需|只要|需|需要|共|一共|每月|每年|"
                         r"每天|每次|每人|每|满|前|后|为|是)+|(?:左右|以内|以上|以下|之内|内|起|整)+$")
# Latin tokens that are technology words, not names of something a question could be about.
_COMMON_LATIN = {"SIM", "eSIM", "App", "APP", "Wi-Fi", "WiFi", "USB", "PIN", "PUK", "VIP", "GB", "MB", "TB", "Mbps",
                 "Gbps", "4G", "5G", "3G", "QR", "VoLTE", "ID", "PDF", "SMS", "IPTV", "TV", "CEO", "A", "B", "C"}


_NAME_END = re.compile(r"(?:卡|套餐|流量包|包|宽带|会员|计划|服务|保障|保|号|版|机|App|APP|中心|营业厅|厅|银行|公司|部|平台|"
                       r"网|商城|钱包|积分|热线|专线|系统|路由器|光猫|手机|手表|耳机)$")


def _spans(text: str, type_: str) -> list[tuple[int, int]]:
    return [m.span() for m in PATTERNS[type_].finditer(text)]


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in spans)


def _fully(type_: str, text: str) -> bool:
    m = PATTERNS[type_].fullmatch(text)
    return m is not None


@lru_cache(maxsize=65536)
def answer_type(text: str) -> str:
    """The type of a short Chinese answer: money, percent, duration, time, date, number, phone, entity or other."""
    t = "".join(str(text).split()) if not re.search(r"[A-Za-z]\s+[A-Za-z0-9]", str(text)) else " ".join(str(text).split())
    t = t.strip("，。！？；：、 ")
    if not t:
        return "other"
    core = _QUALIFIERS.sub("", t) or t
    for type_ in _ORDER:
        if _fully(type_, core) or _fully(type_, t):
            return type_
    # A short span that is mostly one value ("每月39元起") still takes the value's type.
    if len(core) <= 10:
        for type_ in _ORDER:
            m = PATTERNS[type_].search(core)
            if m and len(m.group(0)) >= len(core) - 2:
                return type_
    if PATTERNS["entity"].fullmatch(t) and t not in _COMMON_LATIN:
        return "entity"
    # A short noun phrase ending like a name of a thing ("星河卡", "畅享套餐", "安心保障服务"): the answer
    # to "哪个/叫什么". Other short phrases ("免费", "按月计费") are descriptions, not names.
    if len(t) <= 12 and not re.search(r"[，。；、？！\s]", t) and _NAME_END.search(t):
        return "entity"
    return "other"


def extract_values(text: str, type_: str) -> list[str]:
    """Every substring of Chinese ``text`` of the given type, in order of appearance, without repeats."""
    if type_ == "other":
        return []
    spans = _spans(text, type_)
    if type_ == "entity":
        taken = [sp for t in ("money", "date", "time", "phone") for sp in _spans(text, t)]
        spans = [sp for sp in spans if not _overlaps(sp, taken) and text[sp[0]:sp[1]].strip() not in _COMMON_LATIN]
    else:
        higher = _ORDER[:_ORDER.index(type_)]
        taken = [sp for t in higher for sp in _spans(text, t)]
        if type_ == "number":
            # Numbers inside Latin names ("Flex 20") belong to the name.
            taken += [sp for sp in _spans(text, "entity") if re.search(r"\d", text[sp[0]:sp[1]])]
        spans = [sp for sp in spans if not _overlaps(sp, taken)]
    out: list[str] = []
    seen: set[str] = set()
    for s, e in spans:
        value = text[s:e].strip(" ，,；;")
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out
