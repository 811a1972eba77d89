"""The hybridpot side of validation/train_vs_n2p2.py: train on an n2p2 training set with n2p2's architecture.

The architecture (symmetry functions, cutoff type, network sizes and activations, 4G Gaussian
widths, initial hardness, electrostatic screening, element energies) comes from the set's
``input.nn`` through :func:`hybridpot.from_n2p2` on a template directory with placeholder
weights and scaling; the networks are then re-initialised, the symmetry-function scaling fitted on
the training split (n2p2's mode and range) and the model trained by :class:`hybridpot.training.Trainer`.

Training settings: ``OPTIONS`` below (the Kalman filter with n2p2's example parameters expressed in
n2p2's units, see :class:`hybridpot.training.kalman_fit.KalmanSettings`), overridable per set.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import torch
from ase.units import Bohr, Hartree

#: Kalman settings read from input.nn (n2p2 keyword -> KalmanSettings field)
KALMAN_KEYWORDS = {"kalman_epsilon": "epsilon", "kalman_q0": "q0", "kalman_qtau": "q_tau", "kalman_qmin": "q_min",
                   "kalman_eta": "eta", "kalman_etatau": "eta_tau", "kalman_etamax": "eta_max",
                   "short_force_fraction": "force_fraction", "short_energy_fraction": "energy_fraction",
                   "force_weight": "force_weight", "charge_fraction": "charge_fraction",
                   "short_energy_error_threshold": "energy_threshold", "short_force_error_threshold": "force_threshold",
                   "charge_error_threshold": "charge_threshold"}
#: n2p2 selection_mode -> KalmanSettings.selection (1, "sort", is not implemented: refused)
SELECTION_MODES = {"0": "random", "2": "threshold"}
#: per-set overrides of the training options (kalman settings, dtype); the epochs are n2p2's (same budget)
OPTIONS: dict = {}


def keyword_values(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words:
            values.setdefault(words[0], words[1:])
    return values


def template_directory(source: Path, target: Path) -> Path:
    """``input.nn`` of ``source`` with placeholder weights, hardness and scaling files."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    text = (source / "input.nn").read_text()
    # n2p2's normalisation (mean_energy, conv_energy, conv_length) is kept: the networks then output
    # normalised energies, as n2p2's do, so that initial weights and the filter's P = I / epsilon mean
    # the same in both programs (with eV outputs the output layer's weights are 1/conv_energy of
    # n2p2's, and the isotropic P weighs them differently)
    (target / "input.nn").write_text(text)
    kw = keyword_values(text)
    from ase.data import atomic_numbers

    elements = sorted(kw["elements"], key=lambda e: atomic_numbers[e])
    generation = int(kw.get("nnp_generation", ["2"])[0])
    n_sf = {e: 0 for e in elements}
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words and words[0] in ("symfunction_short", "symfunction"):
            n_sf[words[1]] += 1

    def n_weights(n_in: int, nodes) -> int:
        widths = [n_in] + [int(n) for n in nodes] + [1]
        return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))

    hardness = {}
    for words in (l.split() for l in text.splitlines() if l.startswith("initial_hardness")):
        hardness[words[1]] = float(words[2])
    scaling = []
    for k, e in enumerate(elements):
        z = atomic_numbers[e]
        extra = 1 if generation == 4 else 0
        count = n_weights(n_sf[e] + extra, kw["global_nodes_short"])
        (target / f"weights.{z:03d}.data").write_text("0.0\n" * count)
        if generation == 4:
            count = n_weights(n_sf[e], kw["global_nodes_electrostatic"])
            (target / f"weightse.{z:03d}.data").write_text("0.0\n" * count)
            (target / f"hardness.{z:03d}.data").write_text(f"{hardness.get(e, 1.0)!r}\n")
        scaling += [f"{k + 1} {f + 1} 0.0 1.0 0.5 0.3" for f in range(n_sf[e])]
    (target / "scaling.data").write_text("\n".join(scaling) + "\n")
    return target


