"""Filters that keep preference data hard enough to teach and clear enough to reward.

"Too fake teaches nothing, too ambiguous makes the reward noise." Every filter here is a plain
function that returns ``(kept, counts)``:

- ``kept`` is a new list (the input list is never changed; :func:`indistinguishable` returns
  copies of the pairs it scores, the others return the very objects they keep);
- ``counts`` is a JSON-able dict with at least ``filter`` (its name), ``threshold`` (None when
  the filter has none), ``seen`` and ``dropped``, plus filter-specific break-downs.

:meth:`FilterReport.from_counts` turns ``counts`` into a :class:`FilterReport`, and
:func:`summarize` turns a list of reports into rows for ``stats.json`` and the build summary.

The refusal detector is anything with ``score(list[str]) -> np.ndarray`` in [0, 1] (1 = an
abstention) and ``is_refusal(list[str]) -> np.ndarray[bool]`` (``halluguard.refusal``).
The encoder is anything with ``encode(list[str]) -> np.ndarray`` of unit float32 rows
(:class:`halluguard.retrieval.Encoder`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from data_builders.records import (
    EVASIVE_QUOTE,
    FABRICATION_EXTERNAL,
    FABRICATION_NEAR_MISS,
    FABRICATION_ON_POLICY,
    IK_GROUNDED_VS_REFUSAL,
    IK_GROUNDED_VS_WRONG,
    NEEDLESS_REFUSAL,
    OOK_REFUSAL_VS_FABRICATION,
    REFUSAL,
    Case,
    Pair,
    ProbeResult,
)
from halluguard.errors import HalluguardError

AMBIGUOUS = "ambiguous"
CONTEXT_SWAP = "context_swap"
IK_PAIR_KINDS = (IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG)
FABRICATION_KINDS = (FABRICATION_NEAR_MISS, FABRICATION_ON_POLICY, FABRICATION_EXTERNAL, EVASIVE_QUOTE)
REFUSAL_KINDS = (REFUSAL, NEEDLESS_REFUSAL)

# What each filter removes, in words (the default ``reason`` of its report).
REASONS = {
    "gray_zone": "final label is 'ambiguous': neither answering nor refusing is clearly right",
    "opposite_label_near_duplicates": "near-identical questions with opposite labels (ik vs ook) make the "
                                      "reward noise; context swaps of their own source are exempt",
    "refusal_in_negative": "the rejected fabrication or wrong answer is itself a refusal (teaches the opposite)",
    "positive_not_refusal": "the chosen refusal is not recognised as a refusal, or the chosen grounded answer is",
    "indistinguishable": "the refusal detector scores chosen and rejected within the margin",
    "too_fake_nll": "the rejected response is too unlikely under the reference model (too fake to teach)",
    "off_type": "the fabricated value has another type than the question's expected answer",
    "duplicate_pairs": "near-duplicate prompt and rejected response: one of each group is kept",
}


class RefusalDetectorLike(Protocol):
    def score(self, texts: list[str]) -> np.ndarray: ...

    def is_refusal(self, texts: list[str]) -> np.ndarray: ...


class EncoderLike(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# ---------------------------------------------------------------- reports

@dataclass
class FilterReport:
    name: str
    threshold: Optional[float]
    seen: int
    dropped: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    """Filter-specific counts (per pair kind, not scored, exempt, ...)."""

    @property
    def kept(self) -> int:
        return self.seen - self.dropped

    @classmethod
    def from_counts(cls, counts: Mapping[str, Any], name: Optional[str] = None,
                    threshold: Optional[float] = None, reason: Optional[str] = None) -> "FilterReport":
        """A report from a filter's ``counts`` (name and threshold are read from it unless given)."""
        name = name or str(counts.get("filter", "filter"))
        if threshold is None:
            threshold = counts.get("threshold")
        details = {k: v for k, v in counts.items() if k not in ("filter", "threshold", "seen", "dropped")}
        return cls(name=name, threshold=threshold, seen=int(counts.get("seen", 0)),
                   dropped=int(counts.get("dropped", 0)), reason=reason or REASONS.get(name, ""),
                   details=details)

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "seen": self.seen, "dropped": self.dropped,
                "kept": self.kept, "dropped_share": round(self.dropped / self.seen, 4) if self.seen else 0.0,
                "reason": self.reason, **self.details}


def summarize(reports: Iterable[Union[FilterReport, Mapping[str, Any]]]) -> list[dict]:
    """One JSON-able row per filter (in order): name, threshold, seen, dropped, kept, share, reason, details.

    Accepts :class:`FilterReport` objects or the raw ``counts`` dicts the filters return.
    """
    rows = []
    for report in reports:
        if not isinstance(report, FilterReport):
            report = FilterReport.from_counts(report)
        rows.append(report.to_dict())
    return rows


