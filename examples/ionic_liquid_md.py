"""A small ionic-liquid-like box with per-ion fragment charges: relaxation, Langevin, NVE, energy drift.

Usage::

    python examples/ionic_liquid_md.py [--model PATH] [--pairs 4] [--steps 600] [--ion-charge 0.58]

Default model: the shipped ``hybridpot/data/molten_nacl_4G.pt`` (GFN1-xTB, NaCl clusters + melt;
``examples/train_molten_nacl.py``). The default run (16 atoms, FIRE, 600 + 600 steps of 1 fs)
takes about a minute on one CPU core.

What it is
----------
A toy ionic liquid made of molecular ions the model knows: linear [Na-Cl-Na] cations (the
relaxed Na2Cl+ cluster of the shipped GFN1-xTB data) and Cl anions, ``--pairs`` ion pairs on a
rock-salt arrangement of ion sites in a periodic cubic box at the density of molten NaCl
(``--density`` 1.55 g/cm^3, or ``--spacing``; ``--no-pbc``: a finite droplet). Each ion is a
**fragment** with a fixed charge: ``atoms.info["fragments"]`` lists the atoms of each ion and
``atoms.info["fragment_charges"]`` is +q for each cation and -q for each anion. Charge
equilibration then distributes charge only *within* each ion (one Lagrange multiplier per
fragment), so no charge flows between ions, as one assumes for a classical ionic-liquid force
field; electrostatics between ions use Ewald sums with Gaussian charges. The script relaxes the
start with FIRE (``--relax-steps``), runs Langevin dynamics (``--temperature``, default 300 K), then
NVE, and prints the temperature, the NVE energy drift (meV/atom/ps), the largest |E - E0|, the
largest deviation of any ion's charge from its target, the number of neighbour-list rebuilds and
the closest contacts.

Ion charge: ``--ion-charge`` defaults to 0.58 e, the charge transfer per NaCl unit of the
training data (GFN1-xTB Mulliken charges in the melt: Na +0.58, Cl -0.58), in the spirit of the
scaled ionic charges (+-0.8) of ionic-liquid force fields. With integer charges +-1 a Cl carries
-1 e, a charge the model never saw next to a Na (the data's most negative Cl in a condensed
environment is about -0.6 e); measured with the round-0 model: a FIRE relaxation then fell into a hole of the learned
energy (two atoms of different ions 0.82 Å apart), and without relaxation Langevin at 300 K
collapsed a cation (Na-Cl 0.64 Å) after 280 steps. ``--wall R`` adds a repulsive wall
``k (R - r)^2`` (k = 50 eV/Å^2) below R Å; with ``--ion-charge 1 --wall 1.6`` the run survives
but keeps falling against the wall (1.46 Å contacts; 1215 K at the end of the 300 K Langevin run,
2150 K mean in NVE): integer charges are outside this model's domain. The run stops with a
message when two atoms come closer than 1.0 Å.

What it is not
--------------
* Not a real ionic liquid ([EMIM][BF4] etc.): the model only knows Na and Cl. The molecular
  cations are held together only by the fragment assignment and the learned Na-Cl bonding; the
  assignment is fixed at the start (no topology update if a Cl moves to another cation).
* The energy drift measures integration quality and the consistency of forces with the energy
  (they are exact gradients, including through the constrained charges), not model accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from ase import Atoms, units
from ase.constraints import FixCom
from ase.geometry import get_distances
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE
from torch import nn

import hybridpot as hp
from hybridpot.data import molten_nacl_model_path



def progress(dynamics, steps: int, desc: str):
    """A tqdm bar (MD steps, with rate) that the ASE dynamics advances; close it after ``run``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, unit="step", leave=False)
    dynamics.attach(lambda: bar.update(1) if dynamics.nsteps > 0 else None, interval=1)
    return bar

def get_model(path: Optional[str]):
    path = Path(path) if path else molten_nacl_model_path()
    if not path.exists():
        raise SystemExit(f"{path} not found; train one with: python examples/train_molten_nacl.py --install")
    return hp.load(path)


