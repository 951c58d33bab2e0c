"""Fast "how many passages mention this phrase?" over a whole knowledge base.

The builders ask it for every candidate entity of every question; a regex over every passage each
time dominated the build on SQuAD 2.0. A plain substring test on cached lowercase texts rules out
almost every passage first, and answers are memoised per knowledge base.
"""

from __future__ import annotations

import re
from typing import Sequence

from data_builders.kb_memo import KBMemo
from halluguard.kb import Passage

_TEXTS = KBMemo(max_entries=32)


def _texts(passages: Sequence[Passage], with_title: bool) -> tuple[list[str], list[str], dict]:
    def compute():
        raw = [f"{p.title}\n{p.text}" if (with_title and p.title) else p.text for p in passages]
        return raw, [t.lower() for t in raw], {}
    return _TEXTS.get(passages, with_title, compute)


def count_mentions(phrase: str, passages: Sequence[Passage], *, with_title: bool = True,
                   ignore_case: bool = True) -> int:
    """Passages that contain ``phrase`` as whole words."""
    raw, lower, memo = _texts(passages, with_title)
    key = (phrase, ignore_case)
    if key not in memo:
        rx = re.compile(r"(?<![\w])" + re.escape(phrase) + r"(?![\w])", re.IGNORECASE if ignore_case else 0)
        needle = phrase.lower()
        memo[key] = sum(1 for r, low in zip(raw, lower) if needle in low and rx.search(r))
    return memo[key]
