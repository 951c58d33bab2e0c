"""Bad PPO settings fail at config validation, before anything loads, naming the key."""

import pytest

from halluguard.errors import ConfigError


@pytest.mark.parametrize("override,match", [
    ("ppo.kl.budget=0", r"ppo\.kl\.budget.*positive"),
    ("ppo.kl.budget=-1.5", r"ppo\.kl\.budget.*positive"),
    ("ppo.mini_batch_size=3", r"ppo\.mini_batch_size.*divide ppo\.batch_size"),
    ("ppo.batch_size=0", r"ppo\.batch_size.*positive"),
    ("ppo.ppo_epochs=0", r"ppo\.ppo_epochs.*positive"),
    ("ppo.algo=dop", r"ppo\.algo.*did you mean 'dpo'"),
    ("ppo.start=bsae", r"ppo\.start.*did you mean 'base'"),
    ("ppo.kl.penalty=k2", r"ppo\.kl\.penalty.*k1, k3"),
    ("ppo.report_to=[tensorbord]", r"ppo\.report_to.*did you mean 'tensorboard'"),
    ("ppo.temperature=0", r"ppo\.temperature.*positive"),
    ("ppo.lam=1.5", r"ppo\.lam.*\[0, 1\]"),
    ("ppo.kl.target=0", r"ppo\.kl\.target.*positive"),
])
def test_bad_ppo_settings_are_config_errors(compose, override, match):
    with pytest.raises(ConfigError, match=match):
        compose([override], stage="ppo")


def test_default_ppo_config_validates_and_matches_the_schema(compose):
    cfg = compose(stage="ppo")
    assert cfg.ppo.algo == "ppo" and cfg.ppo.kl.penalty == "k1" and cfg.ppo.kl.budget > 0
    assert cfg.ppo.batch_size % cfg.ppo.mini_batch_size == 0
