"""Electrostatics energy + forces: direct vs Ewald vs PME versus N, at the same accuracy.

Systems: jittered rock-salt-like Na+/Cl- (charges +-1 e, Gaussian widths 1 Å) at molten-salt
density (0.032 atoms/Å^3). Ewald and PME run on the periodic box with the parameter rules
of :class:`hybridpot.Electrostatics` for ``--accuracy`` (real-space cutoff ``--cutoff``);
"direct" is the exact all-pairs sum of the same atoms as a finite cluster (no images,
O(N^2) memory). Timed: energy + forces (autograd) with the neighbour list precomputed
(median of ``--repeats`` after one warm-up). Each PME variant's error is measured against a
tight Ewald reference (accuracy 1e-9) at ``--error-n`` atoms: RMS potential error relative
to the mean |V| and max force error relative to the largest force.

Usage: python benchmarks/electrostatics_scaling.py [--sizes 1000 8000 27000 97336]
       [--pme-variants 7:float64 5:float64 5:float32] [--plot benchmarks/electrostatics_scaling.png]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import hybridpot as hp
from hybridpot.neighbors import build_graph

from _common import device_label, peak_memory_mb, reset_peak_memory, synchronize
from short_range_scaling import liquid


def salt(n: int, periodic: bool = True):
    atoms = liquid(n)
    atoms.set_initial_charges([1.0 if z == 11 else -1.0 for z in atoms.numbers])
    atoms.pbc = periodic
    return atoms


def make_model(method: str, accuracy: float, cutoff: float, nodes: int = 7):
    return hp.HybridPotential(
        charges=hp.FixedCharges(sigma=1.0),
        electrostatics=hp.Electrostatics(method=method, accuracy=accuracy, real_space_cutoff=cutoff,
                                         interpolation_nodes=nodes),
    )


def run(model, atoms, dtype, repeats, device="cpu"):
    """(median seconds per energy + forces call, peak memory MB, output)."""
    model = model.to(device)
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=device)
    nl = hp.compute_neighbors(system, model.cutoff) if atoms.pbc.any() else hp.compute_neighbors(system, 1e-3)
    call = lambda: model(system, compute_stress=False, neighbors=nl)
    reset_peak_memory(device)
    out = call()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak_memory_mb(device), out


def potential_error(model, atoms, dtype, reference, device="cpu"):
    """(RMS potential error / mean |V|, max force error / max |F|) against ``reference``."""
    model = model.to(device)
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=device)
    nl = hp.compute_neighbors(system, model.cutoff)
    graph = build_graph(system, nl, cutoff=model.cutoff)
    q, sigma = model.charges(system, graph)
    qq = q.detach().clone().requires_grad_(True)
    e = model.electrostatics(system, graph, qq, sigma).sum()
    v = torch.autograd.grad(e, qq)[0].double().cpu()
    f = model(system, compute_stress=False, neighbors=nl)["forces"].double().cpu()
    v_ref, f_ref = reference
    dv = (v - v_ref).pow(2).mean().sqrt() / v_ref.abs().mean()
    df = (f - f_ref).norm(dim=1).max() / f_ref.norm(dim=1).max()
    return float(dv), float(df)


def reference_v_f(atoms, cutoff):
    model = make_model("ewald", 1e-9, max(cutoff, 12.0)).double()
    system = hp.AtomicSystem.from_ase(atoms, dtype=torch.float64)
    nl = hp.compute_neighbors(system, model.cutoff)
    graph = build_graph(system, nl, cutoff=model.cutoff)
    q, sigma = model.charges(system, graph)
    qq = q.detach().clone().requires_grad_(True)
    e = model.electrostatics(system, graph, qq, sigma).sum()
    v = torch.autograd.grad(e, qq)[0]
    f = model(system, compute_stress=False, neighbors=nl)["forces"]
    return v.detach(), f.detach()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1000, 4096, 8000, 27000, 97336])
    parser.add_argument("--accuracy", type=float, default=1e-5)
    parser.add_argument("--cutoff", type=float, default=8.0)
    parser.add_argument("--direct-max", type=int, default=8000)
    parser.add_argument("--ewald-max", type=int, default=8000)
    parser.add_argument("--pme-variants", nargs="+", default=["7:float64", "7:float32", "5:float64"],
                        help="interpolation_nodes:dtype for PME")
    parser.add_argument("--error-n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default="benchmarks/electrostatics_scaling.png")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads were up to 10x slower)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [(int(v.split(":")[0]), v.split(":")[1]) for v in args.pme_variants]
    print(f"torch {torch.__version__}, {device_label(args.device)}, threads {torch.get_num_threads()}, accuracy {args.accuracy:g}, "
          f"real-space cutoff {args.cutoff} Å, Gaussian widths 1 Å")

    # accuracy of each PME variant (and Ewald) against a tight Ewald reference
    atoms = salt(args.error_n)
    ref = reference_v_f(atoms, args.cutoff)
    print(f"\nerrors at N = {len(atoms)} vs Ewald(1e-9): RMS dV/<|V|>, max |dF|/max|F|")
    for label, method, nodes, dt in [("ewald float64", "ewald", 7, "float64")] + \
            [(f"pme n={n} {d}", "pme", n, d) for n, d in variants]:
        dtype = getattr(torch, dt)
        m = make_model(method, args.accuracy, args.cutoff, nodes).to(dtype)
        dv, df = potential_error(m, atoms, dtype, ref, args.device)
        mesh = ""
        if method == "pme":
            p = m.electrostatics.params
            mesh = f"  mesh spacing <= {p.mesh_spacing / 2:.3f} Å"
        print(f"  {label:<18s} {dv:9.2e} {df:9.2e}{mesh}")

    cols = ["direct", "ewald"] + [f"pme{n}_{d}" for n, d in variants]
    print(f"\n{'N':>7} " + " ".join(f"{c:>14s}" for c in cols) + "   (s per energy+forces call)")
    rows = []
    for n in args.sizes:
        row = {"N": None}
        memory = {}
        for c in cols:
            if c == "direct":
                if n > args.direct_max:
                    continue
                atoms = salt(n, periodic=False)
                t, mem, _ = run(make_model("direct", args.accuracy, args.cutoff), atoms, torch.float64, args.repeats,
                                args.device)
            elif c == "ewald":
                if n > args.ewald_max:
                    continue
                atoms = salt(n)
                t, mem, _ = run(make_model("ewald", args.accuracy, args.cutoff).double(), atoms, torch.float64,
                                args.repeats, args.device)
            else:
                nodes, dt = c[3:].split("_")
                atoms = salt(n)
                dtype = getattr(torch, dt)
                t, mem, _ = run(make_model("pme", args.accuracy, args.cutoff, int(nodes)).to(dtype), atoms, dtype,
                                args.repeats, args.device)
            row[c] = t
            memory[c] = mem
        row["N"] = len(salt(n))
        rows.append(row)
        row["memory"] = memory
        print(f"{row['N']:>7} " + " ".join(f"{row[c]:>14.4f}" if c in row else f"{'-':>14s}" for c in cols),
              flush=True)
    # peak memory per method needs a fresh peak per call: the GPU allocator gives that, the CPU's
    # ru_maxrss does not (it keeps the largest earlier call's peak), so only on CUDA
    if torch.device(args.device).type == "cuda":
        print("\npeak GPU memory (allocator), MB per 1000 atoms")
        print(f"{'N':>7} " + " ".join(f"{c:>14s}" for c in cols))
    for row in rows if torch.device(args.device).type == "cuda" else []:
        m = row["memory"]
        print(f"{row['N']:>7} " + " ".join(f"{m[c] / row['N'] * 1000:>14.1f}" if c in m else f"{'-':>14s}"
                                           for c in cols))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for c, style in zip(cols, ["o-", "s-", "^-", "v--", "d:"]):
            pts = [(r["N"], r[c]) for r in rows if c in r]
            if pts:
                ax.loglog(*zip(*pts), style, label=c)
        ax.set_xlabel("atoms N")
        ax.set_ylabel("energy + forces (s)")
        ax.set_title(f"Electrostatics, accuracy {args.accuracy:g}, {device_label(args.device)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
