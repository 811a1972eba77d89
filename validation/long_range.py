"""Long-range physics validation: Madelung constants, Ewald/PME accuracy, QEq solver timings.

Run:  python validation/long_range.py [--quick]

Tables
1. Madelung constants of five lattices from FixedCharges point charges through
   HybridPotential(charges=FixedCharges(), electrostatics=Electrostatics(method)), Ewald
   and PME at accuracy 1e-8, vs literature values (nearest-neighbour distance r0;
   E per formula unit = -M z+ |z-| k_e / r0).
   Literature: CRC Handbook of Chemistry and Physics, "Madelung constant and crystal lattice
   energy" table (6 digits: NaCl 1.74756, CsCl 1.76267, zinc blende 1.63806, wurtzite
   1.64132 (ideal), fluorite 2.51939); more digits for NaCl (1.747564594633, OEIS A085469)
   and CsCl (1.762674773071, OEIS A181152).
2. Ewald and PME error vs the requested accuracy: 300 Gaussian charges (widths 0.5-1.1 Å,
   random +-), triclinic cell, reference Ewald at accuracy 1e-13 with a 14 Å real-space
   cutoff; max error of the potential (relative to mean |V|) and of the forces (relative
   to max |F|), and the time of one energy + forces evaluation.
3. QEq time (charges + forces, i.e. forward solve and one backward pass to positions) of the
   dense solver (Ewald matrix + Cholesky) and the matrix-free solver (PME operator,
   projected CG with the k-space preconditioner, adjoint solve in backward) for jittered rock-salt
   supercells of N = 96 ... 16224 atoms; accuracy 1e-4, CG tolerance 1e-6. The dense
   solver is measured up to N = 4096 (2016 with --quick) and extrapolated as N^3 beyond.

Timings: one run each, 1 CPU thread by default (on a machine shared with other jobs,
multi-threaded torch was measured to slow small FFTs by up to 50x through contention).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hybridpot as hp  # noqa: E402
from hybridpot.electrostatics import COULOMB_CONSTANT, EwaldParameters, PeriodicCoulomb  # noqa: E402
from hybridpot.neighbors import build_graph, compute_neighbors  # noqa: E402

DT = torch.float64


# ---------------------------------------------------------------------------- 1. Madelung
def madelung_lattices():
    a = 5.64
    out = []
    nacl = bulk("NaCl", "rocksalt", a=a)
    out.append(("NaCl (rock salt)", nacl, {"Na": 1, "Cl": -1}, a / 2, 1, 1.747564594633, "OEIS A085469"))
    acs = 4.12
    cscl = bulk("CsCl", "cesiumchloride", a=acs)
    out.append(("CsCl", cscl, {"Cs": 1, "Cl": -1}, acs * math.sqrt(3) / 2, 1, 1.762674773071, "OEIS A181152"))
    azb = 5.41
    zb = bulk("ZnS", "zincblende", a=azb)
    out.append(("ZnS zinc blende", zb, {"Zn": 1, "S": -1}, azb * math.sqrt(3) / 4, 1, 1.63806, "CRC"))
    aw = 3.25
    cw = aw * math.sqrt(8 / 3)
    wz = bulk("ZnO", "wurtzite", a=aw, c=cw, u=0.375)
    out.append(("ZnO wurtzite (ideal)", wz, {"Zn": 1, "O": -1}, 0.375 * cw, 1, 1.64132, "CRC"))
    af = 5.46
    fl = bulk("CaF2", "fluorite", a=af)
    out.append(("CaF2 fluorite", fl, {"Ca": 2, "F": -1}, af * math.sqrt(3) / 4, 2, 2.51939, "CRC"))
    return out


def table_madelung():
    print("Table 1. Madelung constants (point charges, accuracy 1e-8)")
    print(f"{'lattice':24s} {'atoms':>5s} {'M Ewald':>14s} {'M PME':>14s} {'literature':>14s} {'rel.diff Ewald':>15s} {'rel.diff PME':>13s}")
    for name, atoms, charges, r0, zz, lit, src in madelung_lattices():
        atoms.set_initial_charges([charges[s] for s in atoms.get_chemical_symbols()])
        n_formula = sum(1 for s in atoms.get_chemical_symbols() if charges[s] > 0)
        values = []
        for method in ("ewald", "pme"):
            model = hp.HybridPotential(charges=hp.FixedCharges(), electrostatics=hp.Electrostatics(method=method, accuracy=1e-8))
            e = float(model(hp.AtomicSystem.from_ase(atoms), compute_forces=False, compute_stress=False)["energy"])
            values.append(-e / n_formula * r0 / (zz * COULOMB_CONSTANT))
        print(
            f"{name:24s} {len(atoms):5d} {values[0]:14.9f} {values[1]:14.9f} {lit:14.9g} "
            f"{values[0] / lit - 1:15.2e} {values[1] / lit - 1:13.2e}   ({src})"
        )
    print()


# ---------------------------------------------------------------------------- 2. accuracy
def table_accuracy(accuracies):
    from vesin_torch import NeighborList

    g = torch.Generator().manual_seed(1)
    cell = torch.tensor([[15.0, 0, 0], [2.0, 13.5, 0], [1.0, -1.5, 16.5]], dtype=DT)
    n = 300
    pos = torch.rand(n, 3, generator=g, dtype=DT) @ cell
    q = torch.randn(n, generator=g, dtype=DT)
    q = q - q.mean()
    sig = torch.rand(n, generator=g, dtype=DT) * 0.6 + 0.5

    def run(acc, method, rc):
        p = EwaldParameters.for_accuracy(acc, rc)
        t = time.perf_counter()
        i, j, shifts = NeighborList(cutoff=rc, full_list=False).compute(pos, cell, True, quantities="ijS")
        x = pos.clone().requires_grad_(True)
        d = (x[j] - x[i] + shifts.to(DT) @ cell).norm(dim=1)
        op = PeriodicCoulomb(x, cell, i.long(), j.long(), d, sig, p, method)
        v = op.matvec(q)
        (f,) = torch.autograd.grad(-0.5 * (q * v).sum(), x)
        return v.detach(), f, time.perf_counter() - t, op.mesh_shape, p

    ref_v, ref_f, _, _, _ = run(1e-13, "ewald", 14.0)
    vs, fs = float(ref_v.abs().mean()), float(ref_f.abs().max())
    print("Table 2. Ewald and PME error vs requested accuracy (300 Gaussian charges, triclinic cell, r_c = 10 Å)")
    print(f"{'accuracy':>9s} {'smearing':>8s} | {'Ewald V err':>11s} {'F err':>8s} {'time':>7s} | {'PME V err':>9s} {'F err':>8s} {'time':>7s} {'mesh':>14s}")
    for acc in accuracies:
        row = []
        for method in ("ewald", "pme"):
            v, f, t, mesh, p = run(acc, method, 10.0)
            row.append((float((v - ref_v).abs().max()) / vs, float((f - ref_f).abs().max()) / fs, t, mesh))
        (ev, ef, et, _), (pv, pf, pt, mesh) = row
        print(f"{acc:9.0e} {p.smearing:8.3f} | {ev:11.1e} {ef:8.1e} {et:6.2f}s | {pv:9.1e} {pf:8.1e} {pt:6.2f}s {str(mesh):>14s}")
    print()


# ---------------------------------------------------------------------------- 3. QEq timings
def jittered_rocksalt(shape, d=2.82, seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1).reshape(-1, 3)
    pos = g * d + rng.normal(scale=0.1, size=g.shape)
    numbers = np.where(g.sum(1) % 2 == 0, 11, 17)
    return Atoms(numbers=numbers, positions=pos, cell=np.array(shape) * d, pbc=True)


def time_qeq(atoms, solver, accuracy=1e-4, cg_tol=1e-6):
    torch.manual_seed(0)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=4.0, n_radial=3, angular_etas=(0.01,), zetas=(1.0,))
    qeq = hp.ChargeEquilibration(
        ["Na", "Cl"], desc, hidden=(6,), solver=solver, accuracy=accuracy, cg_tol=cg_tol,
        hardness={"Na": 1.5, "Cl": 3.0}, sigma={"Na": 0.8, "Cl": 1.1},
    ).double()
    system = hp.AtomicSystem.from_ase(atoms)
    graph = None
    t0 = time.perf_counter()
    x = system.positions.detach().requires_grad_(True)
    system.positions = x
    graph = build_graph(system, compute_neighbors(system, qeq.cutoff))
    t1 = time.perf_counter()
    q, _ = qeq(system, graph)
    t2 = time.perf_counter()
    (grad,) = torch.autograd.grad(qeq.last_energy.sum() + (q * q).sum(), x)
    t3 = time.perf_counter()
    return {"neighbors": t1 - t0, "solve": t2 - t1, "backward": t3 - t2, "total": t3 - t1, "iterations": qeq.last_iterations,
            "q": q.detach()}


def table_timings(shapes, dense_max_atoms):
    print("Table 3. QEq time, charges + forces (s); accuracy 1e-4, CG tol 1e-6 (neighbour list excluded)")
    print(f"{'N':>6s} {'dense':>9s} {'matrix-free':>12s} {'(solve+backward)':>17s} {'CG its':>9s} {'dense/mf':>9s} {'max|dq|':>9s}")
    dense_times = {}
    rows = []
    for solver in ("matrix_free", "dense"):  # warm-up (first-call allocations, FFT plans)
        time_qeq(jittered_rocksalt((4, 4, 4)), solver)
    for shape in shapes:
        atoms = jittered_rocksalt(shape)
        n = len(atoms)
        mf = time_qeq(atoms, "matrix_free")
        dense = time_qeq(atoms, "dense") if n <= dense_max_atoms else None
        if dense is not None:
            dense_times[n] = dense["total"]
            dq = float((dense["q"] - mf["q"]).abs().max())
            dense_s = f"{dense['total']:9.2f}"
        else:
            dq = float("nan")
            # extrapolate as N^3 from the largest measured size
            n_ref = max(dense_times)
            est = dense_times[n_ref] * (n / n_ref) ** 3
            dense_times[n] = est
            dense_s = f"{est:8.0f}*"
        ratio = dense_times[n] / mf["total"]
        its = "/".join(str(i) for i in mf["iterations"])
        print(f"{n:6d} {dense_s:>9s} {mf['total']:12.2f} {mf['solve']:8.2f}+{mf['backward']:<8.2f} {its:>9s} {ratio:9.2f} {dq:9.1e}")
        rows.append((n, dense_times[n], mf["total"]))
        sys.stdout.flush()
    print("* extrapolated as N^3 from the largest dense run (Ewald matrix assembly O(N^2 K) with K ~ N, Cholesky O(N^3)).")
    mf_n = np.array([r[0] for r in rows], dtype=float)
    mf_t = np.array([r[2] for r in rows])
    big = mf_n >= 1000
    if big.sum() >= 2:
        slope = np.polyfit(np.log(mf_n[big]), np.log(mf_t[big]), 1)[0]
        print(f"matrix-free scaling exponent (N >= 1000): t ~ N^{slope:.2f}")
    cross = [r[0] for r in rows if r[1] > r[2]]
    print(f"matrix-free faster than dense from N = {cross[0] if cross else 'n/a'} on")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller timing table (N <= 2016)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)\n")
    t = time.perf_counter()
    table_madelung()
    table_accuracy([1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9])
    shapes = [(4, 4, 6), (6, 6, 6), (8, 8, 8), (10, 10, 10), (12, 12, 14)]
    if not args.quick:
        shapes += [(16, 16, 16), (20, 20, 20), (24, 26, 26)]
    table_timings(shapes, dense_max_atoms=4100 if not args.quick else 2100)
    print(f"total runtime {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
