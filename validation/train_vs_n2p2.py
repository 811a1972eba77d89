"""Training, side by side: n2p2's nnp-train and hybridpot on the same split of n2p2's training sets.

For each set of ``../shared/reference/n2p2-train/<name>`` (n2p2's example training data and
input.nn): one fixed train/test split (numpy ``default_rng(seed)`` permutation, ``--test-fraction``
of the structures held out), then

* n2p2 (built by ``../shared/tools/n2p2/build.sh``): its example input.nn settings on the training
  split only (``test_fraction 0``), epochs raised to ``--n2p2-epochs`` (4G: ``--n2p2-charge-epochs``
  for the charge stage, then the short-range stage), ``nnp-scaling`` then ``nnp-train`` under
  ``mpirun -np 1``; the last epoch's weights are the model;
* hybridpot: ``hybridpot.training`` on the same training split with the same symmetry functions,
  scaling, network sizes, epochs and Kalman-filter settings (validation/train_hybridpot.py), one torch
  thread;

and both final models are evaluated by the same code (:func:`hybridpot.training.trainer.evaluate_model`,
the n2p2 result imported with :func:`hybridpot.from_n2p2`) on the test split: energy RMSE per atom,
force RMSE, charge RMSE, and training CPU time (children included) and wall time per program.

Usage::

    python validation/train_vs_n2p2.py --sets Carbon_chain_4G            # n2p2 and hybridpot
    python validation/train_vs_n2p2.py --sets Cu2S_PBE --only n2p2       # one program
    python validation/train_vs_n2p2.py --n2p2 /tmp/n2p2/n2p2 --workdir /tmp/train_vs_n2p2

Results go to ``--workdir`` (default ``/tmp/train_vs_n2p2``) and, as JSON, to
``validation/results/train_vs_n2p2.json`` (one entry per set and program).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SETS = ROOT.parent / "shared" / "reference" / "n2p2-train"
#: n2p2 example units: (file_units of from_n2p2 / read_input_data)
FILE_UNITS = {"Carbon_chain_4G": "bohr_hartree", "H2O_RPBE-D3_4G": "bohr_hartree", "Cu2S_PBE": "angstrom_ev",
              "H2O_RPBE-D3": "bohr_hartree"}


# ----------------------------------------------------------------------------- data
def read_blocks(path: Path) -> list[list[str]]:
    """The ``begin ... end`` blocks of an input.data file, lines as written."""
    blocks, current = [], None
    with open(path) as handle:
        for line in handle:
            word = line.split()[0] if line.split() else ""
            if word == "begin":
                current = [line]
            elif current is not None:
                current.append(line)
                if word == "end":
                    blocks.append(current)
                    current = None
    return blocks


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def write_blocks(path: Path, blocks: list[list[str]]) -> None:
    with open(path, "w") as out:
        for block in blocks:
            out.writelines(block)


def set_keyword(text: str, keyword: str, value: str) -> str:
    """Replace (or append) an input.nn keyword line."""
    pattern = re.compile(rf"^{re.escape(keyword)}(\s.*)?$", re.MULTILINE)
    line = f"{keyword} {value}"
    if pattern.search(text):
        return pattern.sub(line, text, count=1)
    return text.rstrip("\n") + f"\n{line}\n"


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- n2p2 side
def run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}); see {log}")


def train_n2p2(name: str, train_blocks, workdir: Path, n2p2: Path, epochs: int, charge_epochs: int,
               seed: int = 0) -> dict:
    """Run nnp-scaling and nnp-train on the training split; return the potential directory and times.

    ``seed`` > 0 adds ``seed`` to the example's ``random_seed`` (initial weights and update order)."""
    source = TRAIN_SETS / name
    directory = workdir / name / ("n2p2" if seed == 0 else f"n2p2_seed{seed}")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    write_blocks(directory / "input.data", train_blocks)
    settings = (source / "input.nn").read_text()
    settings = set_keyword(settings, "test_fraction", "0.0")
    if seed:
        base = re.search(r"^random_seed\s+(\d+)", settings, re.MULTILINE)
        settings = set_keyword(settings, "random_seed", str((int(base.group(1)) if base else 0) + seed))
    generation = int(re.search(r"^nnp_generation\s+(\d)", settings, re.MULTILINE).group(1)) \
        if re.search(r"^nnp_generation", settings, re.MULTILINE) else 2
    elements = re.search(r"^elements\s+(.*?)(#|$)", settings, re.MULTILINE).group(1).split()
    from ase.data import atomic_numbers

    zs = sorted(atomic_numbers[e] for e in elements)
    bin_dir = n2p2 / "bin"
    log = directory / "n2p2.log"
    # n2p2 is built against OpenMPI (build.sh): its mpirun, not another one earlier on PATH (the mpich
    # wheel of the engines extra installs an mpirun that refuses --allow-run-as-root)
    mpirun = [shutil.which("mpirun.openmpi") or "mpirun", "--allow-run-as-root", "-np", "1"]
    cpu0, wall0 = cpu_of_children(), time.perf_counter()
    if generation == 4:
        # this n2p2 version wants hardness files even for nnp-scaling (README of the build)
        for z in zs:
            (directory / f"hardness.{z:03d}.data").write_text("1.0\n")
    (directory / "input.nn").write_text(settings)
    run([str(bin_dir / "nnp-scaling"), "500"], directory, log)
    if generation == 4:
        (directory / "input.nn").write_text(set_keyword(settings, "epochs", str(charge_epochs)))
        run(mpirun + [str(bin_dir / "nnp-train"), "1"], directory, log)
        for z in zs:
            shutil.copy(directory / f"weightse.{z:03d}.{charge_epochs:06d}.out", directory / f"weightse.{z:03d}.data")
            shutil.copy(directory / f"hardness.{z:03d}.{charge_epochs:06d}.out", directory / f"hardness.{z:03d}.data")
        (directory / "input.nn").write_text(set_keyword(settings, "epochs", str(epochs)))
        run(mpirun + [str(bin_dir / "nnp-train"), "2"], directory, log)
    else:
        (directory / "input.nn").write_text(set_keyword(settings, "epochs", str(epochs)))
        run(mpirun + [str(bin_dir / "nnp-train")], directory, log)
    cpu, wall = cpu_of_children() - cpu0, time.perf_counter() - wall0
    for z in zs:
        shutil.copy(directory / f"weights.{z:03d}.{epochs:06d}.out", directory / f"weights.{z:03d}.data")
    return {"directory": str(directory), "cpu_s": cpu, "wall_s": wall, "generation": generation, "seed": seed}


