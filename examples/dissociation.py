"""Dissociation curves with a 4G model: NaCl and a charged pair, with and without fragment charges.

Usage::

    hybridpot demo                          # trains runs/hybridpot_demo/model_4G.pt (a few minutes)
    python examples/dissociation.py [--model runs/hybridpot_demo/model_4G.pt] [--output runs/dissociation]

Without a model file the script trains a small 4G model on the shipped NaCl data first
(the demo's recipe with fewer epochs, about two minutes on a laptop CPU).

Curves (energies relative to each curve's value at the largest distance, charges of Na):

* neutral NaCl, QEq over the whole molecule: the charges stay fractional as the atoms separate
  (QEq's known fractional-charge limit: chi_Na + J q != chi_Cl - J q at infinity);
* neutral NaCl with fragment constraints (each atom its own fragment with charge 0): the
  charges are zero at every distance, so the separated atoms are neutral;
* NaCl with total charge +1, unconstrained, and with fragments Na(+1) + Cl(0);
* the ion pair Na+ Cl- (fragments +1 and -1): the energy follows -k_e / r at long range.

Reference GFN1-xTB points for neutral NaCl come from the shipped dataset. Fragment charges
are given through ``atoms.info["fragments"]`` / ``atoms.info["fragment_charges"]``, which
``HybridCalculator`` and ``AtomicSystem.from_ase`` read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

import hybridpot as hp
from hybridpot.data import load_nacl_clusters

K_E = Hartree * Bohr  # Coulomb constant in eV·Å/e^2 (ase.units)


def train_small_model(output: Path):
    from hybridpot.demo import FULL, run_demo

    from dataclasses import replace

    settings = replace(FULL, epochs_2g=1, charge_epochs_4g=20, epochs_4g=60, md_steps=10)
    run_demo(output / "training", settings=settings)
    return hp.load(output / "training" / "model_4G.pt")


def curve(model, r, charge=0.0, fragments=None, fragment_charges=None):
    energies, q_na = [], []
    for x in r:
        atoms = Atoms("NaCl", positions=[[0, 0, 0], [x, 0, 0]])
        atoms.info["charge"] = charge
        if fragments is not None:
            atoms.info["fragments"] = fragments
            atoms.info["fragment_charges"] = fragment_charges
        atoms.calc = hp.HybridCalculator(model)
        energies.append(atoms.get_potential_energy())
        q_na.append(atoms.get_charges()[0])
    return np.array(energies), np.array(q_na)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/hybridpot_demo/model_4G.pt")
    parser.add_argument("--output", default="runs/dissociation")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if Path(args.model).exists():
        model = hp.load(args.model)
    else:
        print(f"{args.model} not found: training a small 4G model first")
        model = train_small_model(output)
    if model.charges is None:
        raise SystemExit("this example needs a 4G model (with a charge model)")

    r = np.linspace(1.9, 16.0, 120)
    cases = {
        "NaCl, QEq over the molecule": dict(charge=0.0),
        "NaCl, fragments Na(0) + Cl(0)": dict(charge=0.0, fragments=[[0], [1]], fragment_charges=[0.0, 0.0]),
        "NaCl+, QEq over the molecule": dict(charge=1.0),
        "NaCl+, fragments Na(+1) + Cl(0)": dict(charge=1.0, fragments=[[0], [1]], fragment_charges=[1.0, 0.0]),
        "Na+ Cl-, fragments (+1) + (-1)": dict(charge=0.0, fragments=[[0], [1]], fragment_charges=[1.0, -1.0]),
    }
    results = {name: curve(model, r, **kw) for name, kw in cases.items()}

    scan = [a for a in load_nacl_clusters() if a.info["source"] == "dimer_scan"]  # NaCl (not Na2, Cl2)
    scan = sorted(scan, key=lambda a: a.get_distance(0, 1))
    r_ref = np.array([a.get_distance(0, 1) for a in scan])
    e_ref = np.array([a.get_potential_energy() for a in scan])
    e_model_at_10 = np.interp(r_ref[-1], r, results["NaCl, QEq over the molecule"][0])

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 8), dpi=120, sharex=True)
    for name, (e, q) in results.items():
        line, = ax1.plot(r, e - e[-1], label=name)
        ax2.plot(r, q, color=line.get_color(), label=name)
    ax1.plot(r_ref, e_ref - e_ref[-1] + (e_model_at_10 - results["NaCl, QEq over the molecule"][0][-1]), "ko", ms=3,
             label="reference NaCl (GFN1-xTB), aligned at 10 Å")
    ax1.plot(r[r > 4], -K_E / r[r > 4] + K_E / r[-1], "k:", lw=1, label="-k_e/r (ion pair)")
    ax1.axvline(model.short_range.cutoff, color="0.6", lw=0.8, ls=":")
    ax1.set_ylabel("E(r) - E(16 Å) (eV)")
    ax1.set_ylim(-6, 3)
    ax1.legend(fontsize=7)
    ax2.set_ylabel("charge of Na (e)")
    ax2.set_xlabel("Na-Cl distance (Å)")
    fig.tight_layout()
    fig.savefig(output / "dissociation.png")
    print(f"{'case':36s} {'q_Na(2.4 Å)':>12s} {'q_Na(16 Å)':>12s} {'E(16)-E(2.4) eV':>16s}")
    k = np.argmin(np.abs(r - 2.4))
    for name, (e, q) in results.items():
        print(f"{name:36s} {q[k]:12.3f} {q[-1]:12.3f} {e[-1] - e[k]:16.3f}")
    print(f"plot: {output / 'dissociation.png'}")


if __name__ == "__main__":
    main()
