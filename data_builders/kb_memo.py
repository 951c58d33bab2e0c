"""Values computed once per knowledge base: the scans over every passage that the builders would
otherwise repeat for every question.

A knowledge base here is a sequence of passages, which cannot be a dict key or a weak reference.
Each entry keeps the sequence itself and is found by its ``id``; because the entry holds it, no other
object can take that ``id`` while the entry lives (CPython reuses an ``id`` as soon as an object is
freed, which made a key of ``id`` alone return another knowledge base's values). The length and the
first passage's id are checked too, so a list grown or replaced in place is scanned again.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")


class KBMemo:
    """``memo.get(passages, key, compute)``: ``compute()`` once per (knowledge base, key)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[Sequence, tuple, object]] = {}

    def get(self, passages: Sequence, key: Hashable, compute: Callable[[], T]) -> T:
        slot = (id(passages), key)
        signature = (len(passages), passages[0].id if len(passages) else "")
        entry = self._entries.get(slot)
        if entry is None or entry[0] is not passages or entry[1] != signature:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # knowledge bases per process are few; the bound only caps memory
            entry = (passages, signature, compute())
            self._entries[slot] = entry
        return entry[2]
