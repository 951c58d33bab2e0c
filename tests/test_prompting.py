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
