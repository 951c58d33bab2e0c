"""SQuAD answer matching: normalised exact match and token F1, each the max over the gold answers.

Rajpurkar, Zhang, Lopyrev and Liang (2016), "SQuAD: 100,000+ Questions for Machine Comprehension
of Text" (EMNLP). Both scores compare a prediction with every gold answer after the same
normalisation and keep the best:

- normalisation: lowercase; delete ASCII punctuation (``string.punctuation``, so ``U.S.`` -> ``us``
  and ``1,499`` -> ``1499``); replace the articles *a*, *an*, *the* by a space; collapse whitespace;
- exact match: 1.0 when the normalised strings are equal, else 0.0;
- token F1: harmonic mean of token precision and recall over the normalised whitespace tokens,
  with repeated tokens counted as often as they occur in both (a multiset overlap). When either
  side normalises to no tokens, F1 is 1.0 if both do and 0.0 otherwise (SQuAD 2.0's rule for
  empty answers).

Chinese: full-width punctuation is dropped as well, and F1 counts every CJK ideograph as a token
of its own (the mixed segmentation of CMRC 2018, Cui et al., 2019), so no word segmenter is needed.

This deliberately keeps SQuAD's ASCII punctuation set (plus the full-width marks of Chinese) so numbers stay comparable with
published SQuAD results; ``data_builders.answer_types.normalize_answer`` (used to build the pairs)
also drops a few Unicode symbols such as the euro sign, so ``€25`` matches ``25`` there and not here.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from halluguard.errors import HalluguardError
from halluguard.language import CJK_PUNCTUATION, mixed_tokens

_PUNCTUATION = frozenset(string.punctuation) | CJK_PUNCTUATION
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    lowered = text.lower()
    without_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float | None:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0.

    None when there are no gold answers (the question cannot be scored). SQuAD, Rajpurkar et al. 2016.
    """
    golds = _checked(prediction, golds)
    if not golds:
        return None
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(gold) for gold in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float | None:
    """Best token-overlap F1 of the prediction against any gold answer, in [0, 1].

    None when there are no gold answers. SQuAD, Rajpurkar et al. 2016.
    """
    golds = _checked(prediction, golds)
    if not golds:
        return None
    predicted = mixed_tokens(normalize_answer(prediction))
    return max(_f1(predicted, mixed_tokens(normalize_answer(gold))) for gold in golds)


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def _checked(prediction: str, golds: Sequence[str]) -> list[str]:
    if not isinstance(prediction, str):
        raise HalluguardError(f"answer matching needs the prediction as a string, got {type(prediction).__name__}")
    # A bare string would be iterated character by character and score nonsense.
    if isinstance(golds, str) or not all(isinstance(gold, str) for gold in golds):
        raise HalluguardError("answer matching needs the gold answers as a list of strings, "
                              f"got {golds!r}")
    return list(golds)
