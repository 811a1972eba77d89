"""Molten-NaCl boxes made by MD with the shipped 4G model, and rock-salt lattices, for the QEq and
MD-step benchmarks.

Real liquids are what the matrix-free QEq has to handle (a jittered cubic lattice hides the
disorder that once made the k-space CG preconditioner indefinite). A melt of ``n = 64 k^3``
atoms is made deterministically:

1. the first 64-atom box of the shipped data set made by MD of the shipped model itself
   (``hybridpot/data/molten_nacl_model_md.extxyz.gz``, source "model md 1200 K 1.56 g/cm3"),
   equilibrated further by ``BASE_STEPS`` Langevin steps (2 fs, 1200 K, friction 0.02/fs) with
   the shipped model ``molten_nacl_4G.pt`` (dense QEq);
2. replicated ``k x k x k``, new Maxwell-Boltzmann velocities at 1200 K (one seed for the whole
   box, so the replicas move apart), and ``steps`` more Langevin steps of the replicated box
   with the shipped model (matrix-free QEq for >= 1000 atoms). The default 40 steps (80 fs) move
   every ion by ~1 Å ballistically: the exact 13 Å periodicity of the replicas is gone.

The MD uses accuracy 1e-4 for Ewald/PME and QEq and CG tolerance 1e-6 (the model's own
settings, 1e-6 / 1e-10, are used by the benchmarks themselves). Boxes are cached as extended
XYZ outside the repository, in ``$HYBRIDPOT_MELT_CACHE`` (default ``~/.cache/hybridpot/melts``),
keyed by size, steps and seed; delete the folder to regenerate.

Lattices: rock salt with the 298 K lattice constant 5.64 Å, rattled by 0.05 Å, ``n = 8 m^3`` atoms.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# this checkout's hybridpot, also when run from benchmarks/ (an editable install elsewhere would win)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE_STEPS = 250
TEMPERATURE_K = 1200.0
TIME_STEP_FS = 2.0
FRICTION_PER_FS = 0.02
MD_ACCURACY = 1e-4
MD_CG_TOL = 1e-6


def cache_dir() -> Path:
    path = Path(os.environ.get("HYBRIDPOT_MELT_CACHE", Path.home() / ".cache" / "hybridpot" / "melts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shipped_model(accuracy: float | None = None, cg_tol: float | None = None):
    """The shipped molten-NaCl 4G model, optionally with another Ewald/PME accuracy and CG tolerance."""
    import hybridpot as hp
    from hybridpot.data import molten_nacl_model_path
    from hybridpot.electrostatics import EwaldParameters

    model = hp.load(molten_nacl_model_path())
    if accuracy is not None:
        for term in (model.charges, model.electrostatics):
            old = term.params
            term.params = EwaldParameters.for_accuracy(accuracy, old.real_space_cutoff, old.interpolation_nodes)
            term.accuracy = accuracy
    if cg_tol is not None:
        model.charges.cg_tol = cg_tol
    return model


def _langevin(atoms, steps: int, seed: int, log_every: int = 0) -> None:
    import hybridpot as hp
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms.calc = hp.HybridCalculator(shipped_model(MD_ACCURACY, MD_CG_TOL))
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=rng)  # (ase 3.29: deprecated name)
    Stationary(atoms)
    dyn = Langevin(atoms, TIME_STEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                   friction=FRICTION_PER_FS / units.fs, rng=np.random.default_rng(seed + 1), fixcm=False)
    t0 = time.perf_counter()
    for step in range(steps):
        dyn.run(1)
        if log_every and (step + 1) % log_every == 0:
            print(f"  melt {len(atoms)} atoms: step {step + 1}/{steps}, T = {atoms.get_temperature():.0f} K, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    atoms.calc = None


def melt(n_atoms: int, steps: int = 40, seed: int = 0, verbose: bool = True):
    """A molten-NaCl box of ``n_atoms = 64 k^3`` atoms (module docstring), from the cache if there."""
    import ase.io

    k = round((n_atoms / 64) ** (1 / 3))
    if 64 * k**3 != n_atoms:
        raise ValueError(f"melt boxes have 64 k^3 atoms (1728, 4096, 21952, ...), not {n_atoms}")
    path = cache_dir() / f"nacl_melt_{n_atoms}_steps{steps}_seed{seed}.extxyz"
    if path.exists():
        return ase.io.read(path)
    base_path = cache_dir() / f"nacl_melt_64_base{BASE_STEPS}_seed{seed}.extxyz"
    if base_path.exists():
        base = ase.io.read(base_path)
    else:
        from hybridpot.data import molten_nacl_model_md_path

        frames = ase.io.read(molten_nacl_model_md_path(), ":")
        base = next(a for a in frames if str(a.info.get("source", "")).startswith("model md 1200 K"))
        base = base.copy()
        base.info = {"charge": 0.0}
        if verbose:
            print(f"  melt: equilibrating the 64-atom base box ({BASE_STEPS} steps)", flush=True)
        _langevin(base, BASE_STEPS, seed)
        ase.io.write(base_path, base)
    atoms = base.repeat((k, k, k))
    atoms.info = {"charge": 0.0, "source": f"shipped-model melt 1200 K, 64-atom box x {k}^3, {steps} MD steps"}
    if k > 1 and steps > 0:
        if verbose:
            print(f"  melt: {n_atoms} atoms, {steps} MD steps of the replicated box", flush=True)
        _langevin(atoms, steps, seed + 10 * k, log_every=10 if verbose else 0)
    atoms.wrap()
    ase.io.write(path, atoms)
    return atoms


def lattice(n_atoms: int, a: float = 5.64, rattle: float = 0.05, seed: int = 0):
    """Rock salt with ``n_atoms = 8 m^3`` atoms (conventional cell ``a`` Å), rattled by ``rattle`` Å."""
    from ase.build import bulk

    m = round((n_atoms / 8) ** (1 / 3))
    if 8 * m**3 != n_atoms:
        raise ValueError(f"lattices have 8 m^3 atoms (1728, 4096, 21952, 97336, ...), not {n_atoms}")
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat((m, m, m))
    atoms.positions += np.random.default_rng(seed).normal(scale=rattle, size=atoms.positions.shape)
    atoms.info = {"charge": 0.0, "source": f"rock salt a = {a} Å, rattled {rattle} Å"}
    return atoms


def system_for(kind: str, n_atoms: int, steps: int = 40):
    """``kind``: "melt" (:func:`melt`), "lattice" (:func:`lattice`) or "jittered" (the old jittered
    cubic lattice of benchmarks/short_range_scaling.py, kept for comparison with earlier tables)."""
    if kind == "melt":
        return melt(n_atoms, steps)
    if kind == "lattice":
        return lattice(n_atoms)
    if kind == "jittered":
        from short_range_scaling import liquid

        return liquid(n_atoms)
    raise ValueError(f"unknown system kind {kind!r}; choose melt, lattice or jittered")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="make (and cache) the benchmark melts")
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.sizes:
        t0 = time.perf_counter()
        atoms = melt(n, args.steps)
        print(f"{n} atoms: {len(atoms)} in {time.perf_counter() - t0:.0f} s -> {cache_dir()}", flush=True)
