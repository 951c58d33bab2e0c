"""Batched generation for every stage that answers prompts (eval, sft samples, ask, the demo, on-policy negatives).

Prompts are tokenized once, sorted by length (little compute is spent on padding), left-padded per batch, and
returned in the caller's order.

Greedy decoding (the default) runs halluguard's own decoding loop instead of ``model.generate``. The loop calls
the model's forward with exactly the inputs ``generate`` would (transformers 5: left-padded ids, position ids
from the attention mask, no mask when no row is padded, one mask column more per step, a KV cache, logits of the
last position only, argmax in float32). What it changes, each measured in ``benchmarks/bench_generation.py``:

* **matrix products** (``matmul``): on a CPU with float32 weights, every ``nn.Linear`` runs through oneDNN with
  its weight packed once (``torch.ops.mkldnn``), instead of torch's default CPU sgemm (MKL). On this machine
  (AMD EPYC, 2 cores) a 2048x2048 float32 product ran at 216 GFLOP/s through ``torch.matmul`` and 489 through
  oneDNN, and a decode step of 8 rows took 39 ms instead of 76 (1 thread). The sums are the same but added in
  another order, so logits differ from ``generate``'s in the last bits (~1e-6 per product). Greedy tokens were
  identical on every prompt measured: all 247 held-out questions of the demo build (9,330 tokens) and the
  benchmark's prompts at batch 1, 8 and 32. ``matmul="aten"`` keeps the model's own products: then logits
  are bitwise ``generate``'s on the same batch (``tests/test_generation.py``);
* **the KV cache** is allocated once per batch (``generate``'s dynamic cache concatenates every layer's keys
  and values at every step); attention sees the same tensors;
* **finished rows leave the batch** (oneDNN products only): a row that has produced eos costs nothing while
  the others go on. oneDNN gives a row the same bits whatever the number of rows (measured for 1 to 64 rows);
  MKL's sgemm does not (on this machine it sums a row in one order for 1 row, another for 2-3 rows and a third
  for 4 or more), so with ``matmul="aten"`` every row stays to the end, as in ``generate``;
* ``generate``'s per-step machinery (logits processors, stopping criteria, growing id tensors) is gone.

Sampling (``temperature > 0``) runs the same loop with oneDNN products, drawing each token from the distribution
``model.generate`` samples from: softmax of the logits after transformers' own warpers for temperature, top-k
(``top_k``; unset, ``generate``'s default 50, which every sampled figure so far was drawn with) and top-p. ``copies=k`` asks
for k answers per prompt: each prompt's tokens pass through the model once and its KV cache is repeated for the k
copies (``generate`` on k copies of a prompt computes the prompt k times; a prompt of the demo is ~5x longer than
the answers sampled from it). The draws follow the distribution, not ``generate``'s random stream: with
``matmul="aten"`` sampling still calls ``model.generate`` on the k copies side by side, and its draws are exactly
what they were (``tests/test_generation.py``).

The default products can be set for a whole process with ``HALLUGUARD_GENERATION_MATMUL=aten|onednn|auto``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

MATMUL_ENV = "HALLUGUARD_GENERATION_MATMUL"
MATMUL_CHOICES = ("auto", "onednn", "aten")

# Packed oneDNN weights per linear module, outside the module (a packed weight is an opaque tensor that
# copy.deepcopy, pickling and state_dict must never meet); an entry goes when its module is collected.
_PACKED: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()


# model.generate's top-k when neither the call nor the model's generation config sets one (transformers'
# GenerationConfig defaults); the sampled figures in the README were drawn with it
GENERATE_DEFAULT_TOP_K = 50


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 8, progress: bool = False, desc: str = "generating",
             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
             matmul: str | None = None, copies: int = 1, top_k: int | None = None) -> list[str]:
    """Greedy by default; ``temperature > 0`` samples (seeded by ``seed`` for repeatability).

    ``matmul``: ``auto`` (default; oneDNN on a CPU with float32 weights, else the model's own), ``onednn`` (the
    same, required), or ``aten`` (the model's own products: greedy logits bitwise ``model.generate``'s, and
    sampling through ``model.generate`` itself). ``copies``: answers per prompt, ``copies`` consecutive entries
    of the result for each prompt (sampling; greedy copies are identical). ``top_k`` (sampling): 0 = every token;
    None = what ``model.generate`` does by default (the model's generation config, else transformers' 50).
    """
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       progress=progress, desc=desc, temperature=temperature, top_p=top_p, seed=seed, matmul=matmul,
                       copies=copies, top_k=top_k)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)] if ids else []


def generate_ids(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
                 batch_size: int = 8, progress: bool = False, desc: str = "generating",
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 matmul: str | None = None, copies: int = 1, top_k: int | None = None) -> list[list[int]]:
    """The new tokens of each prompt (``copies`` rows per prompt, side by side), in the caller's order, up to and
    including the first eos. ``batch_size`` counts the rows decoded together: sampling with oneDNN takes
    ``batch_size // copies`` prompts a batch (at least one), each computed once; greedy copies are one answer
    repeated."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer.padding_side != "left":
        raise ValueError("generation needs left padding (tokenizer.padding_side='left')")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if copies <= 0:
        raise ValueError(f"copies must be positive, got {copies}")
    if not prompts:
        return []
    greedy = temperature <= 0
    use_onednn = resolve_matmul(model, matmul) == "onednn"
    if copies > 1 and not greedy and not use_onednn:  # model.generate samples each copy: k rows side by side
        prompts, copies = [p for p in prompts for _ in range(copies)], 1
    token_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(token_ids[i]))
    per_batch = batch_size if greedy else max(1, batch_size // copies)
    batches = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    device = next(model.parameters()).device
    choose = None if greedy else sampler(model, temperature, top_p, top_k)
    limit = {} if top_k is None else {"top_k": int(top_k)}
    out: list[list[int]] = [[] for _ in range(len(prompts) * copies)]
    products = onednn_linears(model) if use_onednn else contextlib.nullcontext()
    with products, torch.inference_mode():
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            ids, mask = left_pad([token_ids[i] for i in batch], pad_id, device)
            if greedy:
                new = greedy_batch(model, ids, mask, max_new_tokens, eos_id, pad_id, drop_finished=use_onednn)
                new = new.repeat_interleave(copies, dim=0)
            elif use_onednn:
                new = decode_batch(model, ids, mask, max_new_tokens, eos_id, pad_id, choose, copies=copies,
                                   drop_finished=True)
            else:
                full = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=True, temperature=temperature, top_p=top_p,
                                      pad_token_id=pad_id, eos_token_id=eos_id, **limit)
                new = full[:, ids.shape[1]:]
            rows = [i * copies + c for i in batch for c in range(copies)]
            for i, row in zip(rows, new.tolist()):
                out[i] = row[:row.index(eos_id) + 1] if eos_id in row else row
    return out


