"""A molten NaCl film (slab, pbc True, True, False) with the shipped 4G model: Langevin MD and the
ion density profiles along z.

Usage::

    python examples/slab_density.py [--start melt|crystal] [--steps 400] [--temperature 1200] [--vacuum 24]
                                    [--output runs/slab_density]

The start (``--start melt``, default) is a 64-ion box of the model's own 1200 K melt MD at
1.56 g/cm^3 (shipped with the training data, ``hybridpot/data/README.md``) cut open along z:
periodic in x and y (12.6 Å), with ``--vacuum`` Å of vacuum between its top and the image of its
bottom. ``--start crystal`` takes a rock-salt NaCl(001) slab of ``--layers`` layers of
``--repeat`` x ``--repeat`` conventional cells instead (a = 5.64 Å; it stays crystalline over such
short runs: superheating). Langevin at ``--temperature`` (default 1200 K; NaCl melts at 1074 K)
for ``--steps`` steps of 1 fs to equilibrate the new surfaces, then as many more steps during
which the positions and QEq charges are recorded every 5 steps. The in-plane area stays fixed,
so the film is free to find its own thickness (its two surfaces are free: zero normal pressure).

Electrostatics and charge equilibration are 2D-periodic: the 3D Ewald sum of the vacuum-padded
cell with the Yeh-Berkowitz / Ballenegger-Arnold-Cerdà dipole correction
(``hybridpot/electrostatics/slab.py``); the vacuum must stay at least the real-space cutoff
(an evaporating ion would end the run with a clear error: give more vacuum).

Printed: temperatures, the film's thickness (10-90 and Gibbs 50% points of the ion density), its
central ion density against the experimental melt density at 1074 K (1.556 g/cm^3, 0.0321
ions/Å^3), the mean QEq charges in the centre and at the surfaces, and the largest total charge
along the run. Plotted: Na and Cl number densities and the charge density along z
(``density.png`` in ``--output``).
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
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ase
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mbd

    def thermalize_momenta(atoms, temperature_K, rng=None):
        _mbd(atoms, temperature_K=temperature_K, rng=rng)

import hybridpot as hp
from hybridpot.data import molten_nacl_model_path

#: experimental number density of molten NaCl at its melting point (1.556 g/cm^3), ions/Å^3
MELT_ION_DENSITY = 1.556 / (58.443 / 2.0) * 0.602214076


def nacl001_slab(layers: int, repeat: int, vacuum: float):
    """Rock-salt NaCl(001), ``layers`` layers of ``repeat x repeat`` conventional cells, centred in a
    cell with ``vacuum`` Å of vacuum along z (a, b in the xy plane, c along z)."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((repeat, repeat, (layers + 1) // 2))
    atoms = atoms[atoms.positions[:, 2] < (layers - 0.5) * 2.82]
    atoms.center(vacuum=vacuum / 2, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


def melt_film(vacuum: float):
    """The last shipped 64-ion frame of the model's 1200 K melt MD, made a slab: positions wrapped into
    the cubic box, pbc (True, True, False), c lengthened by ``vacuum`` Å, the film centred along z."""
    from hybridpot.data import load_molten_nacl

    frames = [a for a in load_molten_nacl() if a.info.get("source", "").startswith("model md 1200 K")]
    if not frames:
        raise SystemExit("no 1200 K model-MD melt frame in the shipped data; use --start crystal")
    atoms = frames[-1].copy()
    atoms.wrap()
    atoms.calc = None
    atoms.pbc = (True, True, False)
    atoms.center(vacuum=vacuum / 2, axis=2)
    return atoms


def film_profile(frames, charges, bins):
    """Number densities of Na and Cl (ions/Å^3) and the charge density (e/Å^3) on ``bins`` along z,
    relative to each frame's centre of mass (the film drifts little, but it may)."""
    area = np.linalg.norm(np.cross(frames[0].cell[0], frames[0].cell[1]))
    width = bins[1] - bins[0]
    na = np.zeros(len(bins) - 1)
    cl = np.zeros(len(bins) - 1)
    rho_q = np.zeros(len(bins) - 1)
    numbers = frames[0].numbers
    for atoms, q in zip(frames, charges):
        z = atoms.positions[:, 2] - atoms.get_center_of_mass()[2]
        na += np.histogram(z[numbers == 11], bins=bins)[0]
        cl += np.histogram(z[numbers == 17], bins=bins)[0]
        rho_q += np.histogram(z, bins=bins, weights=q)[0]
    scale = 1.0 / (len(frames) * area * width)
    return na * scale, cl * scale, rho_q * scale


def crossings(centres, density, level):
    """z where ``density`` crosses ``level`` on the outer flanks (lowest and highest), linear interpolation."""
    above = np.nonzero(density >= level)[0]
    lo, hi = above[0], above[-1]
    z_lo = np.interp(level, [density[lo - 1], density[lo]], [centres[lo - 1], centres[lo]])
    z_hi = np.interp(level, [density[hi + 1], density[hi]], [centres[hi + 1], centres[hi]])
    return z_lo, z_hi


def main(argv=None):
    parser = argparse.ArgumentParser(description="molten NaCl film (slab) MD and density profile")
    parser.add_argument("--model", default=None, help="saved model (default: the shipped molten-NaCl 4G model)")
    parser.add_argument("--steps", type=int, default=400, help="Langevin steps to equilibrate, then as many recorded (1 fs)")
    parser.add_argument("--temperature", type=float, default=1200.0)
    parser.add_argument("--start", choices=("melt", "crystal"), default="melt")
    parser.add_argument("--layers", type=int, default=4, help="--start crystal: NaCl(001) layers")
    parser.add_argument("--repeat", type=int, default=2, help="conventional cells along a and b")
    parser.add_argument("--vacuum", type=float, default=24.0, help="Å of vacuum along z")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/slab_density")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model_path = Path(args.model) if args.model else molten_nacl_model_path()
    model = hp.load(model_path)

    if args.start == "melt":
        atoms = melt_film(args.vacuum)
        what = "molten NaCl film"
    else:
        atoms = nacl001_slab(args.layers, args.repeat, args.vacuum)
        what = f"NaCl(001) film of {args.layers} layers"
    print(f"model {model_path}; {what}, {len(atoms)} ions, in-plane "
          f"{atoms.cell.lengths()[0]:.2f} Å, cell c {atoms.cell.lengths()[2]:.2f} Å (vacuum {args.vacuum:g} Å), "
          f"{args.temperature:.0f} K, {args.steps} + {args.steps} Langevin steps of 1 fs")
    atoms.calc = hp.HybridCalculator(model, skin=0.5)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    md = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=args.temperature, friction=0.02 / units.fs,
                  fixcm=False, rng=np.random.RandomState(args.seed))
    t0 = time.time()
    md.run(args.steps)
    print(f"equilibration: {args.steps} steps in {time.time() - t0:.0f} s, T = {atoms.get_temperature():.0f} K")

    frames, charges, temperatures = [], [], []

    def record():
        frames.append(atoms.copy())
        charges.append(atoms.get_charges())
        temperatures.append(atoms.get_temperature())

    md.attach(record, interval=5)
    t0 = time.time()
    md.run(args.steps)
    charges = np.array(charges)
    print(f"sampling: {args.steps} steps in {time.time() - t0:.0f} s, mean T {np.mean(temperatures):.0f} K, "
          f"{len(frames)} frames; max |sum q| {np.abs(charges.sum(axis=1)).max():.1e} e")

    half = 0.5 * atoms.cell.lengths()[2]
    bins = np.arange(-half, half + 1e-9, 0.5)
    centres = 0.5 * (bins[1:] + bins[:-1])
    na, cl, rho_q = film_profile(frames, charges, bins)
    ions = na + cl
    middle = np.abs(centres) < 2.0
    central = float(ions[middle].mean())
    z10, z90 = crossings(centres, ions, 0.1 * central), crossings(centres, ions, 0.9 * central)
    gibbs = crossings(centres, ions, 0.5 * central)
    print(f"film: central ion density {central:.4f} ions/Å^3 ({central / MELT_ION_DENSITY:.2f} x the experimental melt "
          f"at 1074 K, {MELT_ION_DENSITY:.4f}); thickness {gibbs[1] - gibbs[0]:.2f} Å (50% points), surface width "
          f"(10-90%) {z90[0] - z10[0]:.2f} Å and {z10[1] - z90[1]:.2f} Å")
    numbers = frames[0].numbers
    z_all = np.concatenate([f.positions[:, 2] - f.get_center_of_mass()[2] for f in frames])
    q_all = charges.reshape(-1)
    n_all = np.tile(numbers, len(frames))
    inner = np.abs(z_all) < 0.5 * (gibbs[1] - gibbs[0]) - 2.0
    for z, name in ((11, "Na"), (17, "Cl")):
        sel = n_all == z
        print(f"  {name} charge: {q_all[sel & inner].mean():+.3f} e inside, {q_all[sel & ~inner].mean():+.3f} e "
              "within 2 Å of the surfaces")

    fig, (ax, axq) = plt.subplots(2, 1, figsize=(6.4, 5.6), dpi=120, sharex=True)
    ax.plot(centres, na, label="Na")
    ax.plot(centres, cl, label="Cl")
    ax.plot(centres, ions, color="k", lw=0.8, label="all ions")
    ax.axhline(MELT_ION_DENSITY, color="grey", ls=":", label="experimental melt (1074 K)")
    ax.set_ylabel("number density (Å$^{-3}$)")
    ax.set_title(f"NaCl film ({args.start} start), {len(atoms)} ions, {np.mean(temperatures):.0f} K (4G model)")
    ax.legend(fontsize=8)
    axq.plot(centres, rho_q, color="C3")
    axq.axhline(0.0, color="grey", lw=0.5)
    axq.set_xlabel("z - z_centre of mass (Å)")
    axq.set_ylabel("charge density (e Å$^{-3}$)")
    span = 0.5 * (gibbs[1] - gibbs[0]) + 6.0
    axq.set_xlim(-span, span)
    fig.tight_layout()
    fig.savefig(output / "density.png")
    print(f"plot: {output / 'density.png'}")


if __name__ == "__main__":
    main()
