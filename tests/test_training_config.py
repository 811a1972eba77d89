"""Typed config validation: one-line errors naming file, key, value and type, before any data are read."""

from __future__ import annotations

import pytest

from hybridpot.cli import main
from hybridpot.training.config import ConfigError, load_config

BASE = """\
data: {{train: data.xyz}}
model: {{kind: 2G, cutoff: 3.0, hidden: [4]}}
training: {{epochs: 1, lr: 0.01}}
{extra}
"""


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    # data that must never be read: validation happens before
    (tmp_path / "data.xyz").write_bytes(b"\x00\xff\xfe not xyz")
    return path


def test_yaml_11_exponent_numbers_are_numbers(tmp_path):
    path = _write(tmp_path, "training: {lr: 1e-3, charge_lr: 5E-4, weights: {energy: 1, forces: 1e-2}}\n"
                            "model: {charge_options: {cg_tol: 1e-8}, electrostatics: {accuracy: 1e-5}}\n")
    cfg = load_config(path)
    assert cfg.training.lr == 1e-3 and isinstance(cfg.training.lr, float)
    assert cfg.training.charge_lr == 5e-4
    assert cfg.training.weights == {"energy": 1.0, "forces": 0.01}
    assert cfg.model.charge_options == {"cg_tol": 1e-8}
    assert cfg.model.electrostatics == {"accuracy": 1e-5}


@pytest.mark.parametrize("section,text,expected", [
    ("training", 'epochs: "1"', "training.epochs = '1' (a string): expected an integer"),
    ("model", "hidden: 5", "model.hidden = 5: expected a list of integers"),
    ("training", "lr: fast", "training.lr = 'fast' (a string): expected a number"),
    ("training", "lr: -1.0", "training.lr = -1.0: expected a positive number"),
    ("training", "batch_size: 0", "training.batch_size = 0: expected an integer >= 1"),
    ("training", "dtype: float16", "training.dtype = 'float16': expected 'float32' or 'float64'"),
    ("training", "fit_energy_offsets: 1", "training.fit_energy_offsets = 1: expected true or false"),
    ("training", "weights: {energy: 1, force: 1}", "training.weights.force = 1.0: expected a loss name"),
    ("model", "kind: 3G", "model.kind = '3G': expected '2G' or '4G'"),
    ("model", "activation: relu", "model.activation = 'relu': activation 'relu' refused"),
    ("model", "charge_options: {cg_tolerance: 1e-6}", "model.charge_options.cg_tolerance: not an option"),
    ("model", "dispersion: {damp: bj}", "model.dispersion.damp: not an option of Dispersion"),
    ("data", "split: [0.5, 0.2]", "data.split = [0.5, 0.2]: expected 2 or 3 fractions"),
    ("output", "progress: yes please", "output.progress = 'yes please' (a string): expected true or false"),
    ("training", "scheduler: 3", "training.scheduler = 3: expected a mapping"),
])
def test_bad_value_gives_one_line_error_and_exit_2(tmp_path, capsys, section, text, expected):
    defaults = {"data": "train: data.xyz", "model": "kind: 2G", "training": "epochs: 1", "output": "progress: false"}
    defaults[section] = text
    path = _write(tmp_path, "".join(f"{k}: {{{v}}}\n" for k, v in defaults.items()))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and str(path) in err


def test_missing_data_file_is_named_before_reading(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("data: {train: nowhere.xyz}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.train = 'nowhere.xyz': no such file" in err


def test_binary_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x00\xff\xfe\x00")
    with pytest.raises(ConfigError, match="config.yaml: not a text"):
        load_config(path)


def test_one_coulomb_section_configures_qeq_and_electrostatics(tmp_path):
    """model.coulomb sets accuracy and real-space cutoff for both terms; the same key set differently
    in charge_options or electrostatics is an error that names both places."""
    from hybridpot.training.builder import build_model
    from hybridpot.training.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x.xyz}\nmodel: {kind: 4G, cutoff: 4.0, n_radial: 2, hidden: [3], charge_hidden: [3],"
                    " coulomb: {accuracy: 1.0e-5, real_space_cutoff: 8.0}}\n")
    cfg = load_config(path)
    model = build_model(cfg.model, [11, 17])
    assert model.charges.real_space_cutoff == 8.0 and model.electrostatics.real_space_cutoff == 8.0
    assert model.charges.params.accuracy == model.electrostatics.params.accuracy == 1e-5
    path.write_text("data: {train: x.xyz}\nmodel: {kind: 4G, coulomb: {accuracy: 1.0e-5}, "
                    "electrostatics: {accuracy: 1.0e-6}}\n")
    with pytest.raises(ConfigError, match="model.electrostatics.accuracy.*model.coulomb.accuracy"):
        load_config(path)
    path.write_text("data: {train: x.xyz}\nmodel: {kind: 4G, coulomb: {smearing: 1.0}}\n")
    with pytest.raises(ConfigError, match="model.coulomb.smearing"):
        load_config(path)
