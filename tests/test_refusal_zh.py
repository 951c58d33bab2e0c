"""The refusal detector in Chinese: measured on zh.jsonl, language selection, lead extraction, errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import halluguard
from halluguard import refusal_zh
from halluguard.errors import HalluguardError
from halluguard.language import detect_language
from halluguard.refusal import RefusalDetector, lead_of, pattern_logit

EVAL_DIR = Path(halluguard.__file__).parent / "data" / "refusal_eval"
CATEGORIES = {  # category -> is it an abstention? (the same eight as en.jsonl)
    "refusal": True, "clarification": True, "redirect": True, "policy_phrasing": True,
    "hedged_answer": False, "plain_answer": False, "negated_answer": False, "answer_with_caveat": False,
}


# zh_heldout.jsonl was written blind by someone else; it was measured once after tuning on zh.jsonl
# (precision 1.000, recall 0.901), then generic pattern families were fixed (see the README).
HELDOUT = "zh_heldout.jsonl"
needs_heldout = pytest.mark.skipif(not (EVAL_DIR / HELDOUT).exists(), reason="zh_heldout.jsonl not written yet")


def load(name: str) -> list[dict]:
    with open(EVAL_DIR / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def measure(rows: list[dict], predicted: np.ndarray) -> tuple[float, float, str]:
    """Precision, recall and a report with per-category accuracy and the misclassified lines."""
    truth = np.array([r["refusal"] for r in rows])
    tp = int((predicted & truth).sum())
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    per_cat = {cat: float(np.mean(predicted[mask] == truth[mask]))
               for cat in sorted({r["category"] for r in rows})
               for mask in [np.array([r["category"] == cat for r in rows])]}
    wrong = [f"  {r['id']} [{r['category']}] {r['response']!r}" for r, p, t in zip(rows, predicted, truth) if p != t]
    report = (f"precision={precision:.3f} recall={recall:.3f} (n={len(rows)}, refusals={int(truth.sum())})\n"
              + "\n".join(f"  {c:20s} accuracy={a:.3f}" for c, a in per_cat.items())
              + ("\nmisclassified:\n" + "\n".join(wrong) if wrong else ""))
    return precision, recall, report


def zh_sentences(text: str) -> list[str]:
    """Sentences of a Chinese text with punctuation and spaces dropped, for the overlap check."""
    parts = re.split(r"[。！？!?；;\n]+", text)
    return [s for s in (re.sub(r"[^\w]", "", p.lower()) for p in parts) if s]


@pytest.fixture(scope="module")
def detector(encoder):
    return RefusalDetector(encoder)


@pytest.fixture(scope="module")
def labelled():
    return load("zh.jsonl")


# ---------------------------------------------------------------- the labelled data itself

def test_zh_file_follows_the_schema(labelled):
    assert len(labelled) >= 240
    assert len({r["id"] for r in labelled}) == len(labelled)
    assert len({r["response"] for r in labelled}) == len(labelled)
    for r in labelled:
        assert set(r) == {"id", "response", "refusal", "category"}, r
        assert re.fullmatch(r"z\d{4}", r["id"]), r
        assert r["category"] in CATEGORIES, r
        assert r["refusal"] is CATEGORIES[r["category"]], r
        assert detect_language(r["response"]) == "zh", r
    counts = Counter(r["category"] for r in labelled)
    for cat in CATEGORIES:
        assert counts[cat] >= 30, (cat, counts[cat])


def test_zh_prototypes_and_labelled_set_share_no_sentence(labelled):
    protos = refusal_zh.ABSTENTION_PROTOTYPES + refusal_zh.ANSWER_PROTOTYPES
    assert 30 <= len(refusal_zh.ABSTENTION_PROTOTYPES) <= 60 and 30 <= len(refusal_zh.ANSWER_PROTOTYPES) <= 60
    proto_sentences = {s for p in protos for s in zh_sentences(p)}
    sets = [labelled] + ([load(HELDOUT)] if (EVAL_DIR / HELDOUT).exists() else [])
    for rows in sets:
        for r in rows:
            shared = proto_sentences & set(zh_sentences(r["response"]))
            assert not shared, (r["id"], shared)


@needs_heldout
def test_zh_heldout_follows_the_schema_and_is_apart_from_the_tuning_set(labelled):
    rows = load(HELDOUT)
    assert len(rows) >= 200
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "response", "refusal", "category"}, r
        assert r["refusal"] is CATEGORIES[r["category"]], r
    assert not {r["response"] for r in rows} & {r["response"] for r in labelled}


# ---------------------------------------------------------------- measured quality

@pytest.mark.parametrize("with_encoder", [True, False], ids=["default-encoder", "patterns-only"])
def test_precision_and_recall_on_the_zh_set(with_encoder, encoder, labelled):
    det = RefusalDetector(encoder) if with_encoder else RefusalDetector()
    predicted = det.is_refusal([r["response"] for r in labelled])
    precision, recall, report = measure(labelled, predicted)
    print(f"\nzh.jsonl ({'encoder' if with_encoder else 'patterns only'}):", report)
    assert precision >= 0.95 and recall >= 0.95, report


@needs_heldout
def test_precision_and_recall_on_the_zh_heldout_set(detector):
    rows = load(HELDOUT)
    predicted = detector.is_refusal([r["response"] for r in rows])
    precision, recall, report = measure(rows, predicted)
    print("\nzh_heldout.jsonl:", report)
    assert precision >= 0.95 and recall >= 0.95, report


def test_negated_and_hedged_answers_are_not_refusals(detector):
    answers = ["不，欧盟境内漫游不收费。", "该套餐不含5G。", "我觉得大概是29元，不过建议以合同为准。", "应该是7天左右。",
               "退款会在3个工作日内到账。其他银行的到账时间我就不清楚了。", "我不太确定，但应该是每月1号出账。",
               "没有，办理携号转网不收取任何手续费。", "不。"]
    flagged = detector.is_refusal(answers)
    assert not flagged.any(), [a for a, f in zip(answers, flagged) if f]


def test_terse_policy_phrasings_are_refusals(detector):
    terse = ["答案：未知。", "资料中未提及。", "无法确定。", "该问题无法回答。", "没有相关信息。", "不知道。", "无答案。"]
    for det in (detector, RefusalDetector()):
        flags = det.is_refusal(terse)
        assert flags.all(), [t for t, f in zip(terse, flags) if not f]


# ---------------------------------------------------------------- language selection

def test_auto_judges_each_response_with_its_own_language(encoder):
    english = ["I don't know what the roaming fee is.", "The plan costs 25 euros a month.",
               "Which phone are you using?", "No, roaming is not charged in the EU."]
    chinese = ["资料中未提及。", "套餐月费是59元。", "请问您用的是哪款手机？", "不，欧盟境内漫游不收费。"]
    auto = RefusalDetector(encoder)
    assert auto.language == "auto"
    assert [auto.language_of(t) for t in english + chinese] == ["en"] * 4 + ["zh"] * 4
    # an English response scores exactly as under "en", alone or mixed with Chinese ones
    forced_en = RefusalDetector(encoder, language="en").score(english)
    assert np.array_equal(RefusalDetector(encoder).score(english), forced_en)
    assert np.array_equal(RefusalDetector(encoder).score(english + chinese)[:4], forced_en)
    # a Chinese response gets the Chinese patterns, which the English ones do not replace
    assert np.array_equal(auto.score(chinese), RefusalDetector(encoder, language="zh").score(chinese))
    assert auto.is_refusal(chinese).tolist() == [True, False, True, False]
    assert not RefusalDetector(language="en").is_refusal(["资料中未提及。"]).any()
    assert pattern_logit(lead_of("资料中未提及。", "zh"), "zh") > 0
    assert pattern_logit(lead_of("资料中未提及。")) == 0.0  # the English default is unchanged


def test_chinese_responses_get_the_patterns_only_prior_even_with_an_encoder(encoder, labelled):
    texts = [r["response"] for r in labelled[::5]]
    assert np.array_equal(RefusalDetector(encoder).score(texts), RefusalDetector().score(texts))


def test_cache_and_skip_decided_work_per_language(encoder, labelled):
    mixed = [r["response"] for r in labelled[::3]] + [r["response"] for r in load("en.jsonl")[::3]]
    det = RefusalDetector(encoder)
    full = det.is_refusal(mixed)
    assert np.array_equal(full, det.is_refusal(mixed))  # second call: all from the cache
    assert {lang for lang, _ in det._logit_cache} == {"en", "zh"}
    assert np.array_equal(full, RefusalDetector(encoder, skip_decided=True).is_refusal(mixed))
    # the same text under different languages is not mixed up in one detector's cache
    both = ["资料中未提及。"]
    assert RefusalDetector(language="zh").is_refusal(both).all()
    assert not RefusalDetector(language="en").is_refusal(both).any()


def test_mixed_chinese_with_english_product_words():
    det = RefusalDetector()
    refusals = ["抱歉，资料里没有提到这款手机是否支持eSIM。", "请问您的手机支持5G吗？", "App闪退的问题，建议您联系App客服。"]
    answers = ["您的5G套餐包含100GB流量，App里可以随时查看。", "Wi-Fi密码印在路由器背面的标签上。",
               "eSIM支持iPhone XS及以上机型，安卓的我还没查到。"]
    assert all(det.language_of(t) == "zh" for t in refusals + answers)
    assert det.is_refusal(refusals).all()
    assert not det.is_refusal(answers).any()


# ---------------------------------------------------------------- lead extraction

@pytest.mark.parametrize("response,lead", [
    ("抱歉。资料中没有提到。", "资料中没有提到。"),                         # filler sentence skipped
    ("您好，不，欧盟境内漫游不收费。", "不，欧盟境内漫游不收费。"),             # filler clause skipped
    ("好的，我查了一下，提供的材料里没有说明。", "提供的材料里没有说明。"),
    ("退款会在3个工作日内到账。其他银行的到账时间我就不清楚了。", "退款会在3个工作日内到账。"),  # answer, then caveat
    ("欧盟以外的漫游每天收费30元，具体到每个国家的价格我没有资料。", "欧盟以外的漫游每天收费30元"),
    ("合约期是12个月；提前解约的违约金我不太清楚。", "合约期是12个月"),         # after ；is what follows
    ("不。该套餐不含5G。", "不。该套餐不含5G。"),                           # a very short lead takes the next
    ("关于您的问题：\n资料中没有提到。", "关于您的问题：资料中没有提到。"),
    ("嗯……这个问题我答不上来。", "这个问题我答不上来。"),
])
def test_chinese_lead(response, lead):
    assert lead_of(response, "zh") == lead


def test_answer_then_caveat_is_an_answer_and_refusal_after_a_topic_is_a_refusal():
    det = RefusalDetector()
    assert not det.is_refusal(["国内流量超出后按每GB 3元计费，国际流量的价格我这里查不到。",
                               "营业厅周一到周五都开门，周末我就不太清楚了。"]).any()
    assert det.is_refusal(["关于携号转网需要多少天，我手上没有相关信息。",
                           "星悦59元套餐的合约期，资料里没有写。"]).all()


# ---------------------------------------------------------------- errors

def test_unsupported_language_names_the_choices():
    for bad in ("fr", "zh-TW", "english"):
        with pytest.raises(HalluguardError) as err:
            RefusalDetector(language=bad)
        assert "supported: en, zh" in str(err.value) and "auto" in str(err.value)
    with pytest.raises(HalluguardError, match="supported"):
        lead_of("你好", "de")
    with pytest.raises(HalluguardError, match="supported"):
        RefusalDetector(prototype_languages=("en", "ja"))
    assert RefusalDetector(language="zh").language == "zh"
