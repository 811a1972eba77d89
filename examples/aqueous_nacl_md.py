"""Aqueous NaCl (1 NaCl + 32 H2O, periodic) with the shipped 4G model: MD, ion-water RDFs, Na-Cl PMF.

Usage::

    python examples/aqueous_nacl_md.py [--model PATH] [--langevin-ps 0.5] [--nve-ps 1] [--pmf-ps 0.6]
        [--check-xtb 4] [--output runs/aqueous_nacl_md]

Default model: ``hybridpot/data/aqueous_nacl_4G.pt`` (``examples/train_aqueous_nacl.py``, GFN1-xTB
data of ``hybridpot/data/aqueous_nacl.extxyz.gz``). What it does:

1. Starts from the last frame of the shipped GFN1-xTB MD of the separated pair (98 atoms,
   1.04 g/cm^3, Na-Cl 5.7 Å), runs Langevin MD at 300 K
   (``--langevin-ps``, friction 0.05/fs) and then NVE (``--nve-ps``), both with ``--timestep``
   (default 0.5 fs; real hydrogen masses). Prints the NVE energy drift
   (:func:`hybridpot.analysis.energy_drift`), the largest |sum of charges| (total charge 0, no
   fragment constraints) and the mean ion charges.
2. RDFs of the NVE trajectory (Na-O, Cl-O, Cl-H, O-O; :mod:`hybridpot.analysis`), first peaks and
   coordination numbers, next to (a) the same RDFs of the GFN1-xTB Langevin MD frames of the shipped
   training data (the reference method's own MD of the same box, 300-400 K, short) and (b)
   experiment: Ohtaki & Radnai, Chem. Rev. 93, 1157 (1993) (Na-O 2.40-2.50 Å, CN ~6; Cl-O
   3.10-3.20 Å, CN ~6) and, for O-O, Skinner et al., J. Chem. Phys. 138, 074506 (2013) (2.80 Å,
   g = 2.57). Plot: ``rdf.png``.
3. ``--check-xtb N`` frames of the model's own NVE trajectory recomputed with GFN1-xTB (tblite, 300 K
   electronic temperature, as the data): energy offset and spread, force and charge RMSE.
4. The Na-Cl potential of mean force from constrained-distance MD (``--pmf-ps`` per distance at
   ``PMF_DISTANCES``, Langevin 300 K, ``--timestep``, Na-Cl held fixed by ``ase.constraints.FixBondLengths``):
   the mean force along the Na-Cl axis ``f(r) = <(F_Cl - F_Na) . r_hat> / 2`` (model forces without
   the constraint force; the pair's centre of mass is free, so its mean force vanishes and any
   split between the two ions gives the same mean), integrated from the largest distance:
   ``W(r) = -int_{r_max}^r f dr`` is the PMF (``g(r) ~ exp(-W/kT)``), and
   ``A(r) = W(r) - 2 k_B T ln r`` the free energy of the distance itself (the ``r^2`` Jacobian). Each
   distance starts from the box nearest in Na-Cl distance (the end of the NVE run, or the last
   frame of either GFN1-xTB chain) with the distance set by
   :func:`hybridpot.reference_data.aqueous_nacl.with_pair_distance` (the Cl changes places with a
   water at that distance from the Na, or slides along the axis for small changes). The
   box (10 Å) limits the distances to L/2 = 5 Å; errors are block averages (4 blocks) propagated
   through the trapezoid rule. Plot: ``pmf.png``.

Measured with the shipped model (examples/README.md): ~44 ms CPU per MD step (one thread), so the
defaults take about 4 minutes. The shipped model is NOT yet fit for production MD: its waters stay
intact for about 4 ps at 300 K (1 ps Langevin + 2.97 ps NVE), then they break (an H shared by two O,
Na bound to an O at 1.7-1.8 Å); energy is conserved through it (the 10 ps NVE run, ``--nve-ps 10``:
drift -0.08 meV/atom/ps). When waters break, the RDFs and the GFN1-xTB check are also printed for
the NVE frames before the first broken water (``intact_prefix``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import Atoms, units
from ase.constraints import FixBondLengths
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ase
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

import hybridpot as hp
from hybridpot.analysis import energy_drift, first_shell, radial_distribution
from hybridpot.data import aqueous_nacl_model_path, load_aqueous_nacl
from hybridpot.reference_data.aqueous_nacl import (ELECTRONIC_TEMPERATURE, METHOD, PMF_DISTANCES, na_cl_distance,
                                                   with_pair_distance)

#: (a, b, label) of the RDFs, with the experimental first peak (Å) and coordination number where cited
RDF_PAIRS = ((11, 8, "Na-O"), (17, 8, "Cl-O"), (17, 1, "Cl-H"), (8, 8, "O-O"))
EXPERIMENT = {
    "Na-O": "2.40-2.50 Å, CN ~6 (Ohtaki & Radnai 1993; CN 4-8 across studies)",
    "Cl-O": "3.10-3.20 Å, CN ~6 (Ohtaki & Radnai 1993)",
    "O-O": "2.80 Å, g = 2.57 (Skinner et al. 2013, pure water)",
}


def get_model(path: Optional[str]):
    path = Path(path) if path else aqueous_nacl_model_path()
    if not path.exists():
        raise SystemExit(f"{path} not found; train one with: python examples/train_aqueous_nacl.py --install")
    return hp.load(path), path


def starting_box(na_cl: float = 5.0) -> Atoms:
    """The last frame of the shipped GFN1-xTB chain whose pair started at ``na_cl`` Å (2.7 or 5.0).

    A liquid-like start inside the training data; a random-insertion box relaxed with a model can
    fall into regions the data never show (the round-0 model collapsed H-H pairs from such starts).
    """
    frames = [a for a in load_aqueous_nacl(include_model_md=False)
              if str(a.info["source"]).startswith(f"xtb md d0={na_cl:.1f} seg1")]
    atoms = Atoms(frames[-1].numbers, positions=frames[-1].positions, cell=frames[-1].cell, pbc=True)
    atoms.info["charge"] = 0.0
    return atoms


def run_md(atoms: Atoms, temperature: float, langevin_steps: int, nve_steps: int, timestep: float, seed: int,
           record_every: int = 20) -> Dict:
    """Langevin then NVE (``timestep`` fs) in place; NVE frames every ``record_every`` steps with E_total, charges."""
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    langevin = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.05 / units.fs,
                        fixcm=False, rng=np.random.RandomState(seed))
    t0 = time.process_time()
    collapse = None
    try:
        langevin.run(langevin_steps)
    except ValueError as err:  # two atoms closer than 0.1 Å: the model left its domain
        collapse = f"Langevin step {langevin.nsteps}: {err}"
    t_langevin = time.process_time() - t0
    frames, energies, charges, temperatures, times = [], [], [], [], []
    nve = VelocityVerlet(atoms, timestep * units.fs)

    def record():
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())
        charges.append(atoms.get_charges())
        times.append(nve.nsteps * timestep * 1e-3)
        frame = Atoms(atoms.numbers, positions=atoms.get_positions(wrap=True), cell=atoms.cell, pbc=True)
        frames.append(frame)

    nve.attach(record, interval=record_every)
    t0 = time.process_time()
    if collapse is None:
        try:
            nve.run(nve_steps)
        except ValueError as err:
            collapse = f"NVE step {nve.nsteps}: {err}"
    if collapse:
        print(f"COLLAPSE ({collapse}); analysing the {len(frames)} NVE frames before it")
    return {"collapse": collapse, "steps_run": max(1, langevin.nsteps + nve.nsteps), "frames": frames, "energies": np.array(energies), "charges": np.array(charges), "times_ps": np.array(times),
            "temperatures": np.array(temperatures), "cpu_langevin_s": t_langevin, "cpu_nve_s": time.process_time() - t0}


def broken_waters(atoms: Atoms, bond: float = 1.25) -> int:
    """Number of H atoms without exactly one O within ``bond`` Å (0 when all waters are intact)."""
    hydrogens, oxygens = np.nonzero(atoms.numbers == 1)[0], np.nonzero(atoms.numbers == 8)[0]
    from ase.geometry import get_distances

    _, d = get_distances(atoms.positions[hydrogens], atoms.positions[oxygens], cell=atoms.cell, pbc=True)
    return int(np.sum((d < bond).sum(axis=1) != 1))


def intact_prefix(frames: List[Atoms]) -> List[Atoms]:
    """The frames before the first one with a broken water (:func:`broken_waters`), all if none breaks."""
    for k, atoms in enumerate(frames):
        if broken_waters(atoms):
            return frames[:k]
    return list(frames)


def shells(frames: List[Atoms], r_max: float, n_bins: int = 100) -> Dict[str, Dict]:
    """RDFs and first shells of ``RDF_PAIRS`` over ``frames``."""
    out = {}
    volume = frames[0].get_volume()
    for a, b, label in RDF_PAIRS:
        r, g = radial_distribution(frames, a, b, r_max, n_bins)
        n_b = int(np.sum(frames[0].numbers == b)) - (1 if a == b else 0)
        try:
            shell = first_shell(r, g, n_b / volume)
        except ValueError as err:  # too few frames for a shell
            shell = None
            print(f"  {label}: no first shell ({err})")
        out[label] = {"r": r, "g": g, "shell": shell}
    return out


def check_against_reference(model, frames: List[Atoms], n_frames: int) -> Dict:
    """GFN1-xTB (300 K electronic temperature, as the training data) on ``n_frames`` frames of the
    model's own trajectory: energy offset/spread (meV/atom), force and charge RMSE."""
    from hybridpot.reference_data.nacl_clusters import compute_reference

    picks = [frames[k] for k in np.linspace(0, len(frames) - 1, n_frames).astype(int)]
    de, df, dq, f_ref = [], [], [], []
    for atoms in picks:
        atoms = atoms.copy()
        atoms.info["charge"] = 0.0
        ref = compute_reference(atoms, method=METHOD, electronic_temperature=ELECTRONIC_TEMPERATURE)
        out = model(hp.AtomicSystem.from_ase(atoms), compute_forces=True)
        de.append((float(out["energy"][0]) - ref.get_potential_energy()) / len(atoms))
        df.append(out["forces"].detach().numpy() - ref.get_forces())
        dq.append(out["charges"].detach().numpy() - ref.get_charges())
        f_ref.append(ref.get_forces())
    de = np.array(de)
    row = {"frames": n_frames, "energy_offset_meV_per_atom": 1000 * float(de.mean()),
           "energy_spread_meV_per_atom": 1000 * float(de.std()),
           "forces_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(np.concatenate(df) ** 2))),
           "reference_forces_rms_meV_per_A": 1000 * float(np.sqrt(np.mean(np.concatenate(f_ref) ** 2))),
           "charges_rmse_me": 1000 * float(np.sqrt(np.mean(np.concatenate(dq) ** 2)))}
    print(f"  GFN1-xTB on {n_frames} frames of the model's NVE trajectory: energy offset "
          f"{row['energy_offset_meV_per_atom']:+.2f} meV/atom (spread {row['energy_spread_meV_per_atom']:.2f}), "
          f"force RMSE {row['forces_rmse_meV_per_A']:.0f} meV/Å (reference RMS {row['reference_forces_rms_meV_per_A']:.0f}), "
          f"charge RMSE {row['charges_rmse_me']:.1f} me")
    return row