def train_hybridpot(name: str, train_blocks, workdir: Path, file_units: str, source: Path, epochs: int = 100,
                    charge_epochs: int = 60, seed: int = 0, init: str = "glorot"):
    """Train hybridpot on ``train_blocks`` for the given epochs (4G: charge stage, then energies and
    forces); ``seed`` draws the initial weights and the update order; ``init`` "n2p2" draws them as
    n2p2 does (:meth:`~hybridpot.atomic_nets.ElementNets.initialize_like_n2p2`), "glorot" with
    Glorot-Bengio on every layer. Returns ({cpu_s, wall_s, settings},
    float64 model)."""
    import hybridpot as hp
    from hybridpot.atomic_nets import ElementNets
    from hybridpot.io.input_data import read_input_data
    from hybridpot.training import AtomsDataset, Trainer, TrainingConfig

    from train_vs_n2p2 import write_blocks  # noqa: E402

    run = workdir / name / ("hybridpot" if seed == 0 else f"hybridpot_seed{seed}")
    template = template_directory(source, run / "template")
    model = hp.from_n2p2(template, units="ase", file_units=file_units)
    kw = keyword_values((source / "input.nn").read_text())
    torch.manual_seed(seed)
    for nets in (m for m in model.modules() if isinstance(m, ElementNets)):  # short range and electronegativity
        if init == "n2p2":
            nets.initialize_like_n2p2(float(kw.get("weights_min", ["-1.0"])[0]),
                                      float(kw.get("weights_max", ["1.0"])[0]))
        elif init == "glorot":  # Glorot-Bengio uniform on every layer, zero biases
            for layer in (m for m in nets.modules() if isinstance(m, torch.nn.Linear)):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)
        else:
            raise ValueError(f"init must be 'n2p2' or 'glorot', got {init!r}")
    write_blocks(run / "train.data", train_blocks)
    images = read_input_data(run / "train.data", units=file_units)
    train = AtomsDataset.from_atoms(images, cutoff=float(model.cutoff))
    kalman = {field: float(kw[key][0]) for key, field in KALMAN_KEYWORDS.items() if key in kw}
    selection_mode = kw.get("selection_mode", ["0"])[0]
    if selection_mode not in SELECTION_MODES:
        raise ValueError(f"n2p2 selection_mode {selection_mode} (sort) is not implemented; use 0 (random) or 2 "
                         "(threshold)")
    kalman["selection"] = SELECTION_MODES[selection_mode]
    if "rmse_threshold_trials" in kw:
        kalman["threshold_trials"] = int(kw["rmse_threshold_trials"][0])
    # the filter's errors in n2p2's units: the file's, and n2p2's normalised units where input.nn has
    # conv_energy / conv_length (E_n = E conv_energy, F_n = F conv_energy / conv_length)
    energy_unit, length_unit = (Hartree, Bohr) if file_units == "bohr_hartree" else (1.0, 1.0)
    if "conv_energy" in kw and "conv_length" in kw:
        energy_unit /= float(kw["conv_energy"][0])
        length_unit /= float(kw["conv_length"][0])
    kalman.update(energy_unit=energy_unit, length_unit=length_unit)
    kalman["per_atom_energy"] = False  # n2p2 observes total energies
    options = {"epochs": epochs, "charge_epochs": charge_epochs, **OPTIONS.get(name, {})}
    kalman.update(options.pop("kalman", {}))
    scale_min = float(kw.get("scale_min_short", ["0.0"])[0])
    scale_max = float(kw.get("scale_max_short", ["1.0"])[0])
    mode = {(True, True): "scalecenter", (True, False): "scale", (False, True): "center"}.get(
        ("scale_symmetry_functions" in kw, "center_symmetry_functions" in kw), "none")
    if "scale_symmetry_functions_sigma" in kw:
        mode = "sigma"
    config = TrainingConfig(optimizer="kalman", kalman=kalman, dtype=options.pop("dtype", "float64"),
                            early_stopping_patience=0, seed=seed,
                            # with n2p2's normalisation its mean_energy is the offset, as in nnp-train
                            fit_energy_offsets="mean_energy" not in kw, **options)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trainer = Trainer(model, train, None, config, directory=run / "run", scaling=mode,
                      scaling_range=(scale_min, scale_max), progress=False)
    final = trainer.fit()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_s": cpu, "wall_s": wall, "threads": torch.get_num_threads(), "kalman": kalman,
            "scaling": [mode, scale_min, scale_max], "epochs": [config.charge_epochs, config.epochs],
            "seed": seed, "init": init}, final