def spacing_for_density(density: float) -> float:
    """Ion-site spacing (Å) of the [Na2Cl]+ Cl- grid at ``density`` g/cm^3 (one NaCl unit per site)."""
    from hybridpot.reference_data.molten_salt import NACL_MOLAR_MASS

    return (NACL_MOLAR_MASS / units._Nav / density * 1e24) ** (1 / 3)


def cation_geometry() -> np.ndarray:
    """Na, Cl, Na positions (Å) of the relaxed Na2Cl+ cluster of the shipped data, centred."""
    from hybridpot.data import load_nacl_clusters

    cation = next(a for a in load_nacl_clusters() if a.info.get("source") == "relaxed"
                  and a.info.get("composition") == "Na2Cl1" and float(a.info["charge"]) == 1.0)
    pos = cation.positions[np.argsort(cation.numbers == 17, kind="stable")]  # Na, Na, Cl
    pos = pos[[0, 2, 1]]  # Na, Cl, Na
    return pos - pos[1]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def build_box(n_pairs: int, spacing: float, rng: np.random.Generator, pbc: bool = True, ion_charge: float = 1.0) -> Atoms:
    """``n_pairs`` [Na2Cl]+ Cl- pairs on alternating sites of a cubic grid; fragments in ``info``.

    Parameters
    ----------
    n_pairs : int
        Number of ion pairs; 2 * n_pairs must be a perfect cube of an even number (4, 32, 108, ...).
    spacing : float
        Distance between neighbouring ion sites (Å).
    ion_charge : float
        Charge of each cation (e); each anion gets the opposite.
    """
    n_side = round((2 * n_pairs) ** (1 / 3))
    if n_side**3 != 2 * n_pairs or n_side % 2:
        raise ValueError(f"2 * pairs must be the cube of an even number (pairs = 4, 32, 108, ...), got {n_pairs}")
    cation = cation_geometry()
    symbols, positions, fragments, charges = [], [], [], []
    for idx in np.ndindex(n_side, n_side, n_side):
        site = spacing * (np.array(idx) + 0.5)
        start = len(symbols)
        if sum(idx) % 2 == 0:
            symbols += ["Na", "Cl", "Na"]
            positions += list(site + cation @ random_rotation(rng).T)
            fragments.append([start, start + 1, start + 2])
            charges.append(ion_charge)
        else:
            symbols.append("Cl")
            positions.append(site)
            fragments.append([start])
            charges.append(-ion_charge)
    atoms = Atoms(symbols, positions=positions, cell=[spacing * n_side] * 3, pbc=pbc)
    atoms.info["charge"] = 0.0
    atoms.info["fragments"] = fragments
    atoms.info["fragment_charges"] = charges
    return atoms


def ion_charge_error(atoms: Atoms) -> float:
    """Largest |sum of charges of an ion - its target charge| (e)."""
    q = atoms.get_charges()
    return max(abs(q[f].sum() - qf) for f, qf in zip(atoms.info["fragments"], atoms.info["fragment_charges"]))


def closest_contacts(atoms: Atoms):
    """Shortest distance between any two atoms, and between atoms of different ions (Å)."""
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    ion = np.empty(len(atoms), dtype=int)
    for k, f in enumerate(atoms.info["fragments"]):
        ion[f] = k
    off = ~np.eye(len(atoms), dtype=bool)
    return d[off].min(), d[ion[:, None] != ion[None, :]].min()


class CoreWall(nn.Module):
    """The model's short-range term plus a repulsive wall below ``r_wall`` (Å):
    ``sum_{i<j} k (r_wall - r_ij)^2`` for ``r_ij < r_wall``, zero (with zero slope) beyond, eV.

    The training data has no pair closer than 1.7 Å, and below that the learned energy can turn
    attractive (a hole MD falls into). A wall at 1.6 Å leaves every structure of the training range
    unchanged and only keeps trajectories out of the unlearned region.
    """

    def __init__(self, short_range: nn.Module, r_wall: float = 1.6, k: float = 50.0):
        super().__init__()
        self.inner, self.r_wall, self.k = short_range, float(r_wall), float(k)
        self.cutoff = max(float(short_range.cutoff), self.r_wall)

    def forward(self, system, graph, charges=None):
        energies = self.inner(system, graph, charges)
        g = graph.within(self.r_wall)
        pair = self.k * torch.clamp(self.r_wall - g.distances, min=0.0) ** 2
        return energies + torch.zeros_like(energies).index_add(0, g.i, 0.5 * pair.to(energies.dtype))