# ----------------------------------------------------------------------------- evaluation
def evaluate(model, name: str, test_blocks, workdir: Path) -> dict:
    """Test-split RMSEs of a model by hybridpot's evaluation code (eV, Å, e)."""
    import torch

    from hybridpot.io.input_data import read_input_data
    from hybridpot.training.dataset import AtomsDataset
    from hybridpot.training.trainer import evaluate_model

    path = workdir / name / "test.data"
    write_blocks(path, test_blocks)
    images = read_input_data(path, units=FILE_UNITS[name])
    dataset = AtomsDataset.from_atoms(images, cutoff=float(model.cutoff))
    metrics = evaluate_model(model, dataset, dtype=torch.float64).compute()
    return metrics


SUMMARY_KEYS = ("energy_rmse", "forces_rmse", "charges_rmse", "cpu_s")


def short_metrics(metrics: dict) -> str:
    """Test E (meV/atom), F (meV/Å), q (me) of a metrics dict, one line."""
    parts = [f"E {1e3 * metrics['energy_rmse']:.3f}", f"F {1e3 * metrics['forces_rmse']:.1f}"]
    if "charges_rmse" in metrics:
        parts.append(f"q {1e3 * metrics['charges_rmse']:.2f}")
    return "test " + ", ".join(parts)


def seed_summary(entries: list) -> dict:
    """Mean, standard deviation (ddof 1), median, min and max over training seeds of the test RMSEs and CPU time."""
    summary = {}
    for key in SUMMARY_KEYS:
        values = [e["cpu_s"] if key == "cpu_s" else e["test"].get(key) for e in entries]
        values = np.array([v for v in values if v is not None], dtype=float)
        if len(values):
            summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                            "median": float(np.median(values)), "min": float(values.min()),
                            "max": float(values.max()), "n": int(len(values))}
    return summary


