"""2G vs 4G on NaCl clusters of one composition with charge 0 and +1, the setting of the published 4G-HDNNP.

Ko, Finkler, Goedecker and Behler (Nat. Commun. 12, 398 (2021)) fitted Na9Cl8 clusters with total charge
0 and +1 (DFT) and report test errors of about 0.5 meV/atom and ~60 meV/Å for their 4G-HDNNP, where a
2G potential cannot tell the two charge states apart. This script makes the same kind of data with the
project's reference method (GFN1-xTB at 3000 K, tblite; :mod:`hybridpot.reference_data.nacl_clusters`:
per charge state 4 random connected Na9Cl8 clusters, each relaxed, rattled 6 times and sampled by 40
Langevin-MD snapshots at 300-700 K), splits it 80/10/10 (seed 0) and trains the demo's 2G and 4G
architectures (:func:`hybridpot.demo._build_model`: 6 Å cutoff, 25-25 networks) with the Kalman filter
observing total energies in Hartree and forces in Hartree/Bohr, as n2p2 does (its noise and force weight
are tuned for those units). Prints the test errors, per charge state and per kind of geometry.

Usage::

    OMP_NUM_THREADS=1 python validation/nacl_one_composition.py                 # data (~2.5 min) + training
    python validation/nacl_one_composition.py --data na9cl8.extxyz.gz --epochs 40  # reuse a data file

Needs tblite (extra ``reference``) unless ``--data`` is given. Results (JSON) in ``--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.units import Bohr, Hartree

#: the Kalman filter's error units as n2p2's (total energies, Hartree, Bohr)
N2P2_UNITS = {"per_atom_energy": False, "energy_unit": Hartree, "length_unit": Bohr}


def make_data(path: Path, seed: int = 7) -> None:
    from hybridpot.reference_data.nacl_clusters import generate_nacl_dataset, write_dataset

    images = generate_nacl_dataset(seed=seed, compositions=((9, 8, 1), (9, 8, 0)), n_starts=4, n_rattles=6, n_md=40,
                                   md_interval=10, md_temperatures=(300.0, 700.0), dimer_points=0, n_compressed=0)
    write_dataset(images, path)


def errors_by_group(model, images) -> dict:
    """Energy (meV/atom) and force (meV/Å) RMSEs per total charge and per kind of geometry."""
    import hybridpot as hp

    groups: dict = {}
    for atoms in images:
        out = model(hp.AtomicSystem.from_ase(atoms))
        de = (float(out["energy"][0]) - atoms.get_potential_energy()) / len(atoms)
        df2 = float(((out["forces"].numpy() - atoms.get_forces()) ** 2).mean())
        for key in (f"charge {atoms.info['charge']:+.0f}", atoms.info.get("source", "?").split("_")[0], "all"):
            groups.setdefault(key, []).append((de, df2))
    return {key: {"n": len(v), "energy_meV_per_atom": 1e3 * float(np.sqrt(np.mean([e * e for e, _ in v]))),
                  "forces_meV_per_A": 1e3 * float(np.sqrt(np.mean([f for _, f in v])))} for key, v in groups.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="labelled extxyz file (default: generate it)")
    parser.add_argument("--epochs", type=int, default=40, help="energy/force epochs (both models)")
    parser.add_argument("--charge-epochs", type=int, default=8, help="4G charge-stage epochs")
    parser.add_argument("--output", type=Path, default=Path("runs/nacl_one_composition"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ase.io

    from hybridpot.demo import FULL, _build_model
    from hybridpot.training import AtomsDataset, Trainer, TrainingConfig

    args.output.mkdir(parents=True, exist_ok=True)
    data = args.data or args.output / "na9cl8.extxyz.gz"
    if not data.is_file():
        make_data(data)
    images = ase.io.read(str(data), index=":")
    perm = np.random.default_rng(0).permutation(len(images))
    n = len(images) // 10
    split = {"test": perm[:n], "validation": perm[n:2 * n], "train": perm[2 * n:]}
    subsets = {k: [images[i] for i in sorted(v)] for k, v in split.items()}
    print(f"{len(images)} Na9Cl8 structures (charge 0 and +1): train {len(split['train'])}, validation "
          f"{len(split['validation'])}, test {len(split['test'])}", flush=True)
    settings = dataclasses.replace(FULL)
    results = {}
    for kind in ("2G", "4G"):
        torch.manual_seed(0)
        model = _build_model(kind, settings)
        datasets = {k: AtomsDataset.from_atoms(v, cutoff=model.cutoff) for k, v in subsets.items() if k != "test"}
        config = TrainingConfig(dtype="float64", seed=0, epochs=args.epochs, charge_epochs=args.charge_epochs,
                                early_stopping_patience=0, optimizer="kalman", kalman=dict(N2P2_UNITS))
        cpu0 = time.process_time()
        trainer = Trainer(model, datasets["train"], datasets["validation"], config=config,
                          directory=args.output / f"run_{kind}", progress=True)
        model = trainer.fit().double().eval()
        cpu = time.process_time() - cpu0
        results[kind] = {"train_cpu_s": cpu, "test": errors_by_group(model, subsets["test"])}
        print(f"{kind}: trained in {cpu:.0f} s CPU", flush=True)
    keys = list(results["4G"]["test"])
    print(f"\nTest errors (GFN1-xTB reference), energy meV/atom / force meV/Å")
    print(f"{'group':14s} {'n':>4s} {'2G E':>9s} {'2G F':>8s} {'4G E':>8s} {'4G F':>8s}")
    for key in ["all"] + [k for k in keys if k != "all"]:
        a, b = results["2G"]["test"][key], results["4G"]["test"][key]
        print(f"{key:14s} {a['n']:4d} {a['energy_meV_per_atom']:9.2f} {a['forces_meV_per_A']:8.1f} "
              f"{b['energy_meV_per_atom']:8.2f} {b['forces_meV_per_A']:8.1f}")
    (args.output / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