class Collapse(RuntimeError):
    """Two atoms came closer than :data:`COLLAPSE_DISTANCE`."""


#: closest approach (Å) at which the run is stopped: far below any Na-Cl, Na-Na or Cl-Cl distance
#: of the training data (>= 1.7 Å), i.e. the trajectory has fallen into a hole of the learned energy
COLLAPSE_DISTANCE = 1.0


def check_contacts(atoms: Atoms) -> None:
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] < COLLAPSE_DISTANCE:
        ion = {a: k for k, f in enumerate(atoms.info["fragments"]) for a in f}
        where = "in the same ion" if ion[i] == ion[j] else "in different ions"
        raise Collapse(f"atoms {i} ({atoms.symbols[i]}) and {j} ({atoms.symbols[j]}), {where}, are {d[i, j]:.2f} Å apart")


def write_structure(atoms: Atoms, path: Path) -> None:
    """extxyz with the ion of each atom as per-atom arrays ``ion`` and ``ion_charge`` (extxyz cannot
    store the ragged ``info["fragments"]`` list)."""
    out = atoms.copy()
    out.calc = None
    fragments, charges = out.info.pop("fragments"), out.info.pop("fragment_charges")
    ion, ion_charge = np.empty(len(out), dtype=int), np.empty(len(out))
    for k, (members, q) in enumerate(zip(fragments, charges)):
        ion[members], ion_charge[members] = k, q
    out.new_array("ion", ion)
    out.new_array("ion_charge", ion_charge)
    out.write(path)


def report_collapse(exc: Exception, stage: str, step: int, atoms: Atoms, output: Path):
    write_structure(atoms, output / "collapsed.extxyz")
    print(f"STOPPED in {stage} at step {step}: {exc}. The model has left its training domain and fell into a "
          f"hole of the learned energy; structure in {output / 'collapsed.extxyz'}. Try --wall 1.6, a smaller "
          "--ion-charge or a lower --temperature, or train on data of this system.")
    return {"collapsed": True, "stage": stage, "step": int(step)}


