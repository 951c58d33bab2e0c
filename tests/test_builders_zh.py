"""The builders in Chinese: answer types, responses, and a build of the Chinese demo knowledge base
end to end with a configured (tiny, local) model. The embedded SmolLM2 cannot serve Chinese (README,
"Chinese"), so the model here is a tiny one whose tokenizer was trained on the Chinese handbook."""

import json
import random
from pathlib import Path

import pytest

from data_builders import responses, responses_zh
from data_builders.answer_types import answer_type, contains_answer, extract_values
from data_builders.records import Case
from halluguard.kb import Passage
from halluguard.language import detect_language

from conftest import TINY_PASSAGES, TINY_QUESTIONS, write_jsonl

DEMO_ZH = Path(__file__).resolve().parents[1] / "halluguard" / "data" / "demo_kb_zh"


@pytest.mark.parametrize("value,type_", [
    ("39元", "money"), ("¥39", "money"), ("0.1元/分钟", "money"), ("每月39元", "money"),
    ("7天", "duration"), ("3个工作日", "duration"), ("24个月", "duration"), ("两个工作日", "duration"),
    ("100GB", "number"), ("5台", "number"), ("400-880-1234", "phone"), ("9:00", "time"), ("上午9点", "time"),
    ("2025年3月1日", "date"), ("每月1日", "date"), ("20%", "percent"), ("8折", "percent"),
    ("星河卡", "entity"), ("免费", "other"),
])
def test_chinese_answer_types(value, type_):
    assert answer_type(value) == type_


def test_values_are_found_inside_unspaced_chinese_text():
    text = ("星河Flex 20套餐每月39元，包含100GB流量，超出后每分钟0.1元。办理后3个工作日内生效，"
            "客服热线400-880-1234，营业时间9:00至18:00。")
    assert extract_values(text, "money") == ["39元", "0.1元"]
    assert extract_values(text, "number") == ["100GB"]  # "20" belongs to the name "Flex 20"
    assert extract_values(text, "phone") == ["400-880-1234"]
    assert extract_values(text, "time") == ["9:00", "18:00"]
    assert extract_values(text, "entity") == ["Flex 20"]
    assert contains_answer(text, ["39元"]) and not contains_answer("月租139元", ["39元"])
    # English extraction is untouched.
    assert extract_values("The Flex 20 plan costs €17.99 per month.", "money") == ["€17.99 per month"]


def _case(label, question, answers=(), passage_text="畅享套餐每月59元，包含30GB流量。办理后次月生效。"):
    passage = Passage(id="p1", title="畅享套餐", text=passage_text)
    return Case(id="c", question=question, label=label, kind="x", evidence=[passage], answers=list(answers),
                meta={"language": "zh", "passage_id": "p1"})


def test_chinese_confident_statements_put_the_value_where_the_question_word_was():
    rng = random.Random(0)
    out = {q: responses.confident_statement(q, v, t, rng) for q, v, t in [
        ("Flex 20套餐每月多少钱？", "49元", "money"), ("请问我的宽带安装需要多久？", "3个工作日", "duration"),
        ("你们的客服热线是多少？", "400-880-1234", "phone"), ("营业厅几点关门呢？", "18:00", "time")]}
    bodies = [s.removeprefix("根据我的信息，").removeprefix("好的！") for s in out.values()]
    assert bodies == ["Flex 20套餐每月49元。", "您的宽带安装需要3个工作日。", "我们的客服热线是400-880-1234。",
                      "营业厅18:00关门。"]


def test_chinese_grounded_answers_keep_the_gold_value_and_refusals_state_no_fact():
    rng = random.Random(1)
    ik = _case("ik", "畅享套餐每月多少钱？", ["59元"])
    for _ in range(10):
        answer = responses.grounded_answer(ik, rng)
        assert "59元" in answer and detect_language(answer) == "zh"
    ook = _case("ook", "畅享套餐的违约金是多少？")
    refusals = responses.refusal(ook, rng, n=5)
    assert len(set(refusals)) == 5
    for text in refusals:
        assert detect_language(text) == "zh" and not any(ch.isdigit() for ch in text.replace("《畅享套餐》", ""))