def sampler(model: Any, temperature: float, top_p: float = 1.0, top_k: int | None = None):
    """``logits (R, V) float32 -> tokens (R,)``: one draw from what ``model.generate(do_sample=True)`` samples
    from with the same ``temperature``, ``top_p`` and ``top_k``: transformers' own temperature, top-k and top-p
    warpers in ``generate``'s order, then a multinomial draw from the softmax. ``top_k=None``: as ``generate``
    without one (the model's generation config, else transformers' default 50); 0: every token."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if top_k is None:
        top_k = getattr(getattr(model, "generation_config", None), "top_k", None)
        top_k = GENERATE_DEFAULT_TOP_K if top_k is None else int(top_k)
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=float(top_p)))

    def choose(logits):
        probs = torch.softmax(warpers(None, logits), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)

    return choose


def resolve_matmul(model: Any, matmul: str | None = None) -> str:
    """``onednn`` or ``aten``: the products generation will use for ``model`` (``aten`` samples through
    ``model.generate``)."""
    choice = (matmul or os.environ.get(MATMUL_ENV) or "auto").strip().lower()
    if choice not in MATMUL_CHOICES:
        raise ValueError(f"matmul must be one of {', '.join(MATMUL_CHOICES)}, got {choice!r}")
    if choice == "aten":
        return "aten"
    usable, why = onednn_usable(model)
    if choice == "onednn" and not usable:
        raise ValueError(f"matmul='onednn' is not available here: {why}")
    return "onednn" if usable else "aten"


def onednn_usable(model: Any) -> tuple[bool, str]:
    """Whether oneDNN products can replace the model's linears, and why not."""
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False, "this torch build has no oneDNN (mkldnn) linear"
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        return False, "the model is not on the CPU"
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or any(m.weight.dtype != torch.float32 for m in linears):
        return False, "the model's linear layers are not float32"
    return True, ""


