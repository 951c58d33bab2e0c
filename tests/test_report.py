"""Build report: stats.json, summary.md and three valid, non-trivial PNG plots."""

from __future__ import annotations

import json

import numpy as np

from data_builders.records import (
    FABRICATION_NEAR_MISS,
    GROUNDED,
    IK_GROUNDED_VS_REFUSAL,
    IK_GROUNDED_VS_WRONG,
    NEEDLESS_REFUSAL,
    OOK_REFUSAL_VS_FABRICATION,
    REFUSAL,
    WRONG_ANSWER,
    Case,
    Pair,
    ProbeResult,
)
from data_builders.report import warn_if_all_ambiguous, write_stats, write_summary
from halluguard.kb import Passage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe(qid: str, top1: float, label: str) -> ProbeResult:
    return ProbeResult(question_id=qid, evidence_ids=["p1"], scores=[top1], top1=top1, gap=0.1,
                       gold_in_evidence=None, probe_label=label, label=label, reason="test")


def fixtures():
    rng = np.random.default_rng(0)
    probes, kinds = [], {}
    for i in range(60):
        label, centre, kind = [("ik", 0.7, "in_knowledge"), ("ook", 0.2, "off_topic"),
                               ("ambiguous", 0.42, "uncovered")][i % 3]
        probes.append(probe(f"q{i}", float(np.clip(rng.normal(centre, 0.08), -1, 1)), label))
        kinds[f"q{i}"] = kind
    pairs = ([Pair("q1", OOK_REFUSAL_VS_FABRICATION, "I don't know.", "It costs 12 euros.", REFUSAL,
                   FABRICATION_NEAR_MISS)] * 5
             + [Pair("q0", IK_GROUNDED_VS_REFUSAL, "14 days.", "I can't say.", GROUNDED, NEEDLESS_REFUSAL)] * 3
             + [Pair("q0", IK_GROUNDED_VS_WRONG, "14 days.", "30 days | maybe.", GROUNDED, WRONG_ANSWER)] * 2)
    stats = {
        "cases": {"by_label": {"ik": 20, "ook": 25}, "by_kind": {"in_knowledge": 20, "off_topic": 20,
                                                                  "context_swap": 5}},
        "filters": [
            {"name": "gray_zone", "threshold": None, "seen": 60, "dropped": 20, "reason": "ambiguous"},
            {"name": "duplicate_pairs", "threshold": 0.98, "seen": 12, "dropped": 2, "reason": "near duplicates"},
        ],
        "probe_agreement": {"ik": {"ik": 18, "ambiguous": 2}, "ook": {"ook": 19, "ambiguous": 1}},
        "probe_thresholds": {"ook_max_top1": 0.3, "ik_min_top1": 0.55},
        "split": {"train_groups": ["a", "b"], "heldout_groups": ["c"],
                  "train": {"cases": 35, "by_label": {"ik": 15}}, "heldout": {"cases": 10, "by_label": {"ik": 5}}},
    }
    case = Case(id="q1", question="What is the phone number of the mayor of Zxqerville?", label="ook",
                kind="unknowable", evidence=[Passage("a1", "Refunds ...", title="Refunds")])
    samples = [(case, pairs[0]),
               {"question": "How long does a refund take?", "evidence_titles": ["Refunds", "Plans"],
                "chosen": "14 days.", "rejected": "30 days.", "pair_kind": IK_GROUNDED_VS_WRONG,
                "rejected_kind": WRONG_ANSWER, "case_id": "q0"}]
    return stats, probes, pairs, samples, kinds


def _check_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert float(img[..., :3].std()) > 0.02  # not a blank canvas


def test_write_summary_writes_markdown_and_pngs(tmp_path):
    stats, probes, pairs, samples, kinds = fixtures()
    paths = write_summary(tmp_path / "build", stats, probes, pairs, samples, question_kinds=kinds)
    names = [p.name for p in paths]
    assert names == ["summary.md", "similarity_hist.png", "filter_counts.png", "pair_kinds.png"]
    for p in paths[1:]:
        _check_png(p)
    md = paths[0].read_text(encoding="utf-8")
    assert "# Build summary" in md and "Warning" not in md
    assert "| gray_zone | - | 60 | 20 | 40 |" in md and "| duplicate_pairs | 0.98 | 12 | 2 | 10 |" in md
    assert f"| {OOK_REFUSAL_VS_FABRICATION} | 5 | 50% |" in md
    assert "## Probe agreement" in md and "| ook | 1 | 0 | 19 |" in md
    assert "Zxqerville" in md and "**Evidence:** Refunds; Plans" in md
    assert "**Rejected (wrong_answer):** 30 days." in md
    assert md.count("### ") == 2
    assert not list((tmp_path / "build").glob(".*.tmp"))


def test_write_summary_with_nothing(tmp_path):
    paths = write_summary(tmp_path, {}, [], [], [])
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    for p in paths[1:]:
        assert p.read_bytes()[:8] == PNG_SIGNATURE
    md = paths[0].read_text(encoding="utf-8")
    assert "No pairs were built." in md and "No filter counts" in md and "Probe agreement" not in md


def test_write_stats_is_json(tmp_path):
    path = write_stats(tmp_path / "stats.json", {"pairs": 3, "rate": np.float32(0.5), "ids": np.arange(2)})
    assert json.loads(path.read_text()) == {"pairs": 3, "rate": 0.5, "ids": [0, 1]}


def test_warn_if_all_ambiguous(tmp_path):
    probes = [probe(f"q{i}", 0.4, "ambiguous") for i in range(19)] + [probe("q19", 0.8, "ik")]
    msg = warn_if_all_ambiguous(probes)
    assert msg and "19 of 20" in msg and "ik: 1" in msg and "ook_max_top1" in msg
    assert warn_if_all_ambiguous(probes[:10] + [probe(f"k{i}", 0.8, "ik") for i in range(3)]) is None
    assert warn_if_all_ambiguous([]) is None
    assert warn_if_all_ambiguous([p.to_dict() for p in probes])  # dicts work too
    md = write_summary(tmp_path, {}, probes, [], [])[0].read_text(encoding="utf-8")
    assert "**Warning:**" in md