def n2p2_model(directory: Path, name: str):
    import hybridpot as hp

    return hp.from_n2p2(directory, units="ase", file_units=FILE_UNITS[name])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["Carbon_chain_4G", "H2O_RPBE-D3_4G", "Cu2S_PBE"])
    parser.add_argument("--only", choices=["n2p2", "hybridpot"], default=None)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n2p2", type=Path, default=Path("/tmp/n2p2/n2p2"))
    parser.add_argument("--n2p2-epochs", type=int, default=100, help="short-range epochs (both programs)")
    parser.add_argument("--n2p2-charge-epochs", type=int, default=60, help="4G charge-stage epochs (both programs)")
    parser.add_argument("--training-seeds", type=int, default=1,
                        help="train each program with this many seeds (n2p2: random_seed + k, hybridpot: seed k) on the "
                             "same split and report mean, spread and median of the test RMSEs")
    parser.add_argument("--init", choices=["n2p2", "glorot"], default="glorot",
                        help="hybridpot's initial weights: n2p2's scheme or Glorot-Bengio on every layer")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/train_vs_n2p2"))
    parser.add_argument("--json", type=Path, default=ROOT / "validation" / "results" / "train_vs_n2p2.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # n2p2's nnp-train runs on one core here (mpirun -np 1)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for name in args.sets:
        blocks = read_blocks(TRAIN_SETS / name / "input.data")
        train, test = split_indices(len(blocks), args.test_fraction, args.seed)
        train_blocks, test_blocks = [blocks[i] for i in train], [blocks[i] for i in test]
        print(f"{name}: {len(train)} training / {len(test)} test structures", flush=True)
        runs: dict = {"n2p2": [], "hybridpot": []}
        for seed in range(args.training_seeds):
            if args.only in (None, "n2p2"):
                if not (args.n2p2 / "bin" / "nnp-train").is_file():
                    raise SystemExit(f"no nnp-train under {args.n2p2}: run `bash ../shared/tools/n2p2/build.sh /tmp/n2p2`")
                run_info = train_n2p2(name, train_blocks, args.workdir, args.n2p2, args.n2p2_epochs,
                                      args.n2p2_charge_epochs, seed=seed)
                metrics = evaluate(n2p2_model(Path(run_info["directory"]), name), name, test_blocks, args.workdir)
                runs["n2p2"].append({**run_info, "test": metrics, "epochs": [args.n2p2_charge_epochs, args.n2p2_epochs]})
                print(f"  n2p2 seed {seed}: {run_info['cpu_s']:.1f} s CPU, {run_info['wall_s']:.1f} s wall; "
                      f"{short_metrics(metrics)}", flush=True)
            if args.only in (None, "hybridpot"):
                from train_hybridpot import train_hybridpot  # noqa: E402 (validation/ helper, next to this script)

                run_info, model = train_hybridpot(name, train_blocks, args.workdir, FILE_UNITS[name], TRAIN_SETS / name,
                                                  epochs=args.n2p2_epochs, charge_epochs=args.n2p2_charge_epochs,
                                                  seed=seed, init=args.init)
                metrics = evaluate(model, name, test_blocks, args.workdir)
                runs["hybridpot"].append({**run_info, "test": metrics})
                print(f"  hybridpot seed {seed}: {run_info['cpu_s']:.1f} s CPU, {run_info['wall_s']:.1f} s wall; "
                      f"{short_metrics(metrics)}", flush=True)
        for program, entries in runs.items():
            if not entries:
                continue
            if args.training_seeds == 1:
                results.setdefault(name, {})[program] = entries[0]
            else:
                summary = seed_summary(entries)
                results.setdefault(name, {})[f"{program}_seeds"] = {"runs": entries, "summary": summary}
                print(f"  {program} over {len(entries)} seeds: " + ", ".join(
                    f"{key} {value['mean']:.4g} +- {value['std']:.2g} (median {value['median']:.4g})"
                    for key, value in summary.items()), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