def main(argv=None):
    parser = argparse.ArgumentParser(description="toy ionic liquid [Na2Cl]+ Cl- with per-ion fragment charges")
    parser.add_argument("--model", default=None, help="saved 4G model (default: the shipped molten-NaCl model)")
    parser.add_argument("--output", default="runs/ionic_liquid")
    parser.add_argument("--pairs", type=int, default=4, help="ion pairs (4, 32, ...; default 4 = 16 atoms)")
    parser.add_argument("--density", type=float, default=1.55, help="g/cm^3 (sets the ion-site spacing)")
    parser.add_argument("--spacing", type=float, default=None, help="distance between ion sites (Å; overrides --density)")
    parser.add_argument("--steps", type=int, default=600, help="Langevin steps, and as many NVE steps")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="Langevin temperature (K)")
    parser.add_argument("--relax-steps", type=int, default=300, help="FIRE steps before MD (0: none)")
    parser.add_argument("--wall", type=float, default=0.0, help="repulsive wall below this distance (Å; 0: none)")
    parser.add_argument("--no-pbc", action="store_true", help="a finite droplet instead of a periodic box")
    parser.add_argument("--ion-charge", type=float, default=0.58,
                        help="charge of each ion (e): +q cations, -q anions (default 0.58, see the docstring)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = get_model(args.model)
    spacing = args.spacing if args.spacing else spacing_for_density(args.density)
    if model.charges is None:
        raise SystemExit("this example needs a 4G model (with a charge model)")
    if args.wall > 0:
        model.short_range = CoreWall(model.short_range, r_wall=args.wall)
        print(f"repulsive wall below {args.wall} Å added to the model's short range")

    rng = np.random.default_rng(args.seed)
    atoms = build_box(args.pairs, spacing, rng, pbc=not args.no_pbc, ion_charge=args.ion_charge)
    atoms.calc = hp.HybridCalculator(model, skin=0.5)
    print(f"{args.pairs} x [Na2Cl] [Cl] ion pairs: {len(atoms)} atoms, {'periodic box' if atoms.pbc.all() else 'droplet'} "
          f"{atoms.cell.lengths()[0]:.2f} Å; fragments: {len(atoms.info['fragments'])} ions with charges +-{args.ion_charge:g} e")
    q0 = atoms.get_charges()
    print(f"start: E = {atoms.get_potential_energy():.3f} eV, QEq charge of the central Cl of a cation "
          f"{q0[1]:+.3f} e, of a Cl- {q0[3]:+.3f} e, max |ion charge - target| {ion_charge_error(atoms):.1e} e")

    if args.relax_steps > 0:
        t0 = time.time()
        opt = FIRE(atoms, logfile=None)
        opt.attach(lambda: check_contacts(atoms), interval=5)
        try:
            opt.run(fmax=0.05, steps=args.relax_steps)
        except Collapse as exc:
            return report_collapse(exc, "relaxation", opt.nsteps, atoms, output)
        print(f"FIRE relaxation: {opt.nsteps} steps in {time.time() - t0:.0f} s, E = {atoms.get_potential_energy():.3f} eV, "
              f"max force {np.abs(atoms.get_forces()).max():.3f} eV/Å")
    t0 = time.time()
    atoms.set_constraint(FixCom())
    langevin = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.temperature,
                        friction=0.02 / units.fs, fixcm=False, rng=np.random.RandomState(args.seed))
    langevin.attach(lambda: check_contacts(atoms), interval=5)
    bar = progress(langevin, args.steps, "Langevin")
    try:
        langevin.run(args.steps)
    except Collapse as exc:
        return report_collapse(exc, "Langevin", langevin.nsteps, atoms, output)
    finally:
        bar.close()
    print(f"Langevin: {args.steps} steps in {time.time() - t0:.0f} s, T = {atoms.get_temperature():.0f} K")

    energies, ion_errors, temps, min_all, min_inter = [], [], [], [], []
    nve = VelocityVerlet(atoms, timestep=args.timestep * units.fs)

    def record():
        energies.append(atoms.get_total_energy())
        ion_errors.append(ion_charge_error(atoms))
        temps.append(atoms.get_temperature())
        a, b = closest_contacts(atoms)
        min_all.append(a)
        min_inter.append(b)

    nve.attach(record, interval=1)
    record()
    nve.attach(lambda: check_contacts(atoms), interval=1)
    t0 = time.time()
    bar = progress(nve, args.steps, "NVE")
    try:
        nve.run(args.steps)
    except Collapse as exc:
        return report_collapse(exc, "NVE", nve.nsteps, atoms, output)
    finally:
        bar.close()
    e = np.array(energies) / len(atoms)
    t_ps = np.arange(len(e)) * args.timestep * 1e-3
    drift = np.polyfit(t_ps, e, 1)[0]
    print(f"NVE: {args.steps} steps in {time.time() - t0:.0f} s, mean T {np.mean(temps):.0f} K; "
          f"energy drift {drift * 1000:.3f} meV/atom/ps, max |E - E0| {np.abs(e - e[0]).max() * 1000:.3f} meV/atom")
    print(f"max |ion charge - target| along NVE: {max(ion_errors):.1e} e; "
          f"neighbour-list builds: {atoms.calc.n_neighbor_builds}")
    print(f"closest contact: {min(min_all):.2f} Å (any two atoms), {min(min_inter):.2f} Å (atoms of different ions)")
    if min(min_all) < 1.5:
        print("WARNING: two atoms came closer than 1.5 Å: the model has left its training domain; "
              "do not trust this trajectory.")
    write_structure(atoms, output / "final.extxyz")
    print(f"final structure: {output / 'final.extxyz'}")
    return {"collapsed": False, "drift_meV_per_atom_per_ps": float(drift * 1000), "max_ion_charge_error_e": float(max(ion_errors)),
            "max_abs_dE_meV_per_atom": float(np.abs(e - e[0]).max() * 1000)}


if __name__ == "__main__":
    main()
