"""Train a model on your own extended-XYZ data, then use it with ASE.

Usage::

    python examples/train_from_extxyz.py [DATA.extxyz] [--kind 4G] [--epochs 100] [--output my_run]

Without a data file it uses the NaCl clusters shipped with hybridpot. Your file needs, per
structure, an energy (eV) and forces (eV/Å) (keys ``energy``/``forces``, or name yours with
``--keys energy=REF_energy,forces=REF_forces``); for a 4G model also per-atom reference charges
(``charges``) or dipoles, and the total charge in ``info["charge"]`` (default 0).

The same run from the command line, with a YAML file (see examples/train_config.yaml)::

    hybridpot train examples/train_config.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import hybridpot as hp
from hybridpot.data import nacl_clusters_path
from hybridpot.training import AtomsDataset, Trainer, TrainingConfig, evaluate_model


def build_model(elements, kind: str, cutoff: float):
    desc = hp.SymmetryFunctions.default(elements, r_cut=cutoff, n_radial=6)
    if kind == "2G":
        return hp.HybridPotential(short_range=hp.ShortRange(elements, desc, hidden=(20, 20))).double()
    return hp.HybridPotential(
        short_range=hp.ShortRange(elements, desc, hidden=(20, 20), use_charges=True),
        charges=hp.ChargeEquilibration(elements, desc, hidden=(10, 10), real_space_cutoff=max(cutoff, 8.0)),
        electrostatics=hp.Electrostatics(method="auto", real_space_cutoff=max(cutoff, 8.0)),
    ).double()


def main(argv=None):
    parser = argparse.ArgumentParser(description="train a hybridpot model on extended XYZ data")
    parser.add_argument("data", nargs="?", default=str(nacl_clusters_path()))
    parser.add_argument("--keys", default="", help="key names, e.g. energy=REF_energy,forces=REF_forces")
    parser.add_argument("--kind", choices=["2G", "4G"], default="4G")
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--output", default="runs/my_run")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    keys = dict(kv.split("=") for kv in args.keys.split(",") if kv)
    images = hp.read_extxyz(args.data, keys=keys or None)        # ase.Atoms with reference results
    elements = sorted(set(int(z) for a in images for z in a.numbers))
    model = build_model(elements, args.kind, args.cutoff)
    data = AtomsDataset.from_atoms(images, cutoff=model.cutoff)  # neighbour lists computed once
    train, validation, test = data.split((0.8, 0.1, 0.1), seed=0)
    config = TrainingConfig(epochs=args.epochs, charge_epochs=args.epochs // 3, lr=5e-3, charge_lr=5e-3, batch_size=16)
    trainer = Trainer(model, train, validation, config=config, directory=args.output)
    model = trainer.fit()                                        # best model, float64; also in OUTPUT/model.pt
    print(evaluate_model(model, test).table())

    # use it with ASE: energies, forces, charges
    atoms = images[int(np.argmax([len(a) for a in images]))].copy()
    atoms.calc = hp.HybridCalculator(model)
    print("energy (eV):", atoms.get_potential_energy())
    print("max force (eV/Å):", np.abs(atoms.get_forces()).max())
    if model.charges is not None:
        print("charges (e):", np.round(atoms.get_charges(), 3))
    hp.save(model, Path(args.output) / "my_model.pt")


if __name__ == "__main__":
    main()