@contextlib.contextmanager
def onednn_linears(model: Any):
    """Inside the block, every ``nn.Linear`` of ``model`` multiplies through oneDNN with a packed weight.

    Packed weights are kept (beside the module, for as long as it lives) and packed again only when the weight
    changes (another tensor, or an in-place update such as an optimizer step), so repeated calls (``halluguard
    ask``) pack once.
    """
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for module in linears:
        module.forward = _onednn_forward(module)
    try:
        yield
    finally:
        for module in linears:
            module.__dict__.pop("forward", None)


def _onednn_forward(module: Any):
    import torch

    weight = module.weight
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cached = _PACKED.get(module)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 8)
        cached = (key, packed)
        _PACKED[module] = cached
    packed, bias, out_features = cached[1], module.bias, module.out_features

    def forward(x):
        flat = x.reshape(-1, x.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        y = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")
        return y.reshape(*x.shape[:-1], out_features)

    return forward


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None):
    """``(ids, mask)``: token lists padded on the left to the longest, as the tokenizer pads them."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def greedy_batch(model: Any, input_ids, attention_mask, max_new_tokens: int, eos_id: int, pad_id: int,
                 drop_finished: bool = False, preallocate: bool = True):
    """``(B, T)`` greedy tokens after one left-padded batch, pad after each row's eos, ``T <= max_new_tokens``.

    ``drop_finished``: rows that have produced eos leave the forward. Only exact when the products give a row
    the same bits whatever the number of rows (oneDNN here; not MKL's sgemm, not every GPU kernel).
    """
    return decode_batch(model, input_ids, attention_mask, max_new_tokens, eos_id, pad_id,
                        lambda logits: logits.argmax(-1), drop_finished=drop_finished, preallocate=preallocate)


def decode_batch(model: Any, input_ids, attention_mask, max_new_tokens: int, eos_id: int, pad_id: int, choose,
                 copies: int = 1, drop_finished: bool = False, preallocate: bool = True):
    """``(B * copies, T)`` tokens after one left-padded batch of B prompts, each next token ``choose(logits)``
    from the float32 logits of the rows still going; pad after each row's eos, ``T <= max_new_tokens``.

    Row ``i * copies + c`` is copy ``c`` of prompt ``i``: the prompts pass through the model once, then the KV
    cache, the last logits, positions and mask are repeated for the copies.
    """
    import torch

    batch, width = input_ids.shape
    n_rows = batch * copies
    tokens = torch.full((n_rows, max(max_new_tokens, 0)), pad_id, dtype=torch.long, device=input_ids.device)
    if max_new_tokens <= 0:
        return tokens
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 0)
    mask = None if bool((attention_mask == 1).all()) else attention_mask
    cache = new_cache(model, width + max_new_tokens, preallocate)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1].to(dtype=torch.float32)
    last_position = position_ids[:, -1:]                                 # (R, 1)
    if copies > 1:
        cache.batch_repeat_interleave(copies)
        logits = logits.repeat_interleave(copies, dim=0)
        last_position = last_position.repeat_interleave(copies, dim=0)
        mask = None if mask is None else mask.repeat_interleave(copies, dim=0)
    rows = torch.arange(n_rows, device=input_ids.device)                 # (R,) batch rows still computed
    alive = torch.ones(n_rows, dtype=torch.bool, device=input_ids.device)  # (R,) no eos yet
    steps = 0
    for step in range(max_new_tokens):
        steps = step + 1
        if step:
            logits = out.logits[:, -1].to(dtype=torch.float32)
        next_tokens = torch.where(alive, choose(logits), torch.full_like(rows, pad_id))
        tokens[rows, step] = next_tokens
        alive = alive & (next_tokens != eos_id)
        if step == max_new_tokens - 1 or not bool(alive.any()):
            break
        keep = alive.nonzero().squeeze(1) if drop_finished and not bool(alive.all()) else None
        if keep is not None:
            rows, alive, next_tokens, last_position = rows[keep], alive[keep], next_tokens[keep], last_position[keep]
            mask = None if mask is None else mask[keep]
            cache.batch_select_indices(keep)
        last_position = last_position + 1
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=last_position, cache=cache,
                    use_cache=True, logits_to_keep=1)
    return tokens[:, :steps]


def new_cache(model: Any, capacity: int, preallocate: bool = True):
    """transformers' DynamicCache; with ``preallocate``, its full-attention layers write into buffers sized once
    for the batch instead of concatenating at every step (attention sees the same keys and values)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if preallocate and cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        layer_class = _preallocated_layer_class()
        cache.layers = [layer_class(capacity) for _ in cache.layers]
    return cache


_LAYER_CLASS = None


def _preallocated_layer_class():
    """Built on first use: importing transformers at module import would slow ``halluguard --help``."""
    global _LAYER_CLASS
    if _LAYER_CLASS is not None:
        return _LAYER_CLASS
    import torch
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer whose keys and values live in a buffer of ``capacity`` positions; ``keys``/``values``
        are views of the filled part, the shape a DynamicLayer would give attention."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.length = 0
            self.key_buffer = self.value_buffer = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            if self.key_buffer is None:
                size = max(self.capacity, new)
                self.key_buffer = key_states.new_empty((*key_states.shape[:2], size, key_states.shape[-1]))
                self.value_buffer = value_states.new_empty((*value_states.shape[:2], size, value_states.shape[-1]))
            if self.length + new > self.key_buffer.shape[-2]:  # more tokens than planned: grow as DynamicLayer does
                self.key_buffer = torch.cat([self.key_buffer[:, :, :self.length], key_states], dim=-2)
                self.value_buffer = torch.cat([self.value_buffer[:, :, :self.length], value_states], dim=-2)
            else:
                self.key_buffer[:, :, self.length:self.length + new] = key_states
                self.value_buffer[:, :, self.length:self.length + new] = value_states
            self.length += new
            self.keys = self.key_buffer[:, :, :self.length]
            self.values = self.value_buffer[:, :, :self.length]
            return self.keys, self.values

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.key_buffer is not None:
                self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
                self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
                self.keys = self.key_buffer[:, :, :self.length]
                self.values = self.value_buffer[:, :, :self.length]

        def batch_select_indices(self, indices) -> None:
            if self.key_buffer is not None:
                self.key_buffer = self.key_buffer[indices]
                self.value_buffer = self.value_buffer[indices]
                self.keys = self.key_buffer[:, :, :self.length]
                self.values = self.value_buffer[:, :, :self.length]

        def reset(self) -> None:
            self.length = 0
            self.key_buffer = self.value_buffer = None
            super().reset()

    _LAYER_CLASS = PreallocatedLayer
    return _LAYER_CLASS
