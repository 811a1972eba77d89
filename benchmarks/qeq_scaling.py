"""Charge equilibration, charges + forces: dense vs matrix-free QEq versus N, one run.

System: Na/Cl at molten-salt density (0.032 atoms/Å^3, jittered cubic lattice, as in the other
scripts). QEq model: 4G ``ChargeEquilibration`` with a small electronegativity network
(untrained; the cost does not depend on the weights), hardness 4.0/3.0 eV/e^2, Gaussian
widths 1 Å, Ewald/PME accuracy ``--accuracy``, real-space cutoff ``--cutoff``, CG tolerance
``--cg-tol``. Solvers compared in the same process:

* ``dense``: Ewald matrix (N x N) + direct solve, only up to ``--dense-max`` atoms;
* ``mf-kspace``: matrix-free PME conjugate gradients with the k-space preconditioner (default);
* ``mf-jacobi``: the same with the diagonal (Jacobi) preconditioner, up to ``--jacobi-max``
  atoms, to show what the preconditioner saves.

Timed: solve + backward of ``E_QEq + sum q^2`` with respect to positions (the work of charges
and forces), neighbour list excluded, cold CG start (no warm start), median of ``--repeats``.
Reported: seconds, CG iterations (forward/adjoint), dense/matrix-free ratio, the largest
charge difference between solvers, and peak memory per 1000 atoms (GPU allocator on CUDA).

Usage: python benchmarks/qeq_scaling.py [--sizes 1000 4096 17576 97336] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

import hybridpot as hp
from hybridpot.neighbors import build_graph

from _common import device_label, peak_memory_mb, reset_peak_memory, synchronize
from short_range_scaling import liquid


def make_qeq(solver: str, preconditioner: str, accuracy: float, cutoff: float, cg_tol: float):
    torch.manual_seed(0)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=4, angular_etas=(0.01,), zetas=(1.0,))
    return hp.ChargeEquilibration(
        ["Na", "Cl"], desc, hidden=(10,), solver=solver, preconditioner=preconditioner, accuracy=accuracy,
        real_space_cutoff=cutoff, cg_tol=cg_tol, hardness={"Na": 4.0, "Cl": 3.0}, sigma=1.0, warm_start=False,
    )


def charges_and_forces(qeq, system, neighbors):
    positions = system.positions.detach().clone().requires_grad_(True)
    moved = dataclasses.replace(system, positions=positions)
    graph = build_graph(moved, neighbors, positions=positions, cutoff=qeq.cutoff)
    q, _ = qeq(moved, graph)
    (grad,) = torch.autograd.grad(qeq.last_energy.sum() + (q * q).sum(), positions)
    return q.detach(), grad, list(qeq.last_iterations)


def timed(qeq, system, neighbors, repeats, device):
    charges_and_forces(qeq, system, neighbors)  # warm-up: FFT plans, allocations
    reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        q, _, iterations = charges_and_forces(qeq, system, neighbors)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), q, iterations, peak_memory_mb(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1000, 2197, 4096, 8000, 17576])
    parser.add_argument("--accuracy", type=float, default=1e-4)
    parser.add_argument("--cutoff", type=float, default=8.0)
    parser.add_argument("--cg-tol", type=float, default=1e-6)
    parser.add_argument("--dense-max", type=int, default=4096)
    parser.add_argument("--jacobi-max", type=int, default=17576)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    solvers = {"dense": ("dense", "auto"), "mf-kspace": ("matrix_free", "kspace"),
               "mf-jacobi": ("matrix_free", "jacobi")}
    models = {k: make_qeq(s, p, args.accuracy, args.cutoff, args.cg_tol).to(args.device, dtype)
              for k, (s, p) in solvers.items()}
    cuda = torch.device(args.device).type == "cuda"
    print(f"torch {torch.__version__}, {device_label(args.device)}, threads {torch.get_num_threads()}, {args.dtype}, "
          f"accuracy {args.accuracy:g}, cutoff {args.cutoff} Å, CG tol {args.cg_tol:g}; charges + forces, cold CG")
    print(f"{'N':>7} {'dense s':>9} {'mf-kspace s':>12} {'CG its':>7} {'mf-jacobi s':>12} {'CG its':>7} "
          f"{'dense/mf':>9} {'max|dq|':>9} {'MB/1000 (mf)':>13} {'MB/1000 (dense)':>16}")
    for n in args.sizes:
        system = hp.AtomicSystem.from_ase(liquid(n), dtype=dtype, device=args.device)
        neighbors = hp.compute_neighbors(system, models["mf-kspace"].cutoff)
        res = {}
        for name, qeq in models.items():
            limit = {"dense": args.dense_max, "mf-jacobi": args.jacobi_max}.get(name)
            if limit is not None and system.n_atoms > limit:
                continue
            res[name] = timed(qeq, system, neighbors, args.repeats, args.device)
        mf = res["mf-kspace"]
        its = lambda r: "/".join(str(k) for k in r[2])
        dense = res.get("dense")
        jac = res.get("mf-jacobi")
        dq = float((dense[1] - mf[1]).abs().max()) if dense else float("nan")
        mem = lambda r: f"{r[3] / system.n_atoms * 1000:.1f}" if (r and cuda) else "-"
        print(f"{system.n_atoms:>7} {dense[0] if dense else float('nan'):>9.3f} {mf[0]:>12.3f} {its(mf):>7} "
              f"{jac[0] if jac else float('nan'):>12.3f} {its(jac) if jac else '-':>7} "
              f"{dense[0] / mf[0] if dense else float('nan'):>9.2f} {dq:>9.1e} {mem(mf):>13} {mem(dense):>16}",
              flush=True)


if __name__ == "__main__":
    main()
