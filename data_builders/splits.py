"""Train / held-out split by group, and the checks that nothing leaks across it.

The split unit is the *group* (an article, a handbook section): every case of a group lands on
one side, so the held-out questions ask about passages no training prompt was built around.
Synthetic cases (context swaps, entity swaps, ...) follow their source question.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Iterable, Optional, Sequence

from data_builders.records import Case
from halluguard.errors import HalluguardError
from halluguard.kb import Passage


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _hash_unit(key: str, seed: int) -> float:
    """A stable number in [0, 1) for ``key`` (the same on every machine and Python run)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _units(cases: Sequence[Case]) -> tuple[list[str], dict[str, str]]:
    """The split unit of each case: ``"group:<name>"`` or, without any group, ``"question:<key>"``.

    Cases are linked through ``source_question_id`` (a case to its source question and to the
    other cases of that source). A linked component takes the group of its non-synthetic cases
    (the source question's own group), else the first group any of its cases has; a component
    with no group at all is one unit keyed by its smallest ``source_question_id or id``.
    Returns (unit per case, effective group per case id).
    """
    uf = _UnionFind()
    for c in cases:
        uf.find(c.id)
        if c.source_question_id:
            uf.union(c.id, c.source_question_id)
    comp_group: dict[str, str] = {}
    comp_key: dict[str, str] = {}
    # Non-synthetic cases name the group first, in input order; synthetic ones only fill gaps.
    for synthetic_pass in (False, True):
        for c in cases:
            if c.synthetic != synthetic_pass or not c.group:
                continue
            comp_group.setdefault(uf.find(c.id), c.group)
    for c in cases:
        root = uf.find(c.id)
        key = c.source_question_id or c.id
        if root not in comp_key or key < comp_key[root]:
            comp_key[root] = key
    units, groups = [], {}
    for c in cases:
        root = uf.find(c.id)
        group = comp_group.get(root, "")
        groups[c.id] = group
        units.append(f"group:{group}" if group else f"question:{comp_key[root]}")
    return units, groups


def _side_info(cases: Sequence[Case]) -> dict:
    return {
        "cases": len(cases),
        "by_label": dict(sorted(Counter(c.label for c in cases).items())),
        "by_kind": dict(sorted(Counter(c.kind for c in cases).items())),
        "synthetic": sum(1 for c in cases if c.synthetic),
    }