def test_every_chinese_refusal_family_is_a_refusal_and_every_fabrication_an_answer_to_the_detector(encoder):
    """The builders' own Chinese refusals must pass the detector that filters them (positive_not_refusal)."""
    from halluguard.refusal import RefusalDetector

    rng = random.Random(2)
    ook = _case("ook", "Flex 20套餐的违约金是多少？")
    refusals = responses_zh.refusal(ook, rng, "money", n=len(responses_zh._REFUSALS))
    assert len(refusals) == len(responses_zh._REFUSALS)
    fabrications = [responses.confident_statement(q, v, t, rng) for q, v, t in [
        ("Flex 20套餐的违约金是多少？", "100元", "money"), ("宽带安装要几天？", "3天", "duration"),
        ("星河卡19支持5G吗？", "支持", "other"), ("客服热线是多少？", "400-880-5678", "phone")]]
    for detector in (RefusalDetector(), RefusalDetector(encoder)):
        assert detector.is_refusal(refusals).all(), [r for r, d in zip(refusals, detector.is_refusal(refusals))
                                                     if not d]
        assert not detector.is_refusal(fabrications).any(), fabrications


def test_chinese_wrong_answers_flip_the_value_or_the_negation():
    from data_builders.responses import wrong_answer

    ik = _case("ik", "畅享套餐每月多少钱？", ["59元"])
    wrong = wrong_answer(ik, ik.evidence, random.Random(0))
    assert wrong and "59元" not in wrong and detect_language(wrong) == "zh"
    assert responses_zh.flip_negation("补办eSIM免费") == "补办eSIM收费"
    assert responses_zh.flip_negation("不支持语音通话") == "支持语音通话"


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def zh_policy(tmp_path_factory):
    from halluguard.tiny import make_tiny_policy

    texts = [json.loads(line)["text"] for line in (DEMO_ZH / "passages.jsonl").read_text("utf-8").splitlines()]
    # A larger vocabulary than the English tiny policy's: byte-level BPE would spend three tokens on
    # every Chinese character and the prompts would outgrow the tiny chain's length limits.
    return make_tiny_policy(tmp_path_factory.mktemp("zh-policy"), texts=texts, vocab_size=2000)


@pytest.fixture(scope="module")
def zh_build(tmp_path_factory, zh_policy):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF
    from halluguard.config import validate
    from halluguard.stages import build

    runs = tmp_path_factory.mktemp("runs")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=[
            "stage=build", "kb=demo_zh", f"paths.runs={runs}", "exp=zh", f"model.name_or_path={zh_policy}",
            "builder.negatives.on_policy=true", "builder.negatives.on_policy_max_new_tokens=8",
            "builder.filters.nll=true", "builder.filters.max_nll=1000"]))
    GlobalHydra.instance().clear()
    manifest = build.run(cfg)
    return manifest.path.parent


