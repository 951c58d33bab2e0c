"""Rule terms of the reward, judged by the project's one refusal detector.

For each response (``meta["label"]`` says whether its prompt is in-knowledge or out-of-knowledge):

=================  ==================  =========================================
prompt label       response            term
=================  ==================  =========================================
ook                refusal             ``+refuse_ook``
ook                answer              ``-answer_ook``
ik                 refusal             ``-refuse_ik``
ik                 answer              ``+support_weight * support``
any                empty               ``-max(answer_ook, refuse_ik)``
=================  ==================  =========================================

``support`` is 1 when a gold answer (``meta["answers"]``) appears in the response, otherwise the
share of the response's content tokens (lower-cased words and numbers, each Chinese character on its
own, stop-words left out) that
also occur in the evidence text (``meta["evidence"]``); 0 for a response without content tokens.

An empty response is neither an answer nor a refusal; it gets the largest penalty so a policy
cannot escape both penalties by saying nothing.

Used alone (``reward.scorer: rules``), a needless refusal should cost at least as much as a
fabrication: in a trial where ``refuse_ik`` was 0.5 against ``answer_ook`` 1.0 the policy learned to
refuse everywhere. The default ``answer_ook`` (2.7) is larger than ``refuse_ik`` (1.5) because it is
tuned for the hybrid, whose reward model pulls towards answering on both labels.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from halluguard.errors import HalluguardError

# Chinese is not spaced into words: each ideograph is a token (as in CMRC 2018's mixed segmentation).
_TOKEN_RE = re.compile(r"[\u4e00-\u9fff]|[a-z0-9\u00c0-\u024f€$£%]+(?:[.,'][a-z0-9]+)*", re.IGNORECASE)
STOPWORDS = frozenset("""
a an the and or but if then than so to of in on at by for with from into onto about as is are was were be been
being am do does did done have has had having it its it's this that these those there here i you he she we they
me him her us them my your his our their what which who whom whose when where why how can could would should
will shall may might must not no yes also just only very too more most some any all each every both either
neither such own same other another again once up down out over under off per via s t
的 了 是 在 和 与 或 我 您 你 他 她 它 们 这 那 吗 呢 吧 啊 也 都 就 而 及 个 有
""".split())


def content_tokens(text: str) -> list[str]:
    """Lower-cased words and numbers of ``text`` without stop-words (trailing sentence dots dropped)."""
    return [t for t in (m.group(0).lower().rstrip(".,") for m in _TOKEN_RE.finditer(text or "")) if t and t not in STOPWORDS]


def support_score(response: str, evidence: str, answers: Sequence[str] = ()) -> float:
    """1 if a gold answer appears in ``response``; else the share of its content tokens found in ``evidence``."""
    from data_builders.answer_types import contains_answer

    answers = [a for a in (answers or []) if str(a).strip()]
    if answers and contains_answer(response, answers):
        return 1.0
    tokens = content_tokens(response)
    if not tokens:
        return 0.0
    vocab = set(content_tokens(evidence))
    return sum(1 for t in tokens if t in vocab) / len(tokens)


def check_meta(meta: Sequence[dict], n: int) -> None:
    if len(meta) != n:
        raise HalluguardError(f"score(): {n} responses but {len(meta)} meta entries; give one meta dict per response")
    for i, m in enumerate(meta):
        label = m.get("label") if isinstance(m, dict) else None
        if label not in ("ik", "ook"):
            raise HalluguardError(f"score(): meta[{i}]['label'] must be 'ik' or 'ook', got {label!r}")


class RuleScorer:
    """Refusal / support rule terms (see the module docstring). ``weights``: a ``RuleWeightsConfig``."""

    name = "rules"

    def __init__(self, weights, detector=None):
        from halluguard.refusal import RefusalDetector

        self.refuse_ook = float(weights.refuse_ook)
        self.answer_ook = float(weights.answer_ook)
        self.refuse_ik = float(weights.refuse_ik)
        self.support = float(weights.support)
        self.detector = detector if detector is not None else RefusalDetector()

    def terms(self, prompts, responses: Sequence[str], meta: Sequence[dict]) -> dict[str, np.ndarray]:
        """Each rule term per response (zeros where it does not apply); their sum is the score."""
        responses = ["" if r is None else str(r) for r in responses]
        check_meta(meta, len(responses))
        if prompts is not None and len(prompts) != len(responses):
            raise HalluguardError(f"score(): {len(responses)} responses but {len(prompts)} prompts")
        n = len(responses)
        out = {k: np.zeros(n, dtype=np.float64) for k in ("refuse_ook", "answer_ook", "refuse_ik", "support", "empty")}
        if n == 0:
            return out
        refused = self.detector.is_refusal(responses)
        for i, (text, m) in enumerate(zip(responses, meta)):
            if not text.strip():
                out["empty"][i] = -max(self.answer_ook, self.refuse_ik)
            elif m["label"] == "ook":
                if refused[i]:
                    out["refuse_ook"][i] = self.refuse_ook
                else:
                    out["answer_ook"][i] = -self.answer_ook
            elif refused[i]:
                out["refuse_ik"][i] = -self.refuse_ik
            else:
                out["support"][i] = self.support * support_score(text, m.get("evidence", ""), m.get("answers") or ())
        return out

    def score(self, prompts, responses: Sequence[str], meta: Sequence[dict]):
        import torch

        terms = self.terms(prompts, responses, meta)
        total = sum(terms.values()) if terms else np.zeros(0)
        return torch.as_tensor(np.asarray(total, dtype=np.float32))
