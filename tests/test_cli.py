"""The `hybridpot` command line: train and evaluate on a tiny synthetic dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import hybridpot as hp
from hybridpot.cli import COMMANDS, main
from hybridpot.io import write_extxyz, write_input_data


def _data(path, n=10, seed=0, fmt="xyz"):
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        m = 3 + k % 2
        while True:
            pos = rng.uniform(0, 3.2, (m, 3))
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(m, 1)]
            if d.min() > 1.0:
                break
        a = Atoms((["H", "He"] * 2)[:m], positions=pos)
        a.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=3.0, smooth=True)
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy() - 1.5 * m, forces=a.get_forces())
        images.append(a)
    (write_extxyz if fmt == "xyz" else write_input_data)(path, images)
    return images


def _config(tmp_path, **training):
    cfg = {
        "data": {"train": "data.xyz", "split": [0.6, 0.2, 0.2], "seed": 1},
        "model": {"kind": "2G", "cutoff": 3.0, "n_radial": 3, "angular_etas": [0.01], "zetas": [1.0], "hidden": [4]},
        "training": {"epochs": 3, "batch_size": 4, "dtype": "float32", "lr": 0.01, **training},
        "output": {"directory": "run", "progress": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_then_evaluate(tmp_path, capsys):
    images = _data(tmp_path / "data.xyz")
    assert main(["train", str(_config(tmp_path))]) == 0
    run = tmp_path / "run"
    for name in ("model.pt", "best_model.pt", "checkpoint.pt", "metrics.jsonl", "final_metrics.json", "config.yaml"):
        assert (run / name).exists(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    final = json.loads((run / "final_metrics.json").read_text())
    assert set(final) == {"train", "validation", "test"}
    out = capsys.readouterr().out
    assert "RMSE" in out and "train (6 structures)" in out

    # evaluate: table, metrics.json and parity plots
    eval_dir = tmp_path / "eval"
    assert main(["evaluate", str(run / "model.pt"), str(tmp_path / "data.xyz"), "--output", str(eval_dir)]) == 0
    out = capsys.readouterr().out
    assert "energy" in out and "forces" in out and "eV/atom" in out
    for q in ("energy", "forces"):
        png = (eval_dir / f"parity_{q}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    # independent check of the printed numbers: evaluate the saved model structure by structure
    model = hp.load(run / "model.pt")
    de, df = [], []
    for a in images:
        out = model(hp.AtomicSystem.from_ase(a))
        de.append((float(out["energy"][0]) - a.get_potential_energy()) / len(a))
        df.append(out["forces"].numpy() - a.get_forces())
    assert metrics["energy_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(de))), rel=1e-6)
    assert metrics["forces_mae"] == pytest.approx(np.mean(np.abs(np.concatenate(df))), rel=1e-6)


def test_train_resume_continues_from_checkpoint(tmp_path):
    _data(tmp_path / "data.xyz")
    cfg = _config(tmp_path, epochs=4)
    assert main(["train", str(cfg), "--output", str(tmp_path / "full")]) == 0
    # the same run stopped after epoch 2 (as if killed), then `hybridpot train --resume`
    from hybridpot.training import Trainer, TrainingInterrupted

    def kill(trainer, stage, epoch, record):
        if epoch == 2:
            raise TrainingInterrupted

    original_init = Trainer.__init__

    def patched(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.callback = kill

    Trainer.__init__ = patched
    try:
        assert main(["train", str(_config(tmp_path, epochs=4)), "--output", str(tmp_path / "killed")]) == 130
    finally:
        Trainer.__init__ = original_init
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["stage_index"] == 0
    assert main(["train", str(_config(tmp_path, epochs=4)), "--output", str(tmp_path / "killed"), "--resume"]) == 0
    a = hp.load(tmp_path / "full" / "model.pt").state_dict()
    b = hp.load(tmp_path / "killed" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_input_data_training_file(tmp_path):
    _data(tmp_path / "train.data", fmt="data")
    cfg = yaml.safe_load(_config(tmp_path).read_text())
    cfg["data"]["train"] = "train.data"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "model.pt").exists()


def test_errors_give_exit_status_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("training:\n  epoch: 3\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key(s) ['epoch']" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none.pt"), str(tmp_path / "d.xyz")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["ipi", str(tmp_path / "none.pt"), str(tmp_path / "d.xyz"), "--address", "x"]) == 2
    assert "model file" in capsys.readouterr().err


def test_evaluate_output_that_is_a_file(tmp_path, capsys):
    model = tmp_path / "m.pt"
    from conftest import make_short_range_model

    hp.save(make_short_range_model(("H", "He"), r_cut=3.0), model)
    _data(tmp_path / "d.xyz", n=2)
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    assert main(["evaluate", str(model), str(tmp_path / "d.xyz"), "--output", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a directory" in err and "Traceback" not in err
    assert existing.read_text() == "keep me"


def test_evaluate_warns_on_all_zero_labels(tmp_path, capsys):
    from conftest import make_short_range_model

    model = tmp_path / "m.pt"
    hp.save(make_short_range_model(("H", "He"), r_cut=3.0), model)
    images = _data(tmp_path / "real.xyz", n=3)
    for a in images:
        a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((len(a), 3)))
    write_extxyz(tmp_path / "zeros.xyz", images)
    args = ["evaluate", str(model), None, "--output", str(tmp_path / "ev"), "--no-plots", "--no-progress"]
    assert main([str(tmp_path / "zeros.xyz") if a is None else a for a in args]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "energy (every value 0 eV)" in err and "forces (every component 0 eV/Å)" in err
    assert main([str(tmp_path / "real.xyz") if a is None else a for a in args]) == 0
    assert "warning" not in capsys.readouterr().err


def test_console_script_and_subcommand_registry():
    assert {"train", "evaluate"} <= set(COMMANDS)
    res = subprocess.run([sys.executable, "-m", "hybridpot.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "train" in res.stdout and "evaluate" in res.stdout


def test_example_config_is_valid():
    from pathlib import Path

    from hybridpot.training import Config, load_config

    path = Path(__file__).resolve().parents[1] / "examples" / "train_config.yaml"
    cfg = load_config(path)
    # the documented values are the defaults, except the keys marked "example"
    import dataclasses

    assert dataclasses.replace(cfg.training, epochs=Config().training.epochs) == Config().training
    assert cfg.model == Config().model
    # as written it runs on a fresh clone: shipped data, run directory under runs/ (git-ignored)
    assert cfg.resolve(cfg.data.train).is_file()
    assert cfg.resolve(cfg.output.directory).resolve() == path.parents[1] / "runs" / "train_config"
