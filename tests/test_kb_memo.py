"""Per-knowledge-base memos (data_builders/kb_memo.py): a freed knowledge base's values never answer for
another one, which a key of ``id`` alone did (CPython reuses the id at once)."""

from __future__ import annotations

from data_builders.kb_memo import KBMemo
from data_builders.kb_text import count_mentions
from halluguard.kb import Passage


def kb(word: str) -> list[Passage]:
    return [Passage(id="p0", title="T", text="alpha beta"), Passage(id="p1", title="T", text=f"gamma {word}")]


def test_a_freed_knowledge_base_does_not_answer_for_the_next():
    for _ in range(20):  # the old id-keyed cache failed on the first round
        first = kb("delta")
        assert count_mentions("delta", first) == 1
        del first
        second = kb("omega")  # same length, same first id, often the same id as the list just freed
        assert count_mentions("delta", second) == 0
        assert count_mentions("omega", second) == 1


def test_memo_computes_once_per_knowledge_base_and_key():
    memo, calls = KBMemo(max_entries=8), []
    passages = kb("delta")

    def compute():
        calls.append(1)
        return len(calls)

    assert memo.get(passages, "a", compute) == 1
    assert memo.get(passages, "a", compute) == 1  # memoised
    assert memo.get(passages, "b", compute) == 2  # another key
    passages.append(Passage(id="p2", text="grown in place"))
    assert memo.get(passages, "a", compute) == 3  # the length changed: scanned again


def test_memo_is_bounded():
    memo = KBMemo(max_entries=2)
    kbs = [kb(str(i)) for i in range(5)]
    for i, passages in enumerate(kbs):
        assert memo.get(passages, None, lambda i=i: i) == i
    assert len(memo._entries) <= 2
