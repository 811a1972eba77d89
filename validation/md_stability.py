"""NVE energy conservation and charge conservation of a trained 4G hybrid model.

Usage::

    python validation/md_stability.py --models runs/hybridpot_demo [--steps 10000] [--timestep 1.0]
    python validation/md_stability.py              # trains the demo's models first (about 10 min)

``--models`` is a folder with ``model_4G.pt`` as written by ``hybridpot demo`` (or
:func:`hybridpot.demo.run_demo`); without it the demo is run first (``--quick`` trains the
demo's smoke-test models, which are not accurate).

Trajectories (ASE VelocityVerlet through :class:`hybridpot.HybridCalculator`, velocities drawn
at 300 K, centre-of-mass momentum removed, starting from the relaxed clusters of the shipped
dataset):

* Na4Cl4, total charge 0;
* Na5Cl4, total charge +1 (a charged cluster);
* Na4Cl4, total charge 0, with two fragment constraints, each with charge 0: the first two Na
  and first two Cl of the structure, and the other four (atoms 0-3 and 4-7 of the shipped
  structure, which alternates Cl, Na; the split is arbitrary, the test is that the constraints hold).

Reported per trajectory: the drift, the slope of a linear fit of E_total/N against time
(meV/atom/ps), the largest |E_total - E_total(0)| (meV/atom), the range of the potential energy
(for scale), the largest |sum_i q_i - Q| along the trajectory and, with fragments, the largest
|sum_{i in f} q_i - Q_f| over fragments. Energies are the model's (not a reference); this checks
that forces are the exact gradient of the energy and that the charge constraints are exact, not
that the model is accurate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np


def get_models_dir(models: Optional[str], output: Path, quick: bool) -> Path:
    """Folder with ``model_2G.pt`` and ``model_4G.pt``: ``models`` or a fresh demo run in ``output/training``."""
    if models is not None:
        folder = Path(models)
        if not (folder / "model_4G.pt").exists():
            raise ValueError(f"{folder} has no model_4G.pt (a 'hybridpot demo' output folder is expected)")
        return folder
    from hybridpot.demo import run_demo

    folder = output / "training"
    print(f"no --models folder: training the demo models in {folder} ...")
    run_demo(folder, quick=quick, progress=False)
    return folder


class _Collapse(RuntimeError):
    pass


def run_nve(model, atoms, steps: int, timestep_fs: float, seed: int = 0, temperature_K: float = 300.0,
            fragments: Optional[Sequence[Sequence[int]]] = None,
            fragment_charges: Optional[Sequence[float]] = None, collapse_distance: float = 1.0) -> Dict[str, float]:
    """Velocity-Verlet NVE run; energy and charge conservation.

    Parameters
    ----------
    model : HybridPotential
        A model with a charge term.
    atoms : ase.Atoms
        Start geometry; ``info["charge"]`` is the total charge (e).
    steps : int
        Number of steps.
    timestep_fs : float
        Time step (fs).
    fragments, fragment_charges : optional
        Fragment constraints (atom indices per fragment, charge per fragment in e).
    collapse_distance : float
        The run stops when two atoms come closer than this (Å): the model has fallen into a hole of
        its learned energy (training data has no pair closer than 1.7 Å). The statistics then cover
        the steps before, and ``collapse`` says when and which atoms.

    Returns
    -------
    dict
        ``drift_meV_per_atom_per_ps``, ``max_abs_dE_meV_per_atom``, ``epot_range_meV_per_atom``,
        ``max_total_charge_error_e``, ``max_fragment_charge_error_e`` (nan without fragments),
        ``seconds``, ``steps`` (completed), ``requested_steps``, ``collapse`` ("" if none),
        ``closest_contact_A``, ``timestep_fs``, ``natoms``, ``T_mean_K``.
    """
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from hybridpot import HybridCalculator

    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    atoms = atoms.copy()
    atoms.calc = HybridCalculator(model, fragments=fragments, fragment_charges=fragment_charges)
    total_charge = float(atoms.info.get("charge", 0.0))
    masses = atoms.get_masses()[:, None]
    momenta = np.random.default_rng(seed).normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    frag_index = None
    if fragments is not None:
        frag_index = np.empty(len(atoms), dtype=int)
        for f, members in enumerate(fragments):
            frag_index[list(members)] = f
        frag_q = np.asarray(fragment_charges if fragment_charges is not None else np.zeros(len(fragments)), float)
    e_tot, e_pot, q_err, qf_err, temps = [], [], [], [], []

    def record():
        q = atoms.get_charges()
        e_tot.append(atoms.get_total_energy())
        e_pot.append(atoms.get_potential_energy())
        temps.append(atoms.get_temperature())
        q_err.append(abs(q.sum() - total_charge))
        if frag_index is not None:
            qf_err.append(np.abs(np.bincount(frag_index, weights=q, minlength=len(frag_q)) - frag_q).max())

    closest = []

    def check():
        d = atoms.get_all_distances()
        np.fill_diagonal(d, np.inf)
        closest.append(d.min())
        if d.min() < collapse_distance:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise _Collapse(f"atoms {i} ({atoms.symbols[i]}) and {j} ({atoms.symbols[j]}) {d.min():.2f} Å apart")

    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dyn.attach(check, interval=1)
    dyn.attach(record, interval=1)
    t0 = time.time()
    collapse = ""  # ASE calls the observers at step 0 too
    try:
        dyn.run(steps)
    except _Collapse as exc:
        collapse = f"step {dyn.nsteps} ({dyn.nsteps * timestep_fs / 1000:.2f} ps): {exc}"
        # the step that collapsed is not recorded (record runs after check)
    seconds = time.time() - t0
    n = len(atoms)
    e_tot, e_pot = np.array(e_tot) / n, np.array(e_pot) / n
    t_ps = np.arange(len(e_tot)) * timestep_fs * 1e-3
    return {
        "natoms": n,
        "steps": int(len(e_tot) - 1),
        "requested_steps": int(steps),
        "collapse": collapse,
        "closest_contact_A": float(min(closest)) if closest else float("nan"),
        "timestep_fs": float(timestep_fs),
        "drift_meV_per_atom_per_ps": float(np.polyfit(t_ps, e_tot, 1)[0] * 1000),
        "max_abs_dE_meV_per_atom": float(np.abs(e_tot - e_tot[0]).max() * 1000),
        "epot_range_meV_per_atom": float(np.ptp(e_pot) * 1000),
        "T_mean_K": float(np.mean(temps)),
        "max_total_charge_error_e": float(max(q_err)),
        "max_fragment_charge_error_e": float(max(qf_err)) if qf_err else float("nan"),
        "seconds": seconds,
    }


def start_structures():
    """Relaxed Na4Cl4 (Q = 0) and Na5Cl4 (Q = +1) from the shipped dataset."""
    from hybridpot.data import load_nacl_clusters

    images = load_nacl_clusters()

    def pick(composition, charge):
        return next(a for a in images if a.info.get("composition") == composition
                    and a.info.get("source") == "relaxed" and float(a.info.get("charge", 0)) == charge)

    return pick("Na4Cl4", 0.0), pick("Na5Cl4", 1.0)


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    head = (f"{'trajectory':34s} {'atoms':>5s} {'steps':>6s} {'dt/fs':>5s} {'T/K':>5s} {'drift':>10s} "
            f"{'max|dE|':>9s} {'Epot range':>10s} {'max|sum q-Q|':>12s} {'max|q_f-Q_f|':>12s} {'d_min/Å':>7s} {'time/s':>7s}")
    units_line = f"{'':34s} {'':>5s} {'':>6s} {'':>5s} {'':>5s} {'meV/at/ps':>10s} {'meV/atom':>9s} {'meV/atom':>10s} {'e':>12s} {'e':>12s}"
    lines = [head, units_line]
    for name, r in rows.items():
        frag = "-" if np.isnan(r["max_fragment_charge_error_e"]) else f"{r['max_fragment_charge_error_e']:.1e}"
        lines.append(f"{name:34s} {r['natoms']:5d} {r['steps']:6d} {r['timestep_fs']:5.2f} {r['T_mean_K']:5.0f} "
                     f"{r['drift_meV_per_atom_per_ps']:10.2e} {r['max_abs_dE_meV_per_atom']:9.3f} "
                     f"{r['epot_range_meV_per_atom']:10.1f} {r['max_total_charge_error_e']:12.1e} {frag:>12s} "
                     f"{r['closest_contact_A']:7.2f} {r['seconds']:7.0f}")
    for name, r in rows.items():
        if r["collapse"]:
            lines.append(f"STOPPED {name}: collapse at {r['collapse']}; statistics cover the steps before")
    return "\n".join(lines)


def main(argv=None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description="NVE energy drift and charge conservation of a 4G model")
    parser.add_argument("--models", default=None, help="folder with model_4G.pt (hybridpot demo output)")
    parser.add_argument("--output", default="md_stability", help="output folder (results.json; training)")
    parser.add_argument("--steps", type=int, default=10000, help="NVE steps per trajectory (default 10000)")
    parser.add_argument("--fragment-steps", type=int, default=None, help="steps of the fragment run (default --steps)")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs (default 1.0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="train the demo's quick models when no --models")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="run only these trajectories (0, 1, 2)")
    args = parser.parse_args(argv)
    import torch

    import hybridpot as hp

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = hp.load(get_models_dir(args.models, output, args.quick) / "model_4G.pt")
    if model.charges is None:
        raise ValueError("md_stability needs a 4G model (with a charge term)")
    na4cl4, na5cl4 = start_structures()
    numbers = na4cl4.get_atomic_numbers()
    na, cl = np.nonzero(numbers == 11)[0], np.nonzero(numbers == 17)[0]
    fragments = [[na[0], cl[0], na[1], cl[1]], [na[2], cl[2], na[3], cl[3]]]
    fragments = [[int(i) for i in f] for f in fragments]
    frag_steps = args.fragment_steps if args.fragment_steps is not None else args.steps
    runs = {
        "Na4Cl4, Q=0": (na4cl4, args.steps, None, None),
        "Na5Cl4, Q=+1": (na5cl4, args.steps, None, None),
        "Na4Cl4, Q=0, 2 fragments (0, 0)": (na4cl4, frag_steps, fragments, [0.0, 0.0]),
    }
    if args.only is not None:
        runs = {name: run for k, run in enumerate(runs.items()) if k in args.only for name, run in [run]}
    rows = {}
    for name, (atoms, steps, frags, fq) in runs.items():
        rows[name] = run_nve(model, atoms, steps, args.timestep, fragments=frags, fragment_charges=fq)
        print(f"  {name}: {rows[name]['steps']} steps in {rows[name]['seconds']:.0f} s {rows[name]['collapse']}",
              flush=True)
        with open(output / "results.json", "w") as fh:  # after each trajectory
            json.dump({"rows": rows, "fragments": fragments}, fh, indent=2)
    table = format_table(rows)
    print(f"NVE (VelocityVerlet, {args.timestep} fs, start 300 K), 4G model, float64")
    print(table)
    with open(output / "results.json", "w") as fh:
        json.dump({"rows": rows, "table": table, "fragments": fragments}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