def pair_mean_force(atoms: Atoms) -> float:
    """Force along the Na->Cl axis, (F_Cl - F_Na) . r_hat / 2 (eV/Å), from the model forces alone."""
    forces = atoms.get_forces(apply_constraint=False)
    vector = atoms.get_distance(0, 1, mic=True, vector=True)
    r_hat = vector / np.linalg.norm(vector)
    return float(0.5 * (forces[1] - forces[0]) @ r_hat)


def potential_of_mean_force(model, starts: List[Atoms], distances, steps: int, equilibration: int, seed: int,
                            temperature: float = 300.0, n_blocks: int = 4, timestep: float = 0.5) -> Dict:
    """Constrained-distance Langevin MD (1 fs) at each Na-Cl distance, each started from the box of
    ``starts`` nearest in Na-Cl distance; mean force, W(r), A(r). A distance where the model
    collapses keeps the samples taken before (left out below ``2 n_blocks`` samples)."""
    mean, error, held, kept, collapsed = [], [], [], [], []
    t0 = time.process_time()
    for k, distance in enumerate(distances):
        start = min(starts, key=lambda a: abs(na_cl_distance(a) - distance))
        atoms = with_pair_distance(start, distance)
        atoms.calc = hp.HybridCalculator(model, skin=0.5)
        atoms.set_constraint(FixBondLengths([(0, 1)]))
        thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed + k))
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.05 / units.fs, fixcm=False,
                       rng=np.random.RandomState(seed + k))
        samples = []
        try:
            dyn.run(equilibration)
            dyn.attach(lambda: samples.append(pair_mean_force(atoms)), interval=2)
            dyn.run(steps)
        except ValueError as err:  # the model collapsed: keep what was sampled before
            print(f"  r = {distance:.2f} Å: COLLAPSE at step {dyn.nsteps} ({err})")
            collapsed.append(float(distance))
        samples = np.array(samples[1:])
        if len(samples) < 2 * n_blocks:
            print(f"  r = {distance:.2f} Å: too few samples ({len(samples)}), left out")
            continue
        kept.append(float(distance))
        blocks = np.array([b.mean() for b in np.array_split(samples, n_blocks)])
        mean.append(samples.mean())
        error.append(blocks.std(ddof=1) / np.sqrt(n_blocks))
        held.append(na_cl_distance(atoms))
        print(f"  r = {distance:.2f} Å (held {held[-1]:.3f}): mean force {mean[-1]:+.3f} +- {error[-1]:.3f} eV/Å "
              f"({len(samples)} samples)", flush=True)
    if len(kept) < 2:
        return {"r": np.array(kept), "held": held, "collapsed": collapsed, "cpu_s": time.process_time() - t0}
    pmf = integrate_mean_force(kept, mean, error, temperature)
    pmf.update(held=held, collapsed=collapsed, cpu_s=time.process_time() - t0)
    return pmf


