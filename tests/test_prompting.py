from omegaconf import OmegaConf

from halluguard.config import PromptConfig
from halluguard.kb import Passage
from halluguard.prompting import build_messages, render_prompt
from halluguard.tiny import train_tiny_tokenizer

PASSAGES = [Passage(id=f"p{i}", title=f"T{i}", text=f"fact number {i} " * 3) for i in range(5)]


def prompt_cfg(**kw):
    cfg = OmegaConf.structured(PromptConfig)
    cfg.system = "SYSTEM"
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_rag_prompt_numbers_the_top_passages_then_asks():
    msgs = build_messages("What is fact 1?", PASSAGES, prompt_cfg(passages=2))
    assert msgs[0] == {"role": "system", "content": "SYSTEM"}
    user = msgs[1]["content"]
    assert user.index("[1] T0") < user.index("[2] T1") < user.index("Question: What is fact 1?")
    assert "T2" not in user


def test_long_passages_are_cut_at_a_word():
    long = Passage(id="x", text="word " * 400)
    user = build_messages("q", [long], prompt_cfg(max_passage_chars=50))[1]["content"]
    assert user.count("word") <= 10 and "..." in user


def test_closed_book_prompt_has_no_passages():
    user = build_messages("q?", PASSAGES, prompt_cfg(mode="closed_book"))[1]["content"]
    assert user == "Question: q?"


def test_rendered_prompt_ends_where_the_assistant_starts():
    tok = train_tiny_tokenizer()
    text = render_prompt(tok, build_messages("q?", PASSAGES[:1], prompt_cfg()))
    assert text.startswith("<|im_start|>system\nSYSTEM<|im_end|>") and text.endswith("<|im_start|>assistant\n")


# ------------------------------------------------------------------ prompt.retrieval_hint

def test_the_retrieval_hint_states_the_level_and_the_similarity_before_the_question():
    cfg = prompt_cfg(retrieval_hint=True, hint_threshold=0.45)
    weak = build_messages("What is fact 1?", PASSAGES[:2], cfg, retrieval_score=0.3849)[1]["content"]
    strong = build_messages("What is fact 1?", PASSAGES[:2], cfg, retrieval_score=0.45)[1]["content"]
    assert "Retrieval match: weak (similarity 0.38)\n\nQuestion: What is fact 1?" in weak
    assert "Retrieval match: strong (similarity 0.45)" in strong
    assert weak.index("[2] T1") < weak.index("Retrieval match")
    off = build_messages("What is fact 1?", PASSAGES[:2], prompt_cfg(), retrieval_score=0.3849)[1]["content"]
    assert "Retrieval" not in off  # off by default: a score given is simply not shown


def test_the_retrieval_hint_speaks_the_prompts_language():
    cfg = prompt_cfg(retrieval_hint=True, hint_threshold=0.45)
    user = build_messages("事实一是什么？", PASSAGES[:1], cfg, retrieval_score=0.6)[1]["content"]
    assert "检索匹配度：强（相似度 0.60）" in user


def test_a_hinted_prompt_without_a_similarity_is_an_error_naming_the_setting():
    import pytest

    from halluguard.errors import HalluguardError

    with pytest.raises(HalluguardError, match="prompt.retrieval_hint"):
        build_messages("q?", PASSAGES[:1], prompt_cfg(retrieval_hint=True))
    # closed-book prompts show no passages: nothing to state, nothing needed
    assert build_messages("q?", PASSAGES, prompt_cfg(mode="closed_book", retrieval_hint=True))[1]["content"] == "Question: q?"


def test_the_hint_is_a_rag_setting_and_its_threshold_a_similarity(compose):
    import pytest

    from halluguard.config import ConfigError

    assert compose(["prompt.retrieval_hint=true"]).prompt.hint_threshold == 0.45  # the gate's threshold
    with pytest.raises(ConfigError, match="prompt.retrieval_hint"):
        compose(["prompt=closed_book", "prompt.retrieval_hint=true"])
    with pytest.raises(ConfigError, match="prompt.hint_threshold"):
        compose(["prompt.retrieval_hint=true", "prompt.hint_threshold=1.5"])