def _jsonl(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_the_chinese_demo_builds_a_chinese_preference_set_with_a_configured_model(zh_build):
    stats = json.loads((zh_build / "stats.json").read_text("utf-8"))
    assert stats["languages"]["setting"] == "zh"
    assert stats["languages"]["templates_by_question"] == {"zh": stats["questions"]}
    assert stats["languages"]["mixed"] is False
    # The embedded encoder is English-only: said, with what to set instead. The tiny policy is not embedded.
    assert len(stats["language_warnings"]) == 1 and "retriever=multilingual" in stats["language_warnings"][0]
    assert stats["synthesis"]["context_swap:kept"] > 0
    assert stats["synthesis"]["question_edits_skipped:zh"] == stats["synthesis"]["attempted"]
    pairs = _jsonl(zh_build / "pairs_train.jsonl")
    kinds = {p["kind"] for p in pairs}
    assert {"ik_grounded_vs_refusal", "ik_grounded_vs_wrong", "ook_refusal_vs_fabrication"} <= kinds
    rejected_kinds = {p["rejected_kind"] for p in pairs}
    assert {"fabrication_near_miss", "fabrication_on_policy"} <= rejected_kinds  # the model's own samples too
    for p in pairs:
        user = p["prompt"][-1]["content"]
        assert user.startswith("资料：") and "\n\n问题：" in user
        assert p["prompt"][0]["content"] == "你是一名客服助理。请根据资料回答客户的问题。"
        assert detect_language(p["chosen"][0]["content"]) == "zh"
        if p["rejected_kind"] != "fabrication_on_policy":  # the tiny model's samples are noise
            assert detect_language(p["rejected"][0]["content"]) == "zh"
    heldout = _jsonl(zh_build / "pairs_heldout.jsonl")
    assert heldout and not ({p["question_id"] for p in pairs} & {p["question_id"] for p in heldout})


def test_a_mixed_language_knowledge_base_is_counted_per_language(tmp_path, compose):
    from halluguard.stages import build

    passages = TINY_PASSAGES + [{"id": "z1", "title": "畅享套餐", "text": "畅享套餐每月59元，包含30GB流量。办理后次月生效。"},
                                {"id": "z2", "title": "宽带安装", "text": "宽带在申请后3个工作日内上门安装，安装免费。"}]
    questions = TINY_QUESTIONS + [
        {"id": "zq1", "question": "畅享套餐每月多少钱？", "label": "ik", "answers": ["59元"], "passage_id": "z1"},
        {"id": "zq2", "question": "宽带申请后多久上门安装？", "label": "ik", "answers": ["3个工作日"], "passage_id": "z2"},
        {"id": "zq3", "question": "畅享套餐的违约金是多少？", "label": "ook", "answers": [], "passage_id": None}]
    cfg = compose(["kb=jsonl", f"kb.passages={write_jsonl(tmp_path / 'p.jsonl', passages)}",
                   f"kb.questions={write_jsonl(tmp_path / 'q.jsonl', questions)}", f"paths.runs={tmp_path / 'runs'}",
                   "exp=mixed", "builder.split.heldout_fraction=0.3"])
    folder = build.run(cfg).path.parent
    languages = json.loads((folder / "stats.json").read_text("utf-8"))["languages"]
    assert languages["setting"] == "auto" and languages["mixed"] is True
    assert languages["templates_by_question"] == {"en": len(TINY_QUESTIONS), "zh": 3}
    assert languages["passages_detected"] == {"en": len(TINY_PASSAGES), "zh": 2}
    cases = {c["id"]: c for c in _jsonl(folder / "cases.jsonl")}
    pairs = _jsonl(folder / "pairs_train.jsonl") + _jsonl(folder / "pairs_heldout.jsonl")
    for p in pairs:  # each pair in its own question's language, prompt included
        lang = detect_language(cases[p["case_id"]]["question"])
        assert detect_language(p["chosen"][0]["content"]) == lang
        assert p["prompt"][-1]["content"].startswith("资料：" if lang == "zh" else "Passages:")


@pytest.mark.usefixtures("one_torch_thread")
def test_the_whole_chain_runs_in_chinese_on_a_tiny_model(tmp_path, zh_policy, capsys):
    """build -> sft -> reward -> ppo -> eval on the Chinese demo, every stage at its smallest (in this process:
    the console command's own process is tested on the English chain)."""
    from tiny_chain import CHAIN_SIZES

    from halluguard import cli

    sizes = [s for s in CHAIN_SIZES if "dpo" not in s]
    code = cli.main(["run", "kb=demo_zh", f"model.name_or_path={zh_policy}", f"paths.runs={tmp_path}", "exp=zh",
                     "builder.max_questions=80", *sizes, "prompt.passages=2", "sft.max_length=1024",
                     "reward.train.max_length=1024"])
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = _jsonl(tmp_path / "zh" / "eval" / "samples.jsonl")
    assert rows and all(detect_language(r["question"]) == "zh" for r in rows)
    # always_refuse says the gate's refusal, in the question's language; the prompt-only baseline ran.
    assert {r["models"]["always_refuse"]["answer"] for r in rows} == {"抱歉，我手头的资料里没有这个问题的答案。"}
    assert all("prompt_only" in r["models"] and "ppo" in r["models"] for r in rows)
