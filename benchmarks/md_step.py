"""Full hybrid model MD step (energy, forces, QEq) for molten NaCl, N = 512 ... 97336.

Systems (``--system``): ``melt`` (default): molten NaCl made by MD of the shipped model at 1200 K
(benchmarks/_melts.py: a 64-atom melt replicated k^3 times and run 40 more MD steps; N = 64 k^3:
1728, 4096, 21952; cached outside the repository); ``lattice``: rattled rock salt (N = 8 m^3:
1728, 4096, 21952, 97336); ``jittered``: the jittered cubic lattice of the earlier tables.
Models (``--model``): ``shipped`` (default): ``hybridpot/data/molten_nacl_4G.pt`` with its own
settings (Ewald/PME and QEq accuracy 1e-6, r_c 9 Å, CG tol 1e-10) unless ``--accuracy`` /
``--cg-tol`` are given; ``untrained``: the model described next (the earlier tables).

Model (untrained weights; the cost does not depend on their values): 4G hybrid =
short range (default symmetry functions, r_c 6 Å, 25x25 networks, charge input) +
ChargeEquilibration (15x15 electronegativity networks, matrix-free PME CG with the k-space
preconditioner from 1000 atoms, dense below; cg_tol ``--cg-tol``, default 1e-5; coarse-operator stage
``--coarse-tol``, default 3e-4; k-space part of the CG products ``--kspace-precision``, default auto =
float32 at this cg_tol) + Electrostatics (PME,
accuracy ``--accuracy``, default 1e-4, real-space cutoff 8 Å) + Dispersion (BJ-damped C6, cutoff 8 Å). System:
Na/Cl at molten-salt density 0.032 atoms/Å^3 (jittered cubic lattice).

One "MD step" = one model call computing energy and forces with the neighbour list reused
(as in MD with a Verlet skin, :class:`hybridpot.HybridCalculator`) after every atom moved by
a random 0.005 Å per Cartesian component (about one 1 fs step of the 1000 K melt), so that the
QEq CG solves start warm from the previous step's solution (``--no-warm-start`` turns that
off); the first (cold) call is reported separately. The neighbour-list build (real-space
cutoff + 0.5 Å skin) is timed separately. Each size runs in its own subprocess so that
the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that
size only; the baseline RSS after imports is subtracted for the per-atom figure.

Output: N, s/step (median of ``--repeats`` after one warm-up), µs/atom/step, ns/day at a
1 fs time step, neighbour-list time, CG iterations, peak RSS and MB per 1000 atoms.

Usage: python benchmarks/md_step.py [--sizes 512 4096 32768] [--dtype float64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hybridpot

SOLVER = "auto"
ACCURACY = 1e-4
SIDES = {512: 8, 1000: 10, 1728: 12, 4096: 16, 8000: 20, 17576: 26, 32768: 32, 97336: 46, 262144: 64}


WARM_START = True
CUTOFF = 8.0
CG_TOL = 1e-5
COARSE_TOL = 3e-4
KSPACE_PRECISION = "auto"


def build_model(dtype):
    import hybridpot as hp

    torch.manual_seed(0)
    desc = hp.SymmetryFunctions.default(["Na", "Cl"], r_cut=6.0)
    model = hp.HybridPotential(
        short_range=hp.ShortRange(["Na", "Cl"], desc, hidden=(25, 25), use_charges=True),
        charges=hp.ChargeEquilibration(["Na", "Cl"], desc, hidden=(15, 15), cg_tol=CG_TOL, solver=SOLVER, accuracy=ACCURACY,
                                       real_space_cutoff=CUTOFF, hardness={11: 4.0, 17: 3.0}, sigma=1.0,
                                       warm_start=WARM_START, coarse_tol=COARSE_TOL or None,
                                       kspace_precision=KSPACE_PRECISION),
        electrostatics=hp.Electrostatics(method="pme", accuracy=ACCURACY, real_space_cutoff=CUTOFF),
        dispersion=hp.Dispersion(["Na", "Cl"], cutoff=8.0),
    )
    return model.to(dtype)


def single(n: int, dtype_name: str, repeats: int, device: str = "cpu", system_kind: str = "jittered",
           model_kind: str = "untrained", accuracy=None, cg_tol=None) -> dict:
    import hybridpot as hp

    from _common import peak_memory_mb, reset_peak_memory, synchronize
    from _melts import shipped_model, system_for

    atoms = system_for(system_kind, n)  # (made or read before the baseline memory)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dtype = getattr(torch, dtype_name)
    if model_kind == "shipped":
        model = shipped_model(accuracy, cg_tol).to(dtype).to(device)
    else:
        model = build_model(dtype).to(device)
    system = hp.AtomicSystem.from_ase(atoms, dtype=dtype, device=device)
    synchronize(device)
    t0 = time.perf_counter()
    nl = hp.compute_neighbors(system, model.cutoff + 0.5)
    synchronize(device)
    t_nl = time.perf_counter() - t0
    generator = torch.Generator(device=device).manual_seed(1)
    reset_peak_memory(device)

    def step():
        """Move every atom a little (one MD-like step), then energy + forces."""
        system.positions = system.positions + 0.005 * torch.randn(system.positions.shape, generator=generator,
                                                                 dtype=dtype, device=device)
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(system, compute_stress=False, neighbors=nl)
        synchronize(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        cpu_times.append(cpu)
        diagnostics.append(model.charges.last_diagnostics)
        return (wall, out, list(model.charges.last_iterations), list(model.charges.last_coarse_iterations))

    cpu_times, diagnostics = [], []
    first_s, out, first_iters, first_coarse = step()
    times, iters, coarse = [], [], []
    for _ in range(repeats):
        t, out, it, co = step()
        times.append(t)
        iters.append(it)
        coarse.append(co)
    fallbacks = [d.get("fallback") for call in diagnostics for d in call if d.get("fallback")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if torch.device(device).type == "cuda":  # GPU memory instead of host RSS
        peak, base = peak_memory_mb(device) * 1024, 0
    return {"N": len(atoms), "step_s": statistics.median(times), "first_s": first_s, "nl_s": t_nl,
            "first_cpu_s": cpu_times[0], "step_cpu_s": statistics.median(cpu_times[1:]) if repeats else None,
            "preconditioner": [d.get("preconditioner", "dense") for d in diagnostics[0]], "fallbacks": fallbacks,
            "cg_first": first_iters, "cg_steps": iters, "coarse_first": first_coarse, "coarse_steps": coarse,
            "peak_rss_mb": peak / 1024,
            "base_rss_mb": base / 1024, "max_force": float(out["forces"].abs().max())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1000, 4096, 8000, 17576, 32768])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--system", default="melt", choices=["melt", "lattice", "jittered"],
                        help="melt (shipped-model MD, benchmarks/_melts.py), rattled rock salt, or jittered cubic lattice")
    parser.add_argument("--model", default="shipped", choices=["shipped", "untrained"],
                        help="the shipped molten-NaCl 4G model, or the untrained model of the earlier tables")
    parser.add_argument("--accuracy", type=float, default=None,
                        help="Ewald/PME and QEq accuracy (default: shipped model's own 1e-6; untrained 1e-4)")
    parser.add_argument("--cutoff", type=float, default=8.0, help="real-space cutoff of PME and QEq (Å), untrained model")
    parser.add_argument("--cg-tol", type=float, default=None,
                        help="CG relative residual tolerance (default: shipped model's own 1e-10; untrained 1e-5 = "
                             "0.1 x accuracy: force error from the solve ~1e-7 relative, far below the PME error; "
                             "see benchmarks/README.md)")
    parser.add_argument("--no-warm-start", action="store_true", help="cold CG start at every step")
    parser.add_argument("--coarse-tol", type=float, default=3e-4,
                        help="ChargeEquilibration coarse_tol (coarse-operator CG stage; 0 = off)")
    parser.add_argument("--kspace-precision", default="auto", choices=["auto", "float64", "float32"],
                        help="ChargeEquilibration kspace_precision (PME k-space part of the CG products)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plot", default="benchmarks/md_step.png")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads were up to 10x slower)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from _common import device_label

    global ACCURACY, WARM_START, CUTOFF, CG_TOL, COARSE_TOL, KSPACE_PRECISION
    ACCURACY = args.accuracy if args.accuracy is not None else 1e-4
    CG_TOL = args.cg_tol if args.cg_tol is not None else 1e-5
    WARM_START, CUTOFF = not args.no_warm_start, args.cutoff
    COARSE_TOL, KSPACE_PRECISION = args.coarse_tol, args.kspace_precision
    if args.single is not None:
        print("RESULT " + json.dumps(single(args.single, args.dtype, args.repeats, args.device, args.system, args.model,
                                            args.accuracy, args.cg_tol)))
        return
    for n in args.sizes:
        if args.system == "jittered" and n not in SIDES:
            raise ValueError(f"size {n} is not a cube of an even side; choose from {sorted(SIDES)}")
    if args.model == "shipped":
        label = (f"shipped 4G NaCl model (accuracy {args.accuracy or 'own 1e-6'}, CG tol {args.cg_tol or 'own 1e-10'}, "
                 f"r_c 9 Å)")
    else:
        label = (f"untrained 4G NaCl model (QEq + PME accuracy {ACCURACY:g}, r_c {args.cutoff:g} Å, dispersion), "
                 f"CG tol {CG_TOL:g}, coarse stage {args.coarse_tol:g}, k-space {args.kspace_precision}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, {device_label(args.device)}; "
          f"{args.system}; {label}; warm start {'off' if args.no_warm_start else 'on'}")
    print(f"{'N':>7} {'first s':>8} {'cpu s':>7} {'CG first':>15} {'s/step':>8} {'cpu s':>7} {'CG/step':>15} "
          f"{'us/atom/step':>13} {'ns/day@1fs':>11} {'NL s':>7} {'peak MB':>12} {'MB/1000 atoms':>14} precond")
    print("(CG: exact-operator iterations forward/adjoint, (+coarse-operator stage iterations); "
          "peak MB: GPU allocator peak on CUDA, process peak RSS on the CPU)")
    rows = []
    here = Path(__file__).resolve().parent
    for n in args.sizes:
        optional = [] if args.accuracy is None else ["--accuracy", str(args.accuracy)]
        optional += [] if args.cg_tol is None else ["--cg-tol", str(args.cg_tol)]
        optional += ["--no-warm-start"] if args.no_warm_start else []
        res = subprocess.run([sys.executable, str(here / "md_step.py"), "--single", str(n), "--dtype", args.dtype,
                              "--repeats", str(args.repeats), "--threads", str(args.threads),
                              "--cutoff", str(args.cutoff), "--device", args.device, "--system", args.system,
                              "--model", args.model, "--coarse-tol", str(args.coarse_tol),
                              "--kspace-precision", args.kspace_precision] + optional,
                             capture_output=True, text=True, cwd=here)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode != 0 or not line:
            print(f"{n:>7} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
            continue
        r = json.loads(line[0][7:])
        r["us_atom"] = r["step_s"] / r["N"] * 1e6
        r["ns_day"] = 86400.0 / r["step_s"] * 1e-6  # 1 fs per step: steps/day * 1e-6 ns
        r["mb_per_1000"] = (r["peak_rss_mb"] - r["base_rss_mb"]) / r["N"] * 1000
        rows.append(r)
        def iterations(exact, coarse):
            text = "/".join(str(k) for k in exact) or "-"
            return text + (f" (+{'/'.join(str(k) for k in coarse)})" if coarse else "")

        cg_first = iterations(r["cg_first"], r["coarse_first"])
        cg_step = iterations(r["cg_steps"][-1], r["coarse_steps"][-1]) if r["cg_steps"] else "-"
        precond = "/".join(r["preconditioner"]) + (f" FALLBACK: {r['fallbacks']}" if r["fallbacks"] else "")
        step_cpu = r["step_cpu_s"] if r["step_cpu_s"] is not None else float("nan")
        print(f"{r['N']:>7} {r['first_s']:>8.3f} {r['first_cpu_s']:>7.2f} {cg_first:>15} {r['step_s']:>8.3f} "
              f"{step_cpu:>7.2f} {cg_step:>15} {r['us_atom']:>13.1f} "
              f"{r['ns_day']:>11.4f} {r['nl_s']:>7.3f} {r['peak_rss_mb']:>12.0f} {r['mb_per_1000']:>14.1f} {precond}",
              flush=True)
    if args.plot and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        n = [r["N"] for r in rows]
        a1.loglog(n, [r["us_atom"] for r in rows], "o-")
        a1.set_xlabel("atoms N")
        a1.set_ylabel("µs / atom / step")
        a1.set_title(f"4G NaCl MD step (E, F, QEq), {device_label(args.device)}")
        a2.semilogx(n, [r["mb_per_1000"] for r in rows], "s-")
        a2.set_xlabel("atoms N")
        a2.set_ylabel("peak memory above baseline (MB / 1000 atoms)")
        for a in (a1, a2):
            a.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
