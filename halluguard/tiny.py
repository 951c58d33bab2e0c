"""Tiny, random, local models for tests and smoke runs (never a hub download).

``make_tiny_policy(folder)`` writes a 2-layer Llama and a byte-level BPE tokenizer trained on the
given texts, with SmolLM2's special tokens and chat format, so every code path that loads a policy
from a folder can run in seconds. Its outputs are noise: it checks plumbing, not behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_TEXTS = [
    "The plan costs 25 euros a month and includes 40 GB of data.",
    "Refunds are paid within 14 days. I do not know the answer to that question.",
    "Question: How much does roaming cost? Passages: Roaming in the EU costs nothing extra.",
    "Sorry, the passages do not say. Please contact support for details about your account.",
]


def train_tiny_tokenizer(texts: Optional[Iterable[str]] = None, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts or DEFAULT_TEXTS)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def make_tiny_policy(folder: Path, texts: Optional[Iterable[str]] = None, hidden_size: int = 64,
                     layers: int = 2, seed: int = 0, vocab_size: int = 400) -> Path:
    """Save a tiny random Llama + tokenizer to ``folder``; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
