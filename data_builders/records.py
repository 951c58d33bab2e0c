"""The records the builders pass between steps.

question -> ProbeResult (what retrieval says about it)
         -> Case        (one prompt to train or evaluate on: a question + the evidence shown)
         -> Pair        (a chosen and a rejected response to that prompt, with filter scores)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from halluguard.kb import Passage

# pair kinds: which ordering a pair teaches
OOK_REFUSAL_VS_FABRICATION = "ook_refusal_vs_fabrication"
IK_GROUNDED_VS_REFUSAL = "ik_grounded_vs_refusal"
IK_GROUNDED_VS_WRONG = "ik_grounded_vs_wrong"
PAIR_KINDS = (OOK_REFUSAL_VS_FABRICATION, IK_GROUNDED_VS_REFUSAL, IK_GROUNDED_VS_WRONG)

# response kinds
GROUNDED = "grounded"
REFUSAL = "refusal"
FABRICATION_NEAR_MISS = "fabrication_near_miss"
FABRICATION_ON_POLICY = "fabrication_on_policy"
FABRICATION_EXTERNAL = "fabrication_external"
EVASIVE_QUOTE = "evasive_quote"
NEEDLESS_REFUSAL = "needless_refusal"
WRONG_ANSWER = "wrong_answer"


@dataclass
class ProbeResult:
    question_id: str
    evidence_ids: list[str]
    """Passages the prompt will show (top ``prompt.passages`` of retrieval), best first."""
    scores: list[float]
    top1: float
    gap: float
    """top-1 minus top-2 similarity (0 when only one passage exists)."""
    gold_in_evidence: Optional[bool]
    """Whether a gold answer appears in the evidence (None when the question has no gold answer)."""
    probe_label: str
    """ik / ook / ambiguous from retrieval alone."""
    label: str
    """Final label for training: the dataset's label reconciled with the evidence, or probe_label."""
    reason: str
    model_correct: Optional[float] = None
    """Share of the reference model's samples that contain a gold answer (probe.use_model)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Case:
    id: str
    question: str
    label: str  # "ik" | "ook"
    kind: str
    """Question kind (in_knowledge, off_topic, ...) or synthetic kind (context_swap, entity_swap, ...)."""
    evidence: list[Passage]
    answers: list[str] = field(default_factory=list)
    source_question_id: str = ""
    group: str = ""
    """Split unit: the group of the question's own passage (or of its best retrieved passage)."""
    synthetic: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["evidence"] = [p.id for p in self.evidence]
        return d


@dataclass
class Pair:
    case_id: str
    pair_kind: str
    chosen: str
    rejected: str
    chosen_kind: str
    rejected_kind: str
    scores: dict[str, float] = field(default_factory=dict)
    """Filter scores (nll, type match, detector margin, ...), kept in the output for inspection."""

    def to_dict(self) -> dict:
        return asdict(self)