def group_split(cases: Sequence[Case], heldout_fraction: float, seed: int) -> tuple[list[Case], list[Case], dict]:
    """Split ``cases`` into (train, held-out, info) by group.

    - Groups (the case's group; synthetic cases take their source question's group) are sorted,
      shuffled with ``seed`` and taken for held-out, in that order, whenever taking one brings the
      held-out share of grouped *cases* closer to ``heldout_fraction``. With two or more groups
      and 0 < fraction < 1, each side gets at least one group.
    - Cases without any group are assigned one by one (with their synthetic variants) by a stable
      hash of ``seed`` and ``source_question_id or id``: held out when it falls below the fraction.

    ``info``: ``train_groups``/``heldout_groups`` (names), ``train``/``heldout`` (cases, by_label,
    by_kind, synthetic), ``ungrouped`` (cases per side without a group), the target and actual
    held-out share, and ``seed``. Input order is kept within each side.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise HalluguardError(f"builder.split.heldout_fraction must be in [0, 1], got {heldout_fraction}")
    units, _ = _units(cases)
    group_sizes = Counter(u[len("group:"):] for u in units if u.startswith("group:"))
    order = sorted(group_sizes)
    random.Random(seed).shuffle(order)

    total = sum(group_sizes.values())
    target = heldout_fraction * total
    held: list[str] = []
    if heldout_fraction >= 1.0:
        held = list(order)
    elif heldout_fraction > 0.0:
        n = 0
        for g in order:
            if abs(n + group_sizes[g] - target) < abs(n - target):
                held.append(g)
                n += group_sizes[g]
        if len(order) >= 2:
            if not held:
                held.append(order[0])
            elif len(held) == len(order):
                held.pop()
    held_set = set(held)

    train, heldout = [], []
    ungrouped = Counter()
    for c, unit in zip(cases, units):
        if unit.startswith("group:"):
            is_held = unit[len("group:"):] in held_set
        else:
            is_held = _hash_unit(unit[len("question:"):], seed) < heldout_fraction
            ungrouped["heldout" if is_held else "train"] += 1
        (heldout if is_held else train).append(c)

    info = {
        "seed": seed,
        "heldout_fraction_target": heldout_fraction,
        "heldout_fraction_actual": round(len(heldout) / len(cases), 4) if cases else 0.0,
        "train_groups": sorted(g for g in order if g not in held_set),
        "heldout_groups": sorted(held_set),
        "train": _side_info(train),
        "heldout": _side_info(heldout),
        "ungrouped": {"train": ungrouped["train"], "heldout": ungrouped["heldout"]},
    }
    return train, heldout, info


def _name_some(ids: Iterable[str], limit: int = 10) -> str:
    ids = sorted(ids)
    more = f" (and {len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _gold_passage(case: Case) -> Optional[str]:
    pid = case.meta.get("passage_id") if case.meta else None
    return str(pid) if pid else None


def check_no_leakage(train_cases: Sequence[Case], heldout_cases: Sequence[Case]) -> None:
    """Raise :class:`HalluguardError`, naming the ids, when the split leaks held-out knowledge.

    Two rules, both must hold:

    (a) *Question ids*: no id appears on both sides, where a side's ids are its cases' ``id``
        and non-empty ``source_question_id`` values (a synthetic variant on one side and its
        source question on the other is a leak).
    (b) *Gold passages*: let G be the gold passage ids (``case.meta["passage_id"]``) of the
        held-out cases labelled ``ik``, and E the ids of every passage in the ``evidence`` of
        any training case. G and E must be disjoint: no training prompt shows a passage that
        answers a held-out in-knowledge question. (Held-out OOK cases have no gold passage;
        held-out cases without ``meta["passage_id"]`` are not checked by this rule.)
    """
    problems = []

    def ids_of(cases: Sequence[Case]) -> set[str]:
        return {c.id for c in cases} | {c.source_question_id for c in cases if c.source_question_id}

    shared = ids_of(train_cases) & ids_of(heldout_cases)
    if shared:
        problems.append(f"question ids on both sides of the split: {_name_some(shared)}")

    gold: dict[str, list[str]] = {}
    for c in heldout_cases:
        pid = _gold_passage(c)
        if c.label == "ik" and pid:
            gold.setdefault(pid, []).append(c.id)
    if gold:
        leaked: dict[str, set[str]] = {}
        for c in train_cases:
            for p in c.evidence:
                if p.id in gold:
                    leaked.setdefault(p.id, set()).add(c.id)
        if leaked:
            parts = [f"passage {pid} (gold of held-out {_name_some(gold[pid], 3)}; evidence of training "
                     f"{_name_some(leaked[pid], 3)})" for pid in sorted(leaked)[:10]]
            more = f" (and {len(leaked) - 10} more passages)" if len(leaked) > 10 else ""
            problems.append("held-out gold passages shown in training prompts: " + "; ".join(parts) + more)
    if problems:
        raise HalluguardError("the train/held-out split leaks: " + " | ".join(problems)
                              + ". Keep held-out passages out of training evidence (splits.evidence_mask) "
                              "and keep synthetic cases with their source question.")


def evidence_mask(passages: Iterable[Passage], heldout_groups: Iterable[str],
                  heldout_cases: Sequence[Case] = ()) -> set[str]:
    """Ids of the passages training prompts must not show.

    Every passage whose ``group`` is held out, plus (optional ``heldout_cases``) the gold passage
    (``meta["passage_id"]``) of each held-out ``ik`` case: this covers knowledge bases whose
    passages carry no group, where the split fell back to hashing questions.
    """
    groups = {g for g in heldout_groups if g}
    masked = {p.id for p in passages if p.group and p.group in groups}
    for c in heldout_cases:
        pid = _gold_passage(c)
        if c.label == "ik" and pid:
            masked.add(pid)
    return masked
