"""PME energy + forces: hybridpot's PME path vs torch-pme's PMECalculator, same run, same parameters.

System: jittered Na+/Cl- point charges (+-1 e) at molten-salt density (0.032 atoms/Å^3), as in
``electrostatics_scaling.py``. Both variants use the smearing, mesh spacing and interpolation
order of :class:`hybridpot.electrostatics.EwaldParameters` for ``--accuracy`` and ``--cutoff``:

* ``torchpme``: ``torchpme.PMECalculator`` (0.5.0) called as a user would (mesh rounded up to a
  power of two per axis, weights and filter recomputed on each call; autograd through its
  spreading and interpolation);
* ``hybridpot``: ``hybridpot.Electrostatics(method="pme")`` (smallest 2^a 3^b 5^c mesh with the
  same maximum spacing; flat-index separable spreading/interpolation).

Timed: energy + forces (autograd), neighbour list precomputed, median of ``--repeats`` after a
warm-up, variants interleaved. Accuracy of each variant is measured at ``--error-n`` atoms against
an Ewald sum with accuracy 1e-9: RMS potential error / mean |V| and max force error / max |F|.

Usage: python benchmarks/pme_vs_torchpme.py [--sizes 8000 27000 97336] [--accuracy 1e-4] [--dtype float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torchpme

import hybridpot as hp
from hybridpot.electrostatics import COULOMB_CONSTANT, EwaldParameters
from hybridpot.neighbors import build_graph

from _common import device_label, synchronize
from short_range_scaling import liquid


def point_charges(n: int):
    atoms = liquid(n)
    atoms.set_initial_charges([1.0 if z == 11 else -1.0 for z in atoms.numbers])
    return atoms


class TorchPME:
    """Energy of torch-pme's PMECalculator for point charges: sum_i q_i phi_i (torch-pme halves phi)."""

    def __init__(self, params: EwaldParameters, dtype):
        potential = torchpme.CoulombPotential(smearing=params.smearing, prefactor=COULOMB_CONSTANT)
        self.calculator = torchpme.PMECalculator(potential, mesh_spacing=params.mesh_spacing,
                                                 interpolation_nodes=params.interpolation_nodes).to(dtype=dtype)
        self.cutoff = params.real_space_cutoff

    def energy(self, system, neighbors, positions, charges):
        system = dataclasses.replace(system, positions=positions)
        half = build_graph(system, neighbors, positions=positions, cutoff=self.cutoff).half()
        phi = self.calculator(charges.unsqueeze(1), system.cell[0], positions, torch.stack([half.i, half.j], 1),
                              half.distances)
        return (charges * phi.squeeze(1)).sum()


class HybridPME:
    def __init__(self, accuracy: float, cutoff: float, method: str = "pme"):
        self.electrostatics = hp.Electrostatics(method=method, accuracy=accuracy, real_space_cutoff=cutoff)
        self.cutoff = cutoff

    def energy(self, system, neighbors, positions, charges):
        system = dataclasses.replace(system, positions=positions)
        graph = build_graph(system, neighbors, positions=positions, cutoff=self.cutoff)
        return self.electrostatics(system, graph, charges).sum()


def energy_forces(variant, system, neighbors, charges_requires_grad=False):
    positions = system.positions.detach().clone().requires_grad_(True)
    q = system.initial_charges.detach().clone().requires_grad_(charges_requires_grad)
    energy = variant.energy(system, neighbors, positions, q)
    inputs = [positions, q] if charges_requires_grad else [positions]
    grads = torch.autograd.grad(energy, inputs)
    return energy.detach(), -grads[0], (grads[1] if charges_requires_grad else None)


def errors(variants, n, dtype, cutoff, device="cpu"):
    atoms = point_charges(n)
    reference = HybridPME(1e-9, max(cutoff, 12.0), method="ewald")
    system64 = hp.AtomicSystem.from_ase(atoms)
    _, f_ref, v_ref = energy_forces(reference, system64, hp.compute_neighbors(system64, reference.cutoff), True)
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=device)
    out = {}
    for name, variant in variants.items():
        _, f, v = energy_forces(variant, system, hp.compute_neighbors(system, cutoff), True)
        dv = (v.double().cpu() - v_ref).pow(2).mean().sqrt() / v_ref.abs().mean()
        df = (f.double().cpu() - f_ref).norm(dim=1).max() / f_ref.norm(dim=1).max()
        out[name] = (float(dv), float(df))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 27000, 97336])
    parser.add_argument("--accuracy", type=float, default=1e-4)
    parser.add_argument("--cutoff", type=float, default=8.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--error-n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    params = EwaldParameters.for_accuracy(args.accuracy, args.cutoff)
    variants = {"torchpme": TorchPME(params, dtype), "hybridpot": HybridPME(args.accuracy, args.cutoff)}
    variants["torchpme"].calculator.to(args.device)
    variants["hybridpot"].electrostatics.to(args.device)
    print(f"torch {torch.__version__}, torch-pme {torchpme.__version__}, threads {args.threads}, {device_label(args.device)}, {args.dtype}, "
          f"accuracy {args.accuracy:g}, cutoff {args.cutoff} Å, smearing {params.smearing:.3f} Å, "
          f"mesh spacing <= {params.mesh_spacing / 2:.3f} Å, {params.interpolation_nodes} nodes")
    print(f"\nerrors at N = {args.error_n} vs Ewald(1e-9): RMS dV/<|V|>, max |dF|/max|F|")
    for name, (dv, df) in errors(variants, args.error_n, dtype, args.cutoff, args.device).items():
        print(f"  {name:10s} {dv:9.2e} {df:9.2e}")
    print(f"\n{'N':>7s} {'torchpme (s)':>13s} {'hybridpot (s)':>14s} {'speed-up':>9s}   (energy + forces)")
    for n in args.sizes:
        system = hp.AtomicSystem.from_ase(point_charges(n), dtype=dtype, device=args.device)
        neighbors = hp.compute_neighbors(system, args.cutoff)
        for variant in variants.values():  # warm-up
            energy_forces(variant, system, neighbors)
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, variant in variants.items():
                synchronize(args.device)
                t0 = time.perf_counter()
                energy_forces(variant, system, neighbors)
                synchronize(args.device)
                times[name].append(time.perf_counter() - t0)
        t = {name: statistics.median(v) for name, v in times.items()}
        ratios = [a / b for a, b in zip(times["torchpme"], times["hybridpot"])]
        print(f"{system.n_atoms:7d} {t['torchpme']:13.3f} {t['hybridpot']:14.3f} {statistics.median(ratios):9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
