"""Molten NaCl, periodic, with a 4G model: Langevin equilibration, then NVE; RDFs and energy drift.

Usage::

    hybridpot demo                 # trains hybridpot_demo/model_4G.pt
    python examples/electrolyte_md.py [--model hybridpot_demo/model_4G.pt] [--steps 300] [--output molten_nacl]

Without a model file a small 4G model is trained on the shipped NaCl data first.

The box: 64 ions (the 2x2x2 rock-salt cube expanded by 12 % to about the density of the melt,
1.5 g/cm^3), 1200 K (NaCl melts at 1074 K). Electrostatics and charge equilibration use
Ewald summation (PME above 300 atoms; ``Electrostatics(method="auto")``) with Gaussian charges;
the neighbour list is reused between steps (Verlet skin 0.5 Å).

Caveat: the demo model was trained on gas-phase Na_nCl_m clusters (GFN1-xTB), not on the melt.
This script shows the workflow (periodic 4G model, ASE MD, RDFs, drift); it is not a
validated molten-salt potential. With the demo model (seed 0) the melt heated to ~2300 K in
200 Langevin steps and Cl-Cl pairs collapsed (first Cl-Cl RDF peak at 0.3 Å): the script warns
when ions come closer than 1.5 Å. Train on periodic data of the melt (``hybridpot.reference``
computes periodic GFN1-xTB energies, forces and stress) before using it for physics.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase import units
from ase.build import bulk
from ase.constraints import FixCom
from ase.geometry import get_distances
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

import hybridpot as hp


def get_model(path: str, output: Path):
    if Path(path).exists():
        return hp.load(path)
    print(f"{path} not found: training a small 4G model first")
    from dataclasses import replace

    from hybridpot.demo import FULL, run_demo

    run_demo(output / "training", settings=replace(FULL, epochs_2g=1, charge_epochs_4g=20, epochs_4g=60, md_steps=10))
    return hp.load(output / "training" / "model_4G.pt")


def rdf(frames, numbers, z1, z2, r_max, n_bins=60):
    """Radial distribution function g_{z1 z2}(r) averaged over frames (minimum image)."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    hist = np.zeros(n_bins)
    a, b = np.nonzero(numbers == z1)[0], np.nonzero(numbers == z2)[0]
    volume = frames[0].get_volume()
    for atoms in frames:
        _, d = get_distances(atoms.positions[a], atoms.positions[b], cell=atoms.cell, pbc=atoms.pbc)
        if z1 == z2:
            d = d[np.triu_indices(len(a), k=1)]
        hist += np.histogram(d.ravel(), bins=edges)[0]
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    n_pairs = len(a) * (len(a) - 1) / 2 if z1 == z2 else len(a) * len(b)
    g = hist / len(frames) / (n_pairs / volume * shell)
    return 0.5 * (edges[1:] + edges[:-1]), g


def main(argv=None):
    parser = argparse.ArgumentParser(description="molten NaCl MD with a 4G model")
    parser.add_argument("--model", default="hybridpot_demo/model_4G.pt")
    parser.add_argument("--steps", type=int, default=300, help="Langevin steps, and as many NVE steps")
    parser.add_argument("--temperature", type=float, default=1200.0)
    parser.add_argument("--output", default="molten_nacl")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = get_model(args.model, output)

    atoms = bulk("NaCl", "rocksalt", a=5.64 * 1.12, cubic=True).repeat(2)
    atoms.calc = hp.HybridCalculator(model, skin=0.5)
    rng = np.random.default_rng(0)
    atoms.rattle(0.1, rng=rng)
    density = atoms.get_masses().sum() / units.mol / (atoms.get_volume() * 1e-24)
    print(f"{len(atoms)} ions, box {atoms.cell.lengths()[0]:.2f} Å, density {density:.2f} g/cm^3, "
          f"{args.temperature:.0f} K")

    t0 = time.time()
    atoms.set_constraint(FixCom())
    langevin = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=args.temperature, friction=0.02 / units.fs,
                        fixcm=False, rng=np.random.RandomState(0))
    langevin.run(args.steps)
    print(f"Langevin: {args.steps} steps in {time.time() - t0:.0f} s, T = {atoms.get_temperature():.0f} K")

    frames, energies, charges = [], [], []
    nve = VelocityVerlet(atoms, timestep=1.0 * units.fs)

    def record():
        energies.append(atoms.get_total_energy())
        charges.append(atoms.get_charges().sum())
        frames.append(atoms.copy())

    nve.attach(record, interval=5)
    t0 = time.time()
    nve.run(args.steps)
    energies = np.array(energies) / len(atoms)
    t_ps = np.arange(len(energies)) * 5 * 1e-3
    drift = np.polyfit(t_ps, energies, 1)[0]
    print(f"NVE: {args.steps} steps in {time.time() - t0:.0f} s; energy drift {drift * 1000:.3f} meV/atom/ps, "
          f"max |E - E0| {np.abs(energies - energies[0]).max() * 1000:.3f} meV/atom, "
          f"max |sum q - 0| {np.abs(charges).max():.1e} e, neighbour-list builds {atoms.calc.n_neighbor_builds}")

    closest = min(get_distances(f.positions, cell=f.cell, pbc=f.pbc)[1][np.triu_indices(len(f), 1)].min() for f in frames)
    if closest < 1.5:
        print(f"WARNING: two ions came {closest:.2f} Å close: the model has left its training domain (a hole in "
              "the learned energy). Train on data of the melt before trusting these results.")
    r_max = 0.5 * min(atoms.cell.lengths())
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    numbers = atoms.get_atomic_numbers()
    for z1, z2, label in ((11, 17, "Na-Cl"), (11, 11, "Na-Na"), (17, 17, "Cl-Cl")):
        r, g = rdf(frames, numbers, z1, z2, r_max)
        ax.plot(r, g, label=label)
        print(f"{label}: first peak at {r[np.argmax(g)]:.2f} Å (g = {g.max():.2f})")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title(f"molten NaCl, {args.temperature:.0f} K, 4G model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output / "rdf.png")
    print(f"plot: {output / 'rdf.png'}")


if __name__ == "__main__":
    main()
