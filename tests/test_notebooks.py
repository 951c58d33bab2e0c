"""Notebooks are executed, so they cannot rot."""

from pathlib import Path

import pytest
from tiny_chain import tiny_chain  # noqa: F401 (the shared `halluguard run` fixture)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
QUICKSTART = NOTEBOOK_DIR / "quickstart.ipynb"
# Notebooks that need nothing but the installed project; the quickstart reads a finished run (below).
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if p != QUICKSTART)


def execute(path: Path, cwd: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def errors(outputs) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path, tmp_path):
    outputs = execute(path, tmp_path)
    assert not errors(outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plot was not drawn"


def test_quickstart_reads_a_finished_run(tiny_chain, tmp_path, monkeypatch):  # noqa: F811
    """The quickstart on the tiny chain's run folder (HALLUGUARD_RUN_DIR reaches the kernel's environment)."""
    assert tiny_chain["result"].returncode == 0, tiny_chain["result"].stderr[-3000:]
    monkeypatch.setenv("HALLUGUARD_RUN_DIR", str(tiny_chain["exp_dir"]))
    outputs = execute(QUICKSTART, tmp_path)
    assert not errors(outputs), errors(outputs)
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("| model |" in m and "| **ppo** |" in m and "| **dpo** |" in m for m in markdown), "no before/after table"
    assert any("sft → ppo" in m for m in markdown), "no comparison table"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the PPO curves, the SFT loss and the eval charts should be shown"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run folder: {tiny_chain['exp_dir']}" in text and "sft -> ppo:" in text
    assert "refusal trade-off (eval/chart_tradeoff.png)" in text


def test_quickstart_without_a_run_says_to_run_make_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLUGUARD_RUN_DIR", str(tmp_path / "no-run"))
    with pytest.raises(Exception, match="make demo"):
        execute(QUICKSTART, tmp_path)