def _counts(name: str, threshold: Optional[float], seen: int, dropped: int, **details: Any) -> dict:
    return {"filter": name, "threshold": threshold, "seen": seen, "dropped": dropped, **details}


# ---------------------------------------------------------------- question filters

def gray_zone(items: Sequence[Union[Case, ProbeResult]]) -> tuple[list, dict]:
    """Drop questions whose final ``label`` is ``ambiguous`` (works on Cases or ProbeResults).

    Counts: ``dropped_by_kind`` (Cases: their kind) or ``dropped_by_probe_label`` (ProbeResults).
    """
    kept, by = [], Counter()
    for item in items:
        if item.label == AMBIGUOUS:
            by[getattr(item, "kind", None) or getattr(item, "probe_label", None) or "unknown"] += 1
        else:
            kept.append(item)
    key = "dropped_by_kind" if items and isinstance(items[0], Case) else "dropped_by_probe_label"
    return kept, _counts("gray_zone", None, len(items), len(items) - len(kept), **{key: dict(sorted(by.items()))})


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise HalluguardError(f"expected a 2-D array of vectors, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _block_rows(n_cols: int, cells: int = 1 << 22) -> int:
    """Rows per similarity block so that one block holds about ``cells`` floats (16 MB)."""
    return max(1, min(4096, cells // max(n_cols, 1)))


def _pairs_above(a: np.ndarray, b: np.ndarray, threshold: float) -> Iterable[tuple[int, int, float]]:
    """(i, j, cosine) for rows of ``a`` and ``b`` with cosine >= threshold, computed in row blocks."""
    block = _block_rows(len(b))
    for start in range(0, len(a), block):
        sims = a[start:start + block] @ b.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            yield start + r, c, float(sims[r, c])


def _related_by_source(x: Case, y: Case) -> bool:
    return bool((x.source_question_id and x.source_question_id == y.id)
                or (y.source_question_id and y.source_question_id == x.id)
                or (x.source_question_id and x.source_question_id == y.source_question_id))


def opposite_label_near_duplicates(cases: Sequence[Case], vectors: np.ndarray, threshold: Optional[float],
                                   exempt_kinds: Sequence[str] = (CONTEXT_SWAP,),
                                   max_examples: int = 10) -> tuple[list[Case], dict]:
    """Drop every case involved in a near-duplicate question pair with opposite labels.

    ``vectors[i]`` is the question embedding of ``cases[i]``. Two cases conflict when one is
    labelled ``ik``, the other ``ook`` and their cosine is >= ``threshold``. A conflict is exempt
    (neither side dropped for it) when one case is of an ``exempt_kinds`` kind (``context_swap``:
    the same question shown with other evidence, by design) and the two are related by source:
    one's ``source_question_id`` is the other's ``id``, or both share a ``source_question_id``.
    Only ik x ook similarities are computed, in numpy row blocks (fine for ~10k questions).
    ``threshold=None`` disables the filter.

    Counts: ``conflicts`` (pairs found), ``exempt_pairs``, ``dropped_by_label``, ``examples``.
    """
    name = "opposite_label_near_duplicates"
    if threshold is None:
        return list(cases), _counts(name, None, len(cases), 0, disabled=True)
    if len(vectors) != len(cases):
        raise HalluguardError(f"{name}: {len(cases)} cases but {len(vectors)} question vectors")
    ik = [i for i, c in enumerate(cases) if c.label == "ik"]
    ook = [i for i, c in enumerate(cases) if c.label == "ook"]
    drop: set[int] = set()
    conflicts = exempt = 0
    examples = []
    if ik and ook:
        unit = _unit_rows(vectors)
        for a, b, cos in _pairs_above(unit[ik], unit[ook], float(threshold)):
            x, y = cases[ik[a]], cases[ook[b]]
            conflicts += 1
            if (x.kind in exempt_kinds or y.kind in exempt_kinds) and _related_by_source(x, y):
                exempt += 1
                continue
            drop.update((ik[a], ook[b]))
            if len(examples) < max_examples:
                examples.append({"ik": x.id, "ook": y.id, "cosine": round(cos, 4)})
    kept = [c for i, c in enumerate(cases) if i not in drop]
    by_label = Counter(cases[i].label for i in drop)
    return kept, _counts(name, threshold, len(cases), len(drop), conflicts=conflicts, exempt_pairs=exempt,
                         dropped_by_label=dict(sorted(by_label.items())), examples=examples)


# ---------------------------------------------------------------- pair filters (refusal detector)

def _detector_call(fn, texts: list[str], what: str) -> np.ndarray:
    if not texts:
        return np.zeros(0)
    out = np.asarray(fn(texts)).reshape(-1)
    if len(out) != len(texts):
        raise HalluguardError(f"refusal detector returned {len(out)} {what} for {len(texts)} texts")
    return out


def _detector_drop(name: str, pairs: Sequence[Pair], checks: dict[str, str], detector: RefusalDetectorLike,
                   drop_when_refusal: dict[str, bool]) -> tuple[list[Pair], dict]:
    """Shared body: for pairs of the kinds in ``checks``, ask ``is_refusal`` about one side."""
    idx = [i for i, p in enumerate(pairs) if p.pair_kind in checks]
    texts = [getattr(pairs[i], checks[pairs[i].pair_kind]) for i in idx]
    flags = _detector_call(detector.is_refusal, texts, "flags").astype(bool)
    drop, by_kind = set(), Counter()
    for i, flag in zip(idx, flags.tolist()):
        kind = pairs[i].pair_kind
        if flag == drop_when_refusal[kind]:
            drop.add(i)
            by_kind[kind] += 1
    kept = [p for i, p in enumerate(pairs) if i not in drop]
    return kept, _counts(name, None, len(pairs), len(drop), checked=len(idx),
                         dropped_by_pair_kind=dict(sorted(by_kind.items())))


def refusal_in_negative(pairs: Sequence[Pair], detector: RefusalDetectorLike) -> tuple[list[Pair], dict]:
    """Drop refusal-vs-fabrication and grounded-vs-wrong pairs whose *rejected* side is a refusal.

    A "fabrication" or "wrong answer" that actually abstains teaches the opposite lesson.
    Grounded-vs-refusal pairs are not checked (their rejected side is a refusal by design).
    """
    checks = {OOK_REFUSAL_VS_FABRICATION: "rejected", IK_GROUNDED_VS_WRONG: "rejected"}
    return _detector_drop("refusal_in_negative", pairs, checks, detector,
                          {OOK_REFUSAL_VS_FABRICATION: True, IK_GROUNDED_VS_WRONG: True})


def positive_not_refusal(pairs: Sequence[Pair], detector: RefusalDetectorLike) -> tuple[list[Pair], dict]:
    """Drop OOK pairs whose chosen refusal the detector does not recognise as one, and IK pairs
    (grounded vs refusal, grounded vs wrong) whose chosen grounded answer it calls a refusal."""
    checks = {OOK_REFUSAL_VS_FABRICATION: "chosen", IK_GROUNDED_VS_REFUSAL: "chosen", IK_GROUNDED_VS_WRONG: "chosen"}
    return _detector_drop("positive_not_refusal", pairs, checks, detector,
                          {OOK_REFUSAL_VS_FABRICATION: False, IK_GROUNDED_VS_REFUSAL: True,
                           IK_GROUNDED_VS_WRONG: True})


def indistinguishable(pairs: Sequence[Pair], detector: RefusalDetectorLike,
                      margin: float) -> tuple[list[Pair], dict]:
    """Drop refusal-vs-fabrication and grounded-vs-refusal pairs with |score(chosen) - score(rejected)| <= margin.

    Those pairs are scored in one detector call; each kept one is returned as a *copy* with
    ``scores["detector_chosen"]`` and ``scores["detector_rejected"]`` set. Other pairs pass unchanged.
    Counts: ``checked``, ``dropped_by_pair_kind``, ``reversed`` (kept or not: the refusal side
    scored lower than the other side, a sign of detector trouble).
    """
    kinds = (OOK_REFUSAL_VS_FABRICATION, IK_GROUNDED_VS_REFUSAL)
    idx = [i for i, p in enumerate(pairs) if p.pair_kind in kinds]
    texts = [pairs[i].chosen for i in idx] + [pairs[i].rejected for i in idx]
    scores = _detector_call(detector.score, texts, "scores").astype(float)
    chosen, rejected = scores[:len(idx)], scores[len(idx):]
    scored = {i: (float(c), float(r)) for i, c, r in zip(idx, chosen, rejected)}
    kept, by_kind = [], Counter()
    reversed_ = 0
    for i, p in enumerate(pairs):
        if i not in scored:
            kept.append(p)
            continue
        c, r = scored[i]
        refusal_side, other_side = (c, r) if p.pair_kind == OOK_REFUSAL_VS_FABRICATION else (r, c)
        reversed_ += refusal_side < other_side
        if abs(c - r) <= margin:
            by_kind[p.pair_kind] += 1
            continue
        kept.append(dataclasses.replace(p, scores={**p.scores, "detector_chosen": c, "detector_rejected": r}))
    return kept, _counts("indistinguishable", margin, len(pairs), sum(by_kind.values()), checked=len(idx),
                         reversed=int(reversed_), dropped_by_pair_kind=dict(sorted(by_kind.items())))


# ---------------------------------------------------------------- pair filters (precomputed scores)

def too_fake_nll(pairs: Sequence[Pair], max_nll: float) -> tuple[list[Pair], dict]:
    """Drop pairs whose ``scores["nll"]`` (mean per-token NLL of the rejected side under the
    reference model) exceeds ``max_nll``. Pairs without an nll score (or NaN) are kept and counted
    as ``not_scored``."""
    kept, not_scored, by_kind = [], 0, Counter()
    for p in pairs:
        nll = p.scores.get("nll")
        if nll is None or (isinstance(nll, float) and math.isnan(nll)):
            not_scored += 1
            kept.append(p)
        elif nll > max_nll:
            by_kind[p.rejected_kind] += 1
        else:
            kept.append(p)
    return kept, _counts("too_fake_nll", max_nll, len(pairs), len(pairs) - len(kept), not_scored=not_scored,
                         dropped_by_rejected_kind=dict(sorted(by_kind.items())))


def off_type(pairs: Sequence[Pair]) -> tuple[list[Pair], dict]:
    """Drop pairs whose rejected fabrication or wrong answer has ``scores["type_match"] == 0.0``
    (its value type differs from the question's expected answer type: too easy to spot).

    Pairs whose rejected side is a refusal are never dropped; pairs without the score are kept and
    counted as ``not_scored``.
    """
    kept, not_scored, by_kind = [], 0, Counter()
    for p in pairs:
        if p.rejected_kind in REFUSAL_KINDS:
            kept.append(p)
            continue
        match = p.scores.get("type_match")
        if match is None:
            not_scored += 1
            kept.append(p)
        elif float(match) == 0.0:
            by_kind[p.rejected_kind] += 1
        else:
            kept.append(p)
    return kept, _counts("off_type", None, len(pairs), len(pairs) - len(kept), not_scored=not_scored,
                         dropped_by_rejected_kind=dict(sorted(by_kind.items())))


def duplicate_pairs(pairs: Sequence[Pair], prompt_texts: Mapping[str, str], encoder: EncoderLike,
                    threshold: Optional[float]) -> tuple[list[Pair], dict]:
    """Keep one pair of each group of near-duplicates (greedy, in input order).

    Two pairs are near-duplicates when their prompts *and* their rejected responses both have
    cosine >= ``threshold``. The prompt (``prompt_texts[pair.case_id]``) and the rejected text are
    embedded separately rather than as one ``f"{prompt}\\n{rejected}"`` string: a RAG prompt is
    longer than the encoder's window, which would cut the rejected response off and make every
    pair of one prompt look identical. A pair is kept unless an earlier *kept* pair is its near
    duplicate. ``threshold=None`` disables the filter.
    """
    name = "duplicate_pairs"
    if threshold is None or len(pairs) < 2:
        return list(pairs), _counts(name, threshold, len(pairs), 0, **({"disabled": True} if threshold is None else {}))
    missing = sorted({p.case_id for p in pairs if p.case_id not in prompt_texts})
    if missing:
        raise HalluguardError(f"{name}: no prompt text for case ids {', '.join(missing[:10])}"
                              + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""))
    # Embed each distinct text once (pairs of one case share their prompt).
    prompts = sorted({prompt_texts[p.case_id] for p in pairs})
    rejected = sorted({p.rejected for p in pairs})
    pv = _unit_rows(encoder.encode(prompts))
    rv = _unit_rows(encoder.encode(rejected))
    p_row = {t: i for i, t in enumerate(prompts)}
    r_row = {t: i for i, t in enumerate(rejected)}
    pi = np.array([p_row[prompt_texts[p.case_id]] for p in pairs])
    ri = np.array([r_row[p.rejected] for p in pairs])
    a = pv[pi]
    b = rv[ri]
    thr = float(threshold)
    neighbours: dict[int, list[int]] = {}
    block = _block_rows(len(pairs))
    for start in range(0, len(pairs), block):
        sims = np.minimum(a[start:start + block] @ a.T, b[start:start + block] @ b.T)
        rows, cols = np.nonzero(sims >= thr)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if c > start + r:
                neighbours.setdefault(start + r, []).append(c)
    removed: set[int] = set()
    for i in range(len(pairs)):
        if i in removed:
            continue
        removed.update(neighbours.get(i, ()))
    kept = [p for i, p in enumerate(pairs) if i not in removed]
    by_kind = Counter(pairs[i].pair_kind for i in removed)
    return kept, _counts(name, threshold, len(pairs), len(removed), dropped_by_pair_kind=dict(sorted(by_kind.items())))
