from pathlib import Path

import pytest
from omegaconf import OmegaConf

from halluguard.config import check_overrides, schema_paths, validate
from halluguard.errors import ConfigError

from conftest import CONF


def group_options():
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir()):
        for yaml in sorted(group_dir.glob("*.yaml")):
            yield group_dir.name, yaml.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_shipped_option_composes_and_validates(compose, group, option):
    required = {("model", "hf"): ["model.name_or_path=/tmp"], ("kb", "jsonl"): ["kb.passages=/tmp/p.jsonl"],
                ("kb", "textdir"): ["kb.passages=/tmp"]}
    add = "+" if group == "experiment" else ""  # experiments are added on top of the defaults, not chosen among them
    cfg = compose([f"{add}{group}={option}", *required.get((group, option), [])])
    assert cfg.stage == "build"
    # Every interpolation resolves (no ??? left, no broken ${...}).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_defaults_point_at_the_embedded_models_and_demo_kb(compose):
    cfg = compose()
    assert cfg.model.name_or_path == "embedded:SmolLM2-135M-Instruct"
    assert cfg.retriever.encoder == "embedded:all-MiniLM-L6-v2"
    assert Path(cfg.kb.passages).name == "passages.jsonl" and Path(cfg.kb.passages).is_absolute()
    assert cfg.model.trust_remote_code is False


def test_unknown_nested_key_names_the_path_and_the_closest_key(compose):
    raw = compose(check=False)
    OmegaConf.set_struct(raw, False)
    raw.retriever.nprobes = 3
    with pytest.raises(ConfigError, match=r"retriever\.nprobes.*did you mean 'nprobe'"):
        validate(raw)


def test_unknown_top_level_key_is_rejected(compose):
    raw = compose(check=False)
    OmegaConf.set_struct(raw, False)
    raw.sed = 3
    with pytest.raises(ConfigError, match=r"'sed'.*did you mean 'seed'"):
        validate(raw)


@pytest.mark.parametrize("override,key", [
    ("retriever.batch_size=abc", "retriever.batch_size"),
    ("retriever.index=hnsw", "retriever.index"),
    ("model.dtype=float8", "model.dtype"),
    ("model.trust_remote_code=maybe", "model.trust_remote_code"),
])
def test_wrong_type_or_choice_names_the_key(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


def test_non_positive_sizes_are_rejected(compose):
    with pytest.raises(ConfigError, match="retriever.batch_size.*positive"):
        compose(["retriever.batch_size=0"])


def test_missing_required_value_is_reported(compose):
    with pytest.raises(ConfigError, match="kb.passages"):
        compose(["kb=jsonl"])


def test_check_overrides_accepts_valid_keys_and_groups():
    check_overrides(["model=hf", "model.name_or_path=x", "seed=3", "+extra=1", "hydra.verbose=true", "--cfg", "job"],
                    groups=["model"])


def test_check_overrides_suggests_the_key_meant():
    with pytest.raises(ConfigError, match="did you mean 'retriever.nprobe'"):
        check_overrides(["retriever.nprob=3"])
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        check_overrides(["sede=3"])


def test_schema_paths_cover_groups():
    paths = schema_paths()
    assert {"model.name_or_path", "retriever.index", "kb.passages", "prompt.mode", "paths.cache"} <= paths


def test_rules_alone_warn_of_a_cheap_needless_refusal_unless_ppo_rebalances(compose, caplog):
    message = "is below reward.rules.answer_ook"
    with caplog.at_level("WARNING", logger="halluguard.config"):
        compose(["reward.scorer=rules"], stage="ppo")
    assert message in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="halluguard.config"):  # PPO sets answer_ook itself before training
        compose(["reward.scorer=rules", "ppo.balance_reward=true"], stage="ppo")
    assert message not in caplog.text
