"""The README and examples/README as a new user meets them: the quick start runs, paths exist, no outside references."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", ROOT / "docs" / "architecture.md"]


def _python_blocks(path: Path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_quick_start_runs(tmp_path):
    (block,) = _python_blocks(ROOT / "README.md")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "model.pt").exists()
    assert "Warning" not in res.stderr


def test_no_references_outside_the_repository():
    for path in DOCS:
        text = path.read_text()
        assert "../shared" not in text and "/work/" not in text, path


def test_one_demo_output_folder():
    for path in DOCS + [ROOT / "hybridpot" / "demo.py", ROOT / "examples" / "dissociation.py"]:
        text = path.read_text()
        assert "demo_output" not in text, path
    assert "runs/hybridpot_demo" in (ROOT / "hybridpot" / "demo.py").read_text()


def test_paths_named_in_the_readmes_exist():
    # repository files named in backticks (not outputs under runs/, not placeholders)
    for path in DOCS:
        for name in re.findall(r"`((?:hybridpot|examples|validation|benchmarks|docs|tests)/[\w./-]+\.(?:py|md|yaml|pt|gz))`",
                               path.read_text()):
            assert (ROOT / name).exists(), f"{path.name} names {name}, which does not exist"


def test_examples_write_under_runs():
    for script in (ROOT / "examples").glob("*.py"):
        for default in re.findall(r'"--output", default="([^"]+)"', script.read_text()):
            assert default.startswith("runs/"), (script.name, default)


@pytest.mark.slow
def test_readme_train_and_evaluate_commands(tmp_path):
    """The README's train and evaluate commands, as written (run directory redirected to tmp_path)."""
    from hybridpot.cli import main

    run = tmp_path / "train_config"
    assert main(["train", str(ROOT / "examples" / "train_config.yaml"), "--output", str(run), "--no-progress"]) == 0
    data = ROOT / "hybridpot" / "data" / "nacl_clusters.extxyz.gz"
    assert main(["evaluate", str(run / "model.pt"), str(data), "--output", str(run / "evaluation")]) == 0
    assert (run / "evaluation" / "metrics.json").exists()
