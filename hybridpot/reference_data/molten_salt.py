"""Periodic molten-NaCl reference data: Tosi–Fumi sampling, GFN1-xTB labels (needs ``tblite``).

The gas-phase clusters of ``hybridpot/data/nacl_clusters.extxyz.gz`` do not teach a model the
melt. This module makes periodic structures of liquid NaCl and labels them with the same method
as the clusters (GFN1-xTB at 3000 K electronic temperature through :mod:`hybridpot.reference_data.nacl_clusters`),
so that a model trained on both describes clusters and the melt.

Geometries come from classical molecular dynamics with the Tosi–Fumi (Born–Mayer–Huggins) rigid-ion
potential, the classic model of molten alkali halides [1]_::

    phi_ij(r) = q_i q_j k_e / r + A_ij exp(-r / rho) - C_ij / r^6 - D_ij / r^8,
    A_ij = b c_ij exp((sigma_i + sigma_j) / rho)

with point charges +-1 e (Ewald sums from :class:`hybridpot.Electrostatics`) and the NaCl parameters
of [1]_ (b = 0.338e-19 J, rho = 0.317 Å, sigma_Na = 1.170 Å, sigma_Cl = 1.585 Å, Pauling factors
c_{+-} = 1, c_{++} = 1.25, c_{--} = 0.75; C and D in 1e-79 J m^6 and 1e-99 J m^8:
Na-Na 1.68 / 0.8, Na-Cl 11.2 / 13.9, Cl-Cl 116 / 233). It only *samples* geometries (Langevin MD
at several temperatures and densities); every energy, force, stress and charge in the dataset
is GFN1-xTB's.

The dataset shipped in ``hybridpot/data/molten_nacl.extxyz.gz`` was made with::

    python -m hybridpot.reference_data.molten_salt --output hybridpot/data/molten_nacl.extxyz.gz --seed 0

.. [1] F. G. Fumi and M. P. Tosi, J. Phys. Chem. Solids 25, 31 (1964); M. P. Tosi and
   F. G. Fumi, ibid. 25, 45 (1964).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.md.langevin import Langevin
try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ase
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mbd

    def thermalize_momenta(atoms, temperature_K, rng=None):
        _mbd(atoms, temperature_K=temperature_K, rng=rng)

from ..electrostatics import Electrostatics
from ..neighbors import build_graph, compute_neighbors
from ..system import AtomicSystem

__all__ = ["TosiFumi", "nacl_box", "melt_snapshots", "generate_molten_nacl_dataset", "NACL_MOLAR_MASS"]

#: g/mol of NaCl
NACL_MOLAR_MASS = 58.443

_J = 1.0 / units._e  # eV per J
_TF_B = 0.338e-19 * _J  # eV
_TF_RHO = 0.317  # Å
_TF_SIGMA = {11: 1.170, 17: 1.585}  # Å
_TF_PAULING = {(11, 11): 1.25, (11, 17): 1.0, (17, 17): 0.75}
_TF_C = {(11, 11): 1.68, (11, 17): 11.2, (17, 17): 116.0}  # 1e-79 J m^6
_TF_D = {(11, 11): 0.8, (11, 17): 13.9, (17, 17): 233.0}  # 1e-99 J m^8


def _tosi_fumi_table() -> dict:
    """(A eV, C eV Å^6, D eV Å^8) per sorted element pair."""
    table = {}
    for pair, c in _TF_PAULING.items():
        a = _TF_B * c * np.exp((_TF_SIGMA[pair[0]] + _TF_SIGMA[pair[1]]) / _TF_RHO)
        table[pair] = (a, _TF_C[pair] * 1e-79 * _J * 1e60, _TF_D[pair] * 1e-99 * _J * 1e80)
    return table


class TosiFumi(Calculator):
    """ASE calculator of the Tosi–Fumi NaCl potential (periodic, Ewald point charges +-1 e).

    Parameters
    ----------
    cutoff : float
        Real-space cutoff of the Ewald sum and of the short-range pair terms (Å); the pair
        terms are shifted to zero there.
    accuracy : float
        Ewald accuracy (see :class:`hybridpot.Electrostatics`).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, cutoff: float = 8.0, accuracy: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.cutoff = float(cutoff)
        self.electrostatics = Electrostatics(method="ewald", accuracy=accuracy, real_space_cutoff=self.cutoff)
        table = _tosi_fumi_table()
        self._params = torch.zeros(18, 18, 3, dtype=torch.float64)
        for (zi, zj), p in table.items():
            self._params[zi, zj] = self._params[zj, zi] = torch.tensor(p, dtype=torch.float64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if set(self.atoms.numbers) - {11, 17}:
            raise ValueError("TosiFumi knows Na and Cl only")
        if not self.atoms.pbc.all():
            raise ValueError("TosiFumi needs a fully periodic cell")
        system = AtomicSystem.from_ase(self.atoms)
        positions = system.positions.clone().requires_grad_(True)
        system = dataclasses.replace(system, positions=positions)  # k-space sums read system.positions
        graph = build_graph(system, compute_neighbors(system, self.cutoff), positions=positions)
        charges = torch.where(system.numbers == 11, 1.0, -1.0).to(torch.float64)
        e_coulomb = self.electrostatics(system, graph, charges).sum()
        half = graph.half()
        p = self._params[system.numbers[half.i], system.numbers[half.j]]
        r = half.distances
        def phi(x):
            return p[:, 0] * torch.exp(-x / _TF_RHO) - p[:, 1] / x**6 - p[:, 2] / x**8

        # shifted to zero at the cutoff, so that the energy is continuous in MD
        e_pair = (phi(r) - phi(torch.full_like(r, self.cutoff))).sum()
        energy = e_coulomb + e_pair
        (grad,) = torch.autograd.grad(energy, positions)
        self.results = {
            "energy": float(energy.detach()),
            "free_energy": float(energy.detach()),
            "forces": -grad.detach().numpy(),
        }


def nacl_box(n_cells: int = 2, density: float = 1.55) -> Atoms:
    """Rock-salt NaCl (``n_cells``^3 cubic cells, 8 n^3 ions) scaled to ``density`` (g/cm^3)."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(n_cells)
    n_pairs = len(atoms) // 2
    volume = n_pairs * NACL_MOLAR_MASS / units._Nav / density * 1e24  # Å^3
    atoms.set_cell(np.eye(3) * volume ** (1 / 3), scale_atoms=True)
    return atoms


def melt_snapshots(
    density: float,
    temperature: float,
    n_snapshots: int,
    rng: np.random.Generator,
    n_cells: int = 2,
    melt_steps: int = 1500,
    interval: int = 100,
    timestep: float = 2.0,
) -> List[Atoms]:
    """Snapshots of Tosi–Fumi Langevin MD of NaCl at ``density`` (g/cm^3) and ``temperature`` (K).

    The rock-salt box is melted at max(3000 K, T) for ``melt_steps`` steps, then run at
    ``temperature``; a snapshot is taken every ``interval`` steps after ``melt_steps`` more
    steps of equilibration. Time step in fs.
    """
    atoms = nacl_box(n_cells, density)
    atoms.calc = TosiFumi()
    thermalize_momenta(atoms, temperature_K=max(3000.0, temperature), rng=rng)
    dyn = Langevin(atoms, timestep * units.fs, temperature_K=max(3000.0, temperature), friction=0.02, rng=rng)
    dyn.run(melt_steps)
    dyn.set_temperature(temperature_K=temperature)
    dyn.run(melt_steps // 2)
    frames = []
    for k in range(n_snapshots):
        dyn.run(interval)
        frame = Atoms(atoms.numbers, positions=atoms.get_positions(wrap=True), cell=atoms.cell, pbc=True)
        frame.info.update(charge=0.0, source=f"tosi-fumi melt {temperature:.0f} K {density:.2f} g/cm3")
        frames.append(frame)
    return frames


def generate_molten_nacl_dataset(
    seed: int = 0,
    densities: Sequence[float] = (1.40, 1.55, 1.70),
    temperatures: Sequence[float] = (1100.0, 1600.0, 2500.0),
    snapshots_per_state: int = 14,
    crystal_snapshots: int = 12,
    n_cells: int = 2,
    progress: bool = True,
) -> List[Atoms]:
    """Periodic NaCl structures (melt at several densities and temperatures, hot crystals) with
    GFN1-xTB labels.

    Parameters
    ----------
    seed : int
        Seed of every random choice (velocities, Langevin noise).
    densities : sequence of float
        Mass densities of the melt (g/cm^3; experiment: 1.556 at 1074 K).
    temperatures : sequence of float
        Temperatures (K) of the Tosi–Fumi MD per density.
    snapshots_per_state : int
        Snapshots per (density, temperature), 200 fs apart.
    crystal_snapshots : int
        Rattled rock-salt crystals (lattice 5.5-5.9 Å, displacements 0.05-0.25 Å).
    n_cells : int
        Box edge in rock-salt cells (64 ions for 2).
    """
    from tqdm import tqdm

    from .nacl_clusters import compute_reference

    rng = np.random.default_rng(seed)
    geometries: List[Atoms] = []
    states = [(d, t) for d in densities for t in temperatures]
    for density, temperature in tqdm(states, desc="Tosi-Fumi MD", disable=not progress):
        geometries += melt_snapshots(density, temperature, snapshots_per_state, rng, n_cells=n_cells)
    for k in range(crystal_snapshots):
        a = rng.uniform(5.5, 5.9)
        crystal = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(n_cells)
        crystal.positions += rng.normal(0.0, rng.uniform(0.05, 0.25), crystal.positions.shape)
        crystal.info.update(charge=0.0, source=f"rattled crystal a={a:.3f}")
        geometries.append(crystal)
    labelled = []
    for atoms in tqdm(geometries, desc="GFN1-xTB", disable=not progress):
        labelled.append(compute_reference(atoms))
    return labelled


def model_snapshots(
    model,
    states: Sequence[Tuple[float, float]] = ((1.556, 1200.0), (1.40, 1600.0), (1.70, 2500.0), (1.556, 2000.0)),
    snapshots_per_state: int = 10,
    seed: int = 1,
    equilibration_steps: int = 300,
    interval: int = 50,
    progress: bool = True,
) -> List[Atoms]:
    """Active learning: snapshots of a trained model's own melt MD, labelled with GFN1-xTB.

    Langevin MD (1 fs steps, friction 0.02/fs) of the 64-ion box with ``model`` (a
    :class:`hybridpot.HybridPotential`) at each (density g/cm^3, temperature K) of ``states``,
    ``equilibration_steps`` first, then a snapshot every ``interval`` steps. The frames are where
    the model's dynamics goes (not where the sampler's went), so adding them to the training data
    corrects the model where MD needs it.
    """
    from tqdm import tqdm

    from ..calculator import HybridCalculator
    from .nacl_clusters import compute_reference

    rng = np.random.default_rng(seed)
    frames: List[Atoms] = []
    for density, temperature in tqdm(states, desc="model MD", disable=not progress):
        atoms = nacl_box(2, density)
        atoms.rattle(0.1, rng=rng)
        atoms.calc = HybridCalculator(model, skin=0.5)
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng)
        dyn.run(equilibration_steps)
        for _ in range(snapshots_per_state):
            dyn.run(interval)
            frame = Atoms(atoms.numbers, positions=atoms.get_positions(wrap=True), cell=atoms.cell, pbc=True)
            frame.info.update(charge=0.0, source=f"model md {temperature:.0f} K {density:.2f} g/cm3")
            frames.append(frame)
    return [compute_reference(f) for f in tqdm(frames, desc="GFN1-xTB", disable=not progress)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="molten_nacl.extxyz.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshots-per-state", type=int, default=14)
    parser.add_argument("--crystal-snapshots", type=int, default=12)
    parser.add_argument("--from-model", default=None, metavar="MODEL",
                        help="active learning: label snapshots of this model's own melt MD instead")
    args = parser.parse_args(argv)
    from .nacl_clusters import write_dataset

    if args.from_model:
        from ..model import load

        images = model_snapshots(load(args.from_model), seed=args.seed)
        write_dataset(images, args.output)
        print(f"wrote {len(images)} structures to {args.output}")
        return 0

    images = generate_molten_nacl_dataset(
        seed=args.seed, snapshots_per_state=args.snapshots_per_state, crystal_snapshots=args.crystal_snapshots
    )
    write_dataset(images, args.output)
    print(f"wrote {len(images)} structures to {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
