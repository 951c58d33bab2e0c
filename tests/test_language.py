"""Language handling: detection, per-language config texts, answer matching and prompts in Chinese."""

import pytest
from omegaconf import OmegaConf

from halluguard.errors import ConfigError, HalluguardError
from halluguard.language import (check_localized, contains_phrase, count_languages, detect_language, localized,
                                 mixed_tokens, resolve_language)


def test_detects_chinese_even_with_latin_product_names():
    assert detect_language("星河Flex 20套餐支持5G网络吗？") == "zh"
    assert detect_language("Does the Flex 20 plan include 5G?") == "en"
    assert detect_language("") == "en"
    assert detect_language("12345 !!") == "en"
    # One Chinese name in an English sentence does not make it Chinese.
    assert detect_language("The shop on 中山路 opens at nine in the morning every weekday.") == "en"


def test_auto_resolves_to_the_most_common_language_and_named_languages_are_checked():
    assert resolve_language("auto", ["你好吗？", "我很好。", "Fine."], "kb.language") == "zh"
    assert resolve_language("en", ["你好"], "kb.language") == "en"
    with pytest.raises(HalluguardError, match="no templates for language 'fr'.*available: en, zh"):
        resolve_language("fr", [], "config key 'kb.language'")
    assert count_languages(["你好", "hello", "再见"]) == {"zh": 2, "en": 1}


def test_phrase_matching_keeps_word_boundaries_in_english_and_numbers_in_chinese():
    assert contains_phrase("月租39元包含10gb流量", "39元")
    assert not contains_phrase("月租139元", "39元")
    assert not contains_phrase("月租39.5元", "39")  # normalised text keeps the digits together
    assert contains_phrase("星河卡19每月19元", "星河卡19")
    assert contains_phrase("the fee is 699 a month", "699")
    assert not contains_phrase("the fee is 699 a month", "69")
    assert not contains_phrase("concatenate", "cat")


def test_mixed_segmentation_splits_ideographs_and_keeps_latin_words():
    assert mixed_tokens("月租39元 flex 20") == ["月", "租", "39", "元", "flex", "20"]


def test_localized_texts_pick_the_language_or_name_what_is_missing():
    cfg = OmegaConf.create({"system": {"en": "Answer.", "zh": "请回答。"}})
    assert localized(cfg.system, "zh", "prompt.system") == "请回答。"
    assert localized("One text.", "zh", "prompt.system") == "One text."
    with pytest.raises(HalluguardError, match=r"'prompt.system' has no text for language 'zh'; it has: en"):
        localized({"en": "Answer."}, "zh", "prompt.system")
    with pytest.raises(HalluguardError, match=r"'prompt.system.fr'.*available: en, zh"):
        check_localized({"fr": "Répondez."}, "prompt.system")


def test_config_rejects_unknown_languages_before_any_work(compose):
    with pytest.raises(ConfigError, match=r"'kb.language' must be one of en, zh, auto, got 'de'"):
        compose(["kb.language=de"])
    with pytest.raises(ConfigError, match=r"'prompt.system.fr'"):
        compose(["+prompt.system.fr=Repondez"])
    assert compose(["kb=demo_zh"]).kb.language == "zh"


def test_chinese_prompt_has_chinese_labels_and_system_message_while_english_is_unchanged(compose):
    from halluguard.kb import Passage
    from halluguard.prompting import build_messages

    cfg = compose([]).prompt
    passage = Passage(id="p1", title="星河卡19", text="星河卡19每月19元。")
    zh = build_messages("星河卡19每月多少钱？", [passage], cfg)
    assert zh[0] == {"role": "system", "content": "你是一名客服助理。请根据资料回答客户的问题。"}
    assert zh[1]["content"] == "资料：\n[1] 星河卡19\n星河卡19每月19元。\n\n问题：星河卡19每月多少钱？"
    en = build_messages("How much is it?", [Passage(id="p2", title="Plan", text="It is 9 euros.")], cfg)
    assert en[0]["content"].startswith("You are a customer-service assistant.")
    assert en[1]["content"] == "Passages:\n[1] Plan\nIt is 9 euros.\n\nQuestion: How much is it?"
    # A named prompt language wins over the question's own.
    forced = build_messages("星河卡19每月多少钱？", [passage], compose(["prompt.language=en"]).prompt)
    assert forced[1]["content"].startswith("Passages:")


def test_chinese_answer_matching_in_the_evaluation():
    from halluguard.evaluation.answer_match import exact_match, token_f1
    from halluguard.evaluation.runner import contains_gold

    assert contains_gold("星河卡39每月39元，支持5G。", ["39元"])
    assert not contains_gold("月租是139元。", ["39元"])
    assert exact_match("39元。", ["39元"]) == 1.0
    # 5 tokens predicted (月 租 是 39 元), 2 gold, 2 shared: F1 = 2 * 0.4 * 1 / 1.4
    assert token_f1("月租是39元。", ["39元"]) == pytest.approx(2 * 0.4 / 1.4)


def test_the_multilingual_encoder_setting_composes(compose):
    cfg = compose(["kb=demo_zh", "retriever=multilingual"])
    assert cfg.retriever.encoder == "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
    assert cfg.retriever.index == "flat"
