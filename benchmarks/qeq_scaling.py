"""Charge equilibration, charges + forces: dense vs matrix-free QEq versus N and system.

Systems (``--systems``): ``melt``: molten NaCl made by MD of the shipped model at 1200 K
(benchmarks/_melts.py, N = 64 k^3), ``lattice``: rattled rock salt (N = 8 m^3), ``jittered``: the
jittered cubic lattice of the earlier tables. QEq model (``--model``): ``shipped``: the
ChargeEquilibration term of hybridpot/data/molten_nacl_4G.pt with its own settings (accuracy
1e-6, r_c 9 Å, CG tol 1e-10) unless ``--accuracy`` / ``--cg-tol`` are given; ``untrained``: a
4G ``ChargeEquilibration`` with a small electronegativity network
(untrained; the cost does not depend on the weights), hardness 4.0/3.0 eV/e^2, Gaussian
widths 1 Å, real-space cutoff ``--cutoff``. Each (system, N) runs in its own subprocess
(peak RSS). Solvers:

* ``dense``: Ewald matrix (N x N) + direct solve, only up to ``--dense-max`` atoms;
* ``mf-kspace``: matrix-free PME conjugate gradients with the k-space preconditioner (default);
* ``mf-jacobi``: the same with the diagonal (Jacobi) preconditioner, up to ``--jacobi-max``
  atoms, to show what the preconditioner saves.

Timed: solve + backward of ``E_QEq + sum q^2`` with respect to positions (the work of charges
and forces), neighbour list excluded, cold CG start (no warm start), median of ``--repeats``.
Reported: seconds, CG iterations (forward/adjoint), dense/matrix-free ratio, the largest
charge difference between solvers, and peak memory per 1000 atoms (GPU allocator on CUDA).

Usage: python benchmarks/qeq_scaling.py [--sizes 1728 4096 21952] [--systems melt lattice] [--cg-tol 1e-5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hybridpot

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


def make_solver(kind: str, model_kind: str, solver: str, preconditioner: str, accuracy, cutoff, cg_tol):
    """The QEq term of the shipped model (its own settings unless accuracy / cg_tol given) or the
    untrained one of make_qeq, set to ``solver`` / ``preconditioner``, cold CG starts."""
    if model_kind == "untrained":
        return make_qeq(solver, preconditioner, accuracy or 1e-4, cutoff, cg_tol or 1e-6)
    from _melts import shipped_model

    qeq = shipped_model(accuracy, cg_tol).charges
    qeq.solver, qeq.warm_start = solver, False
    if solver == "matrix_free":
        qeq.preconditioner = preconditioner
    return qeq


def single(args) -> dict:
    """One (system, N) in this process: times, iterations, preconditioner used, peak RSS."""
    import resource

    from _melts import system_for

    atoms = system_for(args.system, args.single)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dtype = getattr(torch, args.dtype)
    result = {"N": len(atoms)}
    kinds = [("mf-kspace", "matrix_free", "kspace")]
    if len(atoms) <= args.jacobi_max:
        kinds.append(("mf-jacobi", "matrix_free", "jacobi"))
    if len(atoms) <= args.dense_max:
        kinds.append(("dense", "dense", "auto"))
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=args.device)
    charges = {}
    for name, solver, preconditioner in kinds:
        qeq = make_solver(name, args.model, solver, preconditioner, args.accuracy, args.cutoff,
                          args.cg_tol).to(args.device, dtype)
        neighbors = hp.compute_neighbors(system, qeq.cutoff)
        c0 = time.process_time()
        wall, q, iterations, _ = timed(qeq, system, neighbors, args.repeats, args.device)
        cpu = (time.process_time() - c0) / (args.repeats + 1)  # (warm-up call included: mean over calls)
        diagnostics = qeq.last_diagnostics[0]
        result[name] = {"s": wall, "cpu_s": cpu, "iterations": iterations,
                        "coarse": diagnostics.get("coarse_iterations", []),
                        "preconditioner": diagnostics.get("preconditioner", "dense"),
                        "fallback": diagnostics.get("fallback"),
                        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base}
        charges[name] = q
    if "dense" in charges:
        result["max_dq"] = float((charges["dense"] - charges["mf-kspace"]).abs().max())
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1728, 4096, 21952])
    parser.add_argument("--systems", nargs="+", default=["melt", "lattice"], choices=["melt", "lattice", "jittered"])
    parser.add_argument("--model", default="shipped", choices=["shipped", "untrained"])
    parser.add_argument("--accuracy", type=float, default=None, help="default: the model's own (shipped 1e-6)")
    parser.add_argument("--cutoff", type=float, default=8.0, help="untrained model's real-space cutoff (Å)")
    parser.add_argument("--cg-tol", type=float, default=None, help="default: the model's own (shipped 1e-10)")
    parser.add_argument("--dense-max", type=int, default=1728)
    parser.add_argument("--jacobi-max", type=int, default=4096)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--system", default="melt", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.single is not None:
        print("RESULT " + json.dumps(single(args)))
        return
    print(f"torch {torch.__version__}, {device_label(args.device)}, threads {torch.get_num_threads()}, {args.dtype}, "
          f"{args.model} model, accuracy {args.accuracy or 'own'}, CG tol {args.cg_tol or 'own'}; charges + forces "
          "(solve + adjoint), cold CG; peak MB: process RSS above the baseline, per (system, N) subprocess")
    print(f"{'system':>8} {'N':>7} {'mf-kspace s':>12} {'cpu s':>7} {'CG fwd/adj':>11} {'(+coarse)':>10} {'peak MB':>8} "
          f"{'mf-jacobi s':>12} {'CG fwd/adj':>11} {'dense s':>8} {'max|dq|':>8} precond")
    here = Path(__file__).resolve().parent
    for kind in args.systems:
        for n in args.sizes:
            command = [sys.executable, str(here / "qeq_scaling.py"), "--single", str(n), "--system", kind,
                       "--model", args.model, "--cutoff", str(args.cutoff), "--dense-max", str(args.dense_max),
                       "--jacobi-max", str(args.jacobi_max), "--dtype", args.dtype, "--repeats", str(args.repeats),
                       "--device", args.device, "--threads", str(args.threads)]
            command += [] if args.accuracy is None else ["--accuracy", str(args.accuracy)]
            command += [] if args.cg_tol is None else ["--cg-tol", str(args.cg_tol)]
            run = subprocess.run(command, capture_output=True, text=True, cwd=here)
            line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
            if run.returncode != 0 or not line:
                print(f"{kind:>8} {n:>7} failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
                continue
            r = json.loads(line[0][7:])
            mf, jac, dense = r["mf-kspace"], r.get("mf-jacobi"), r.get("dense")
            its = lambda x: "/".join(str(k) for k in x["iterations"]) if x else "-"  # noqa: E731
            coarse = "+" + "/".join(str(k) for k in mf["coarse"]) if mf["coarse"] else "-"
            precond = mf["preconditioner"] + (f" FALLBACK: {mf['fallback']}" if mf["fallback"] else "")
            print(f"{kind:>8} {r['N']:>7} {mf['s']:>12.2f} {mf['cpu_s']:>7.2f} {its(mf):>11} {coarse:>10} "
                  f"{mf['peak_mb']:>8.0f} {jac['s'] if jac else float('nan'):>12.2f} {its(jac):>11} "
                  f"{dense['s'] if dense else float('nan'):>8.2f} {r.get('max_dq', float('nan')):>8.1e} {precond}",
                  flush=True)


if __name__ == "__main__":
    main()
