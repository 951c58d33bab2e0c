"""A second `halluguard run` with the same seed gives the same build hashes and the same metrics.

The first run is the shared chain (its own process); the second runs in this one, after whatever the tests
before it did here: the result must not depend on the process either."""

import json

import pytest
from conftest import built_tiny_overrides
from tiny_chain import CHAIN_SIZES, tiny_chain  # noqa: F401 (tiny_chain: the shared first run)

from halluguard import cli

# stats.json holds wall-clock timings; every data output must be byte-identical.
DATA_OUTPUTS = ("questions", "pairs", "ppo_prompts", "heldout", "index")


def _manifest(exp_dir, stage):
    return json.loads((exp_dir / stage / "manifest.json").read_text())


@pytest.mark.usefixtures("one_torch_thread")  # as the first run's OMP_NUM_THREADS=1
def test_a_second_run_with_the_same_seed_gives_the_same_hashes_and_metrics(tiny_chain, tmp_path,  # noqa: F811
                                                                           tiny_policy, capsys):
    first = tiny_chain["exp_dir"]
    assert tiny_chain["result"].returncode == 0, tiny_chain["result"].stderr[-3000:]
    assert cli.main(["run", *built_tiny_overrides(tmp_path, tiny_policy), *CHAIN_SIZES]) == 0, capsys.readouterr().err
    second = tmp_path / "runs" / "t"

    a, b = _manifest(first, "build")["outputs"], _manifest(second, "build")["outputs"]
    assert {k: a[k]["sha256"] for k in DATA_OUTPUTS} == {k: b[k]["sha256"] for k in DATA_OUTPUTS}
    for stage in ("sft", "reward", "ppo"):
        ma, mb = _manifest(first, stage)["metrics"], _manifest(second, stage)["metrics"]
        timing = {k for k in ma if "second" in k or k.endswith("_s") or "time" in k}
        assert {k: v for k, v in ma.items() if k not in timing} == {k: v for k, v in mb.items() if k not in timing}, stage
    ra = json.loads((first / "eval" / "results.json").read_text())
    rb = json.loads((second / "eval" / "results.json").read_text())
    for model, result in ra["models"].items():
        assert result.get("summary") == rb["models"][model].get("summary"), model