def integrate_mean_force(distances, mean_force, mean_force_err, temperature: float) -> Dict:
    """PMF from mean forces (eV/Å) at increasing distances (Å), trapezoid rule, zero at the largest.

    Returns ``W(r) = -int_{r_max}^r f dr'`` (eV), its error from independent ``mean_force_err``, and
    ``A(r) = W(r) - 2 k_B T ln r``, shifted to zero at the largest distance (eV).
    """
    r, f, sf = np.array(distances, dtype=float), np.array(mean_force, dtype=float), np.array(mean_force_err, dtype=float)
    w = np.zeros_like(r)
    var = np.zeros_like(r)
    for i in range(len(r) - 2, -1, -1):
        h = r[i + 1] - r[i]
        w[i] = w[i + 1] + 0.5 * h * (f[i] + f[i + 1])
        var[i] = var[i + 1] + (0.5 * h) ** 2 * (sf[i] ** 2 + sf[i + 1] ** 2)
    a = w - 2.0 * units.kB * temperature * np.log(r)
    a -= a[-1]
    return {"r": r, "mean_force": f, "mean_force_err": sf, "W": w, "W_err": np.sqrt(var), "A": a}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="saved model (default: the shipped aqueous-NaCl 4G model)")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (Langevin and NVE)")
    parser.add_argument("--langevin-ps", type=float, default=0.5)
    parser.add_argument("--nve-ps", type=float, default=1.0, help="NVE length (10 for the drift run of the README)")
    parser.add_argument("--pmf-ps", type=float, default=0.6, help="production per PMF distance (0: no PMF)")
    parser.add_argument("--pmf-equilibration-ps", type=float, default=0.2)
    parser.add_argument("--check-xtb", type=int, default=4, metavar="N",
                        help="recompute N frames of the NVE trajectory with GFN1-xTB (needs tblite; 0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/aqueous_nacl_md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model, model_path = get_model(args.model)

    atoms = starting_box(5.0)
    atoms.calc = hp.HybridCalculator(model, skin=0.5)
    langevin_steps = int(round(args.langevin_ps * 1000 / args.timestep))
    nve_steps = int(round(args.nve_ps * 1000 / args.timestep))
    print(f"model {model_path}; {len(atoms)} atoms (1 NaCl + 32 H2O), box {atoms.cell.lengths()[0]:.2f} Å, "
          f"{args.temperature:.0f} K; {langevin_steps} Langevin + {nve_steps} NVE steps of {args.timestep} fs")
    run = run_md(atoms, args.temperature, langevin_steps, nve_steps, args.timestep, args.seed)
    n_steps = langevin_steps + nve_steps
    if len(run["frames"]) < 2:
        print("no NVE frames to analyse")
        return {"collapse": run["collapse"], "nve_frames": len(run["frames"])}
    drift = energy_drift(run["times_ps"], run["energies"], len(atoms))
    e = run["energies"] / len(atoms)
    q = run["charges"]
    numbers = atoms.numbers
    d_pair = np.array([na_cl_distance(f) for f in run["frames"]])
    results = {"model": str(model_path), "steps": n_steps, "collapse": run["collapse"], "nve_frames": len(run["frames"]), "timestep_fs": args.timestep,
               "cpu_ms_per_step": 1000 * (run["cpu_langevin_s"] + run["cpu_nve_s"]) / run["steps_run"],
               "nve_ps": args.nve_ps, "nve_mean_T_K": float(run["temperatures"].mean()),
               "drift_meV_per_atom_per_ps": drift, "max_abs_E_minus_E0_meV_per_atom": 1000 * float(np.abs(e - e[0]).max()),
               "max_abs_total_charge_e": float(np.abs(q.sum(axis=1)).max()),
               "mean_charge_e": {s: float(q[:, numbers == z].mean()) for s, z in (("Na", 11), ("Cl", 17), ("O", 8), ("H", 1))},
               "na_cl_distance_A": {"min": float(d_pair.min()), "mean": float(d_pair.mean()), "max": float(d_pair.max())}}
    broken = np.array([broken_waters(f) for f in run["frames"]])
    results["frames_with_broken_waters"] = int(np.sum(broken > 0))
    results["max_broken_H"] = int(broken.max())
    import ase.io

    ase.io.write(output / "nve.extxyz", run["frames"])
    print(f"water molecules: {results['frames_with_broken_waters']} of {len(broken)} NVE frames have an H without "
          f"exactly one O within 1.25 Å (at most {results['max_broken_H']} such H)")
    print(f"MD: {results['cpu_ms_per_step']:.0f} ms CPU per step; NVE {args.nve_ps} ps, mean T {results['nve_mean_T_K']:.0f} K, "
          f"energy drift {drift:+.4f} meV/atom/ps, max |E - E0| {results['max_abs_E_minus_E0_meV_per_atom']:.3f} meV/atom")
    print(f"charges: max |sum q| {results['max_abs_total_charge_e']:.1e} e; mean " +
          ", ".join(f"{s} {v:+.3f}" for s, v in results["mean_charge_e"].items()) +
          f" e; Na-Cl distance {d_pair.min():.2f}-{d_pair.max():.2f} Å (mean {d_pair.mean():.2f})")

    # RDFs: the model's NVE run against the GFN1-xTB MD frames of the training data
    r_max = 0.5 * atoms.cell.lengths().min() - 1e-6
    xtb_frames = [a for a in load_aqueous_nacl(include_model_md=False) if str(a.info.get("source", "")).startswith("xtb md")]
    data = {"4G model (NVE)": shells(run["frames"], r_max), f"GFN1-xTB MD ({len(xtb_frames)} frames)": shells(xtb_frames, r_max)}
    intact = intact_prefix(run["frames"])
    results["intact_nve_ps"] = len(intact) * (run["times_ps"][1] - run["times_ps"][0]) if len(run["times_ps"]) > 1 else 0.0
    if 50 <= len(intact) < len(run["frames"]):  # the waters broke: the part before, on its own
        print(f"the first {len(intact)} NVE frames ({results['intact_nve_ps']:.2f} ps) have every water intact")
        data = {f"4G model (NVE, first {results['intact_nve_ps']:.1f} ps)": shells(intact, r_max), **data}
    results["rdf"] = {}
    print(f"\n{'pair':6s} {'source':28s} {'r_peak Å':>9s} {'g_peak':>7s} {'r_min Å':>8s} {'CN':>6s}   experiment")
    for _, _, label in RDF_PAIRS:
        for name, table in data.items():
            s = table[label]["shell"]
            results["rdf"].setdefault(label, {})[name] = None if s is None else s.__dict__
            if s is not None:
                print(f"{label:6s} {name:28s} {s.r_peak:9.2f} {s.g_peak:7.2f} {s.r_min:8.2f} {s.coordination:6.2f}   "
                      f"{EXPERIMENT.get(label, '')}")
    fig, axes = plt.subplots(2, 2, figsize=(8, 6), dpi=110)
    for ax, (_, _, label) in zip(axes.ravel(), RDF_PAIRS):
        for (name, table), style in zip(data.items(), ("-", "--", ":")):
            ax.plot(table[label]["r"], table[label]["g"], style, label=name)
        ax.set_title(label)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"1 NaCl + 32 H2O, {args.temperature:.0f} K", fontsize=10)
    fig.tight_layout()
    fig.savefig(output / "rdf.png")

    if args.check_xtb > 0:
        results["vs_gfn1"] = check_against_reference(model, run["frames"], args.check_xtb)
        if 50 <= len(intact) < len(run["frames"]):
            print("  (frames with every water intact:)")
            results["vs_gfn1_intact"] = check_against_reference(model, intact, args.check_xtb)

    if args.pmf_ps > 0:
        print(f"\nNa-Cl potential of mean force (constrained distance, Langevin {args.temperature:.0f} K, {args.timestep} fs):")
        starts = [starting_box(2.7), starting_box(5.0)] + ([] if run["collapse"] else [atoms])
        pmf = potential_of_mean_force(model, starts, PMF_DISTANCES, int(round(args.pmf_ps * 1000 / args.timestep)),
                                      int(round(args.pmf_equilibration_ps * 1000 / args.timestep)), args.seed,
                                      args.temperature, timestep=args.timestep)
        results["pmf"] = {k: (np.asarray(v).tolist() if k != "cpu_s" else v) for k, v in pmf.items()}
        if len(pmf["r"]) < 2:
            print("  too few distances sampled for a PMF")
            args.pmf_ps = 0
    if args.pmf_ps > 0:
        print(f"  {'r Å':>5s} {'<f> eV/Å':>12s} {'W(r) eV':>14s} {'A(r) eV':>8s}")
        for k in range(len(pmf["r"])):
            print(f"  {pmf['r'][k]:5.2f} {pmf['mean_force'][k]:+7.3f}+-{pmf['mean_force_err'][k]:.3f} "
                  f"{pmf['W'][k]:+8.3f}+-{pmf['W_err'][k]:.3f} {pmf['A'][k]:+8.3f}")
        print(f"  ({pmf['cpu_s']:.0f} s CPU)")
        results["pmf"] = {k: (np.asarray(v).tolist() if k != "cpu_s" else v) for k, v in pmf.items()}
        fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
        ax.errorbar(pmf["r"], pmf["W"], yerr=pmf["W_err"], marker="o", capsize=3, label="W(r) (PMF)")
        ax.plot(pmf["r"], pmf["A"], "s--", label="A(r) = W - 2kT ln r")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("Na-Cl distance (Å)")
        ax.set_ylabel("free energy (eV)")
        ax.set_title("Na-Cl in 32 H2O, 4G model, 300 K", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(output / "pmf.png")

    with open(output / "results.json", "w") as handle:
        json.dump(results, handle, indent=1, default=float)
    print(f"\nplots: {output / 'rdf.png'}" + (f", {output / 'pmf.png'}" if args.pmf_ps > 0 else "") +
          f"; numbers: {output / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
