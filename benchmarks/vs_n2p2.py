"""hybridpot vs n2p2 on n2p2's own potentials: energy + forces per atom, one thread, side by side.

Both programs evaluate the same potential on the same structure in one run, repeats interleaved
(n2p2, hybridpot, n2p2, hybridpot, ...). Setup and file reading are excluded on both sides:

* n2p2: a tiny driver on libnnp (written and compiled here, against the n2p2 build of
  ``../shared/tools/n2p2/build.sh``) calls ``Prediction::setup()`` once, then times each
  ``Prediction::predict()`` (neighbour list, symmetry functions, networks, forces; 4G: QEq and
  Ewald too) with the process CPU clock. ``readStructureFromFile`` before each call restores the
  structure and is not timed. n2p2 is single-threaded (no OpenMP in this build).
* hybridpot: ``hp.from_n2p2(directory)`` (file units, float64; 4G periodic rows with
  ``ewald="n2p2"``, n2p2's own ``ewald_prec`` truncation, so that both programs sum the same terms),
  one warm ``model(system, compute_stress=False)`` per timed call (neighbour list included), at one
  and at two torch threads.

Peak memory: each side once more in a fresh process (``ru_maxrss`` of the child from ``wait4``),
reported as the process peak; for hybridpot also the increase over the RSS after imports.

Correctness is checked on the way: the energies and forces of both programs are compared (the 4G
rows differ by n2p2's ``ewald_prec`` truncation, see validation/README.md).

Usage::

    python benchmarks/vs_n2p2.py                       # all rows, 3 repeats, table + JSON + plot
    python benchmarks/vs_n2p2.py --rows H2O_RPBE-D3:1 Cu2S_PBE:1 --repeats 2
    python benchmarks/vs_n2p2.py --n2p2 /tmp/n2p2/n2p2 # where build.sh put n2p2 (default)

Rows are ``NAME:REPLICATION``: a periodic structure is replicated REPLICATION times along each
cell vector (2 -> 8x the atoms); a finite one is copied REPLICATION^3 times, 100 file length units
apart (independent molecules in one structure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N2P2_EXAMPLES = ROOT.parent / "shared" / "reference" / "n2p2"
DEFAULT_ROWS = ["H2O_RPBE-D3:1", "H2O_RPBE-D3:2", "Cu2S_PBE:1", "Cu2S_PBE:2", "DMABN_SCAN:1", "DMABN_SCAN:4",
                "H2O_RPBE-D3_4G:1", "Carbon_chain_4G:1"]

DRIVER_SOURCE = r"""
// Times n2p2's Prediction::predict() on the structure of input.data (setup and reading excluded).
#include "Prediction.h"
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
static double clock_of(clockid_t id) { timespec t; clock_gettime(id, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char** argv) {
    int repeats = argc > 1 ? std::atoi(argv[1]) : 3;
    nnp::Prediction prediction;
    prediction.log.writeToStdout = false;
    prediction.setup();
    for (int r = 0; r < repeats; ++r) {
        prediction.readStructureFromFile("input.data");
        double c0 = clock_of(CLOCK_PROCESS_CPUTIME_ID), w0 = clock_of(CLOCK_MONOTONIC);
        prediction.predict();
        double c1 = clock_of(CLOCK_PROCESS_CPUTIME_ID), w1 = clock_of(CLOCK_MONOTONIC);
        std::printf("time %.9f %.9f\n", c1 - c0, w1 - w0);
    }
    nnp::Structure const& s = prediction.structure;
    std::printf("energy %.17e\n", s.energy);
    for (auto const& atom : s.atoms) std::printf("force %.17e %.17e %.17e\n", atom.f[0], atom.f[1], atom.f[2]);
    std::ifstream status("/proc/self/status");  // VmHWM: this program's peak RSS (ru_maxrss would include the
    std::string line;                            // forking parent's pages)
    while (std::getline(status, line)) if (line.rfind("VmHWM:", 0) == 0) std::printf("peak %s\n", line.c_str() + 6);
    return 0;
}
"""


# ----------------------------------------------------------------------------- structures
def read_first_structure(path: Path) -> dict:
    """The first ``begin ... end`` block of an n2p2 input.data file, numbers as written."""
    lattice, atoms, comments, charge = [], [], [], "0.0"
    with open(path) as handle:
        for line in handle:
            words = line.split()
            if not words:
                continue
            if words[0] == "lattice":
                lattice.append([float(w) for w in words[1:4]])
            elif words[0] == "atom":
                atoms.append(words[1:])
            elif words[0] == "charge":
                charge = words[1]
            elif words[0] == "comment":
                comments.append(line.rstrip("\n"))
            elif words[0] == "end":
                break
    return {"lattice": np.array(lattice) if lattice else None, "atoms": atoms, "charge": float(charge)}


def replicate(block: dict, k: int) -> dict:
    """k x k x k supercell (periodic) or k^3 copies 100 length units apart (finite)."""
    lattice = block["lattice"]
    shifts = [(a, b, c) for a in range(k) for b in range(k) for c in range(k)]
    atoms = []
    for a, b, c in shifts:
        offset = (np.array([a, b, c]) @ lattice) if lattice is not None else 100.0 * np.array([a, b, c], float)
        for words in block["atoms"]:
            xyz = np.array([float(w) for w in words[:3]]) + offset
            atoms.append([f"{x:.16e}" for x in xyz] + words[3:])
    return {"lattice": None if lattice is None else lattice * k, "atoms": atoms,
            "charge": block["charge"] * len(shifts)}


def write_block(path: Path, block: dict) -> None:
    with open(path, "w") as out:
        out.write("begin\ncomment benchmark structure\n")
        if block["lattice"] is not None:
            for row in block["lattice"]:
                out.write("lattice " + " ".join(f"{x:.16e}" for x in row) + "\n")
        for words in block["atoms"]:
            out.write("atom " + " ".join(words) + "\n")
        out.write(f"energy 0.0\ncharge {block['charge']!r}\nend\n")


def prepare_row(row: str, workdir: Path) -> Path:
    """A directory with the potential's files (symlinked) and the row's input.data."""
    name, k = row.split(":")
    source = N2P2_EXAMPLES / name
    if not source.is_dir():
        raise SystemExit(f"n2p2 example {name!r} not found under {N2P2_EXAMPLES}")
    target = workdir / f"{name}_{k}"
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.name not in ("input.data", "input.nn"):
            link = target / f.name
            if not link.exists():
                link.symlink_to(f)
    settings = (source / "input.nn").read_text()
    if name == "Carbon_chain_4G":
        # the example's weights fit 10-10 hidden layers (its input.nn says 15 15 and n2p2 reads past the
        # end of the weight files); both programs get 10 10, as in n2p2-output/10-10
        settings = settings.replace("global_nodes_short 15 15", "global_nodes_short 10 10")
    (target / "input.nn").write_text(settings)
    write_block(target / "input.data", replicate(read_first_structure(source / "input.data"), int(k)))
    return target


# ----------------------------------------------------------------------------- n2p2 side
def build_driver(n2p2: Path, workdir: Path) -> Path:
    source = workdir / "n2p2_predict_timer.cpp"
    source.write_text(DRIVER_SOURCE)
    binary = workdir / "n2p2_predict_timer"
    compiler = shutil.which("mpic++") or shutil.which("g++")
    cmd = [compiler, "-O3", "-march=native", "-std=c++11", f"-I{n2p2 / 'include'}", "-I/usr/include/eigen3",
           "-DEIGEN_DONT_PARALLELIZE", "-o", str(binary), str(source), str(n2p2 / "lib" / "libnnp.a")]
    subprocess.run(cmd, check=True)
    return binary


def run_child(cmd, cwd, env=None) -> str:
    """Run a child process and return its stdout.

    Peak memory is read by the child itself from ``/proc/self/status`` (``VmHWM``): the
    ``ru_maxrss`` of a child counts the pages of the (large) Python parent it was forked from.
    """
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed in {cwd} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def vm_hwm_mb() -> float:
    """This process's peak resident set size (MB) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def run_n2p2(binary: Path, directory: Path, repeats: int) -> dict:
    text = run_child([str(binary), str(repeats)], directory, env=dict(os.environ, OMP_NUM_THREADS="1"))
    rss = float(next(line.split()[1] for line in text.splitlines() if line.startswith("peak"))) / 1024
    times = [tuple(map(float, line.split()[1:])) for line in text.splitlines() if line.startswith("time")]
    energy = float(next(line.split()[1] for line in text.splitlines() if line.startswith("energy")))
    forces = np.array([[float(w) for w in line.split()[1:]] for line in text.splitlines() if line.startswith("force")])
    return {"cpu": [t[0] for t in times], "wall": [t[1] for t in times], "energy": energy, "forces": forces,
            "peak_rss_mb": rss}


# ----------------------------------------------------------------------------- hybridpot side
class HybridpotRow:
    """One row's model and system, kept warm across repeats."""

    def __init__(self, directory: Path, ewald: str = "n2p2"):
        import torch

        import hybridpot as hp
        from hybridpot.io.input_data import read_input_data
        from hybridpot.io.n2p2 import read_n2p2_settings

        self.torch = torch
        settings = read_n2p2_settings(directory / "input.nn")
        self.generation = int(settings.get("nnp_generation", "2"))
        overrides = None  # prepare_row wrote the row's input.nn
        if self.generation == 4:
            # 4G imports work in Å, eV, e (the 4G examples are in Bohr and Hartree); converted back for the check
            from ase.units import Bohr

            from hybridpot.electrostatics import COULOMB_CONSTANT

            kwargs = {"ewald": ewald} if self.periodic(directory) else {}
            self.model = hp.from_n2p2(directory, units="ase", file_units="bohr_hartree", overrides=overrides,
                                      **kwargs)
            atoms = read_input_data(directory / "input.data", units="bohr_hartree")[0]
            self.energy_unit = COULOMB_CONSTANT / Bohr  # eV per file energy unit (k_e = 1 Ha Bohr / e^2)
            self.force_unit = self.energy_unit / Bohr
        else:
            self.model = hp.from_n2p2(directory, overrides=overrides)  # file units: numbers as n2p2's
            atoms = read_input_data(directory / "input.data", units="angstrom_ev")[0]
            self.energy_unit = self.force_unit = 1.0
        self.system = hp.AtomicSystem.from_ase(atoms)
        self.n_atoms = len(atoms)

    @staticmethod
    def periodic(directory: Path) -> bool:
        return any(line.startswith("lattice") for line in (directory / "input.data").read_text().splitlines())

    def call(self):
        return self.model(self.system, compute_stress=False)

    def time(self, threads: int, repeats: int) -> dict:
        torch = self.torch
        torch.set_num_threads(threads)
        self.call()  # warm (first-call compilation and caches)
        cpu, wall = [], []
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            out = self.call()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return {"cpu": cpu, "wall": wall, "energy": float(out["energy"][0]) / self.energy_unit,
                "forces": out["forces"].detach().numpy() / self.force_unit}


def hybridpot_memory(directory: Path, ewald: str = "n2p2") -> dict:
    """Peak RSS of one energy+forces call in a fresh process (one thread)."""
    code = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, %r);"
        "from vs_n2p2 import HybridpotRow, vm_hwm_mb; from pathlib import Path;"
        "import hybridpot; base = vm_hwm_mb();"
        "row = HybridpotRow(Path(%r), %r); after_setup = vm_hwm_mb();"
        "row.call(); print('rss', base, after_setup, vm_hwm_mb())"
    ) % (str(Path(__file__).resolve().parent), str(directory), ewald)
    text = run_child([sys.executable, "-c", code], ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    base, after_setup, peak = (float(w) for w in next(l for l in text.splitlines() if l.startswith("rss")).split()[1:])
    return {"peak_rss_mb": peak, "import_rss_mb": base, "setup_rss_mb": after_setup}


# ----------------------------------------------------------------------------- report
def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def plot(results: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["row"] for r in results]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4.0))
    width = 0.27
    ax.bar(x - width, [r["n2p2_us_per_atom"] for r in results], width, label="n2p2 nnp (1 thread)")
    ax.bar(x, [r["hp1_us_per_atom"] for r in results], width, label="hybridpot (1 thread)")
    ax.bar(x + width, [r["hp2_us_per_atom"] for r in results], width, label="hybridpot (2 threads)")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("energy + forces, µs per atom\n(median; 1 thread: CPU, 2 threads: wall)")
    ax.set_title("hybridpot vs n2p2 on n2p2's example potentials")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="NAME:REPLICATION rows")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (each: n2p2 run + hybridpot run)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per program per repeat")
    parser.add_argument("--n2p2", type=Path, default=Path("/tmp/n2p2/n2p2"), help="n2p2 build (include/, lib/)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory runs")
    parser.add_argument("--ewald", choices=["n2p2", "converged"], default="n2p2",
                        help="4G periodic rows: n2p2's own ewald_prec truncation (the same sums as nnp-predict, "
                             "default) or hybridpot's converged sums (accuracy 1e-8)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "vs_n2p2.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "vs_n2p2.png")
    args = parser.parse_args(argv)
    if not (args.n2p2 / "lib" / "libnnp.a").is_file():
        raise SystemExit(f"no n2p2 build at {args.n2p2}: run `bash ../shared/tools/n2p2/build.sh /tmp/n2p2` first")

    workdir = Path(tempfile.mkdtemp(prefix="vs_n2p2_"))
    binary = build_driver(args.n2p2, workdir)
    directories = {row: prepare_row(row, workdir) for row in args.rows}
    rows = {row: HybridpotRow(d, args.ewald) for row, d in directories.items()}
    samples = {row: {"n2p2": [], "hp1": [], "hp2": []} for row in args.rows}
    checks = {}
    print(uptime(), flush=True)
    for repeat in range(args.repeats):
        for row in args.rows:
            n2p2 = run_n2p2(binary, directories[row], args.calls)
            hp1 = rows[row].time(1, args.calls)
            hp2 = rows[row].time(2, args.calls)
            samples[row]["n2p2"] += n2p2["cpu"]
            samples[row]["hp1"] += hp1["cpu"]
            samples[row]["hp2"] += hp2["wall"]  # two threads: wall time is what the user waits for
            samples[row].setdefault("hp1_wall", []).extend(hp1["wall"])
            samples[row].setdefault("n2p2_wall", []).extend(n2p2["wall"])
            checks[row] = {
                "energy_rel_diff": abs(hp1["energy"] - n2p2["energy"]) / abs(n2p2["energy"]),
                "force_max_abs_diff": float(np.abs(hp1["forces"] - n2p2["forces"]).max()),
                "n2p2_peak_rss_mb": n2p2["peak_rss_mb"],
            }
            print(f"repeat {repeat} {row}: n2p2 {statistics.median(n2p2['cpu']):.4f} s, "
                  f"hybridpot 1T {statistics.median(hp1['cpu']):.4f} s, 2T {statistics.median(hp2['wall']):.4f} s",
                  flush=True)
    import torch

    torch.set_num_threads(1)
    results = []
    for row in args.rows:
        n = rows[row].n_atoms
        med = {key: statistics.median(values) for key, values in samples[row].items()}
        result = {
            "row": f"{row.split(':')[0]} ({n})", "atoms": n,
            "n2p2_us_per_atom": 1e6 * med["n2p2"] / n, "hp1_us_per_atom": 1e6 * med["hp1"] / n,
            "hp2_us_per_atom": 1e6 * med["hp2"] / n, "ratio_1t": med["hp1"] / med["n2p2"],
            "speedup_1t_to_2t": med["hp1_wall"] / med["hp2"],
            "n2p2_wall_s": med["n2p2_wall"], "hp1_wall_s": med["hp1_wall"], **checks[row],
        }
        if not args.no_memory:
            result.update({f"hp_{k}": v for k, v in hybridpot_memory(directories[row], args.ewald).items()})
        results.append(result)
    print()
    print(uptime())
    print("energy + forces per call (median CPU time of the interleaved repeats; 2T: wall time)")
    head = (f"{'row':<24} {'n2p2 µs/at':>11} {'hp 1T µs/at':>12} {'hp/n2p2':>8} {'hp 2T µs/at':>12} {'1T->2T':>7}"
            f" {'n2p2 MB':>8} {'hp MB':>7} {'hp +MB':>7} {'dE rel':>8} {'dF max':>8}")
    print(head)
    for r in results:
        print(f"{r['row']:<24} {r['n2p2_us_per_atom']:>11.2f} {r['hp1_us_per_atom']:>12.2f} {r['ratio_1t']:>8.2f} "
              f"{r['hp2_us_per_atom']:>12.2f} {r['speedup_1t_to_2t']:>7.2f} {r['n2p2_peak_rss_mb']:>8.0f} "
              f"{r.get('hp_peak_rss_mb', float('nan')):>7.0f} "
              f"{r.get('hp_peak_rss_mb', float('nan')) - r.get('hp_import_rss_mb', float('nan')):>7.0f} "
              f"{r['energy_rel_diff']:>8.1e} {r['force_max_abs_diff']:>8.1e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"uptime": uptime(), "results": results}, indent=1))
    plot(results, args.plot)
    print(f"\nwrote {args.json} and {args.plot}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
