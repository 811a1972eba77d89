"""Aqueous NaCl: the model against GFN1-xTB along one-coordinate distortions of a liquid box.

Usage::

    python examples/aqueous_nacl_scans.py [--model PATH] [--points 8] [--output runs/aqueous_nacl_scans]

Starts from the last frame of the shipped GFN1-xTB chain of the separated pair (1 NaCl + 32 H2O) and
moves one coordinate at a time, everything else fixed:

* ``O-H stretch``: one O-H bond of the water farthest from both ions, 0.75-1.60 Å;
* ``H-O-H bend``: the same water's angle, 60-160 deg (bond lengths kept);
* ``Na-O``: the water nearest the Na moved rigidly along the Na-O axis, Na-O 1.5-3.0 Å;
* ``Cl-H``: the water with the H nearest the Cl moved rigidly along Cl-H, 1.2-2.6 Å;
* ``O-O``: the nearest neighbour of the stretched water moved rigidly along O-O, 2.0-3.2 Å.

For each point: the model's and GFN1-xTB's (tblite, 300 K electronic temperature, as the data)
energy relative to the undistorted box, and the force on the moved atoms. Prints a table, writes
``scans.png`` and ``scans.json``. This is the diagnosis of where a model leaves GFN1-xTB (the holes
that break its MD); about 3 s of GFN1-xTB per point on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import Atoms

import hybridpot as hp
from hybridpot.data import aqueous_nacl_model_path, load_aqueous_nacl
from hybridpot.reference_data.aqueous_nacl import ELECTRONIC_TEMPERATURE, METHOD


def base_box() -> Atoms:
    """The last frame of the shipped GFN1-xTB chain of the separated pair (no calculator)."""
    frames = [a for a in load_aqueous_nacl(include_model_md=False, include_distorted=False)
              if str(a.info["source"]).startswith("xtb md d0=5.0 seg1")]
    atoms = Atoms(frames[-1].numbers, positions=frames[-1].positions, cell=frames[-1].cell, pbc=True)
    atoms.info["charge"] = 0.0
    return atoms


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def scan_builders(atoms: Atoms) -> Dict[str, Tuple[np.ndarray, Callable[[float], Atoms], List[int]]]:
    """Per scan: the coordinate values, a function value -> distorted box, and the moved atoms."""
    oxygens = np.nonzero(atoms.numbers == 8)[0]
    hydrogens = np.nonzero(atoms.numbers == 1)[0]
    d_ion = np.minimum(atoms.get_distances(0, oxygens, mic=True), atoms.get_distances(1, oxygens, mic=True))
    far = int(oxygens[np.argmax(d_ion)])
    v_oh = atoms.get_distance(far, far + 1, mic=True, vector=True)
    v_oh2 = atoms.get_distance(far, far + 2, mic=True, vector=True)

    def stretch(r):
        out = atoms.copy()
        out.positions[far + 1] = out.positions[far] + _unit(v_oh) * r
        return out

    bisector = _unit(_unit(v_oh) + _unit(v_oh2))
    perp = _unit(_unit(v_oh) - (_unit(v_oh) @ bisector) * bisector)

    def bend(angle_deg):
        half = np.deg2rad(angle_deg) / 2
        out = atoms.copy()
        out.positions[far + 1] = atoms.positions[far] + np.linalg.norm(v_oh) * (np.cos(half) * bisector + np.sin(half) * perp)
        out.positions[far + 2] = atoms.positions[far] + np.linalg.norm(v_oh2) * (np.cos(half) * bisector - np.sin(half) * perp)
        return out

    def rigid(anchor: int, moving_atom: int, first: int):
        vector = atoms.get_distance(anchor, moving_atom, mic=True, vector=True)

        def build(r):
            out = atoms.copy()
            out.positions[first:first + 3] += _unit(vector) * (r - np.linalg.norm(vector))
            return out
        return build

    o_na = int(oxygens[np.argmin(atoms.get_distances(0, oxygens, mic=True))])
    h_cl = int(hydrogens[np.argmin(atoms.get_distances(1, hydrogens, mic=True))])
    h_cl_o = h_cl - 1 if atoms.numbers[h_cl - 1] == 8 else h_cl - 2
    others = oxygens[oxygens != far]
    o_nb = int(others[np.argmin(atoms.get_distances(far, others, mic=True))])
    return {
        "O-H stretch": (np.linspace(0.75, 1.60, 8), stretch, [far + 1]),
        "H-O-H bend": (np.linspace(60.0, 160.0, 8), bend, [far + 1, far + 2]),
        "Na-O": (np.linspace(1.5, 3.0, 8), rigid(0, o_na, o_na), [o_na, o_na + 1, o_na + 2]),
        "Cl-H": (np.linspace(1.2, 2.6, 8), rigid(1, h_cl, h_cl_o), [h_cl_o, h_cl_o + 1, h_cl_o + 2]),
        "O-O": (np.linspace(2.0, 3.2, 8), rigid(far, o_nb, o_nb), [o_nb, o_nb + 1, o_nb + 2]),
    }


def run_scans(model, points: int = 8, progress: bool = True) -> Dict[str, Dict]:
    """Model and GFN1-xTB along every scan of :func:`scan_builders` (``points`` values each).

    Returns per scan: ``x`` (Å or deg), ``model_dE``/``xtb_dE`` (eV, relative to the undistorted
    box), ``model_F``/``xtb_F`` (eV/Å, RMS force on the moved atoms).
    """
    from hybridpot.reference_data.nacl_clusters import compute_reference

    atoms = base_box()

    def both(box):
        ref = compute_reference(box, method=METHOD, electronic_temperature=ELECTRONIC_TEMPERATURE)
        out = model(hp.AtomicSystem.from_ase(box), compute_forces=True)
        return float(out["energy"][0]), out["forces"].detach().numpy(), ref.get_potential_energy(), ref.get_forces()

    e_model0, _, e_xtb0, _ = both(atoms)
    results = {}
    for name, (values, build, moved) in scan_builders(atoms).items():
        values = np.linspace(values[0], values[-1], points)
        rows = {"x": [], "model_dE": [], "xtb_dE": [], "model_F": [], "xtb_F": []}
        for x in values:
            e_m, f_m, e_x, f_x = both(build(float(x)))
            rows["x"].append(float(x))
            rows["model_dE"].append(e_m - e_model0)
            rows["xtb_dE"].append(e_x - e_xtb0)
            rows["model_F"].append(float(np.sqrt(np.mean(f_m[moved] ** 2))))
            rows["xtb_F"].append(float(np.sqrt(np.mean(f_x[moved] ** 2))))
        results[name] = rows
        if progress:
            print(f"{name:12s} {'x':>6s} {'model dE':>9s} {'xTB dE':>9s} {'model F':>8s} {'xTB F':>8s}  (eV, eV/Å)")
            for k in range(points):
                print(f"{'':12s} {rows['x'][k]:6.2f} {rows['model_dE'][k]:+9.3f} {rows['xtb_dE'][k]:+9.3f} "
                      f"{rows['model_F'][k]:8.2f} {rows['xtb_F'][k]:8.2f}", flush=True)
    return results


def plot(results: Dict[str, Dict], path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(3.0 * len(results), 3.0), dpi=100)
    for ax, (name, rows) in zip(axes, results.items()):
        ax.plot(rows["x"], rows["xtb_dE"], "o-", label="GFN1-xTB")
        ax.plot(rows["x"], rows["model_dE"], "s--", label="model")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("deg" if "bend" in name else "Å")
        top = max(max(rows["xtb_dE"]), 0.5)
        ax.set_ylim(min(min(rows["xtb_dE"]), min(rows["model_dE"]), 0) - 0.3, min(top, 8.0) + 0.3)
    axes[0].set_ylabel("E - E(undistorted) (eV)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="saved model (default: the shipped aqueous-NaCl 4G model)")
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--output", default="runs/aqueous_nacl_scans")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = Path(args.model) if args.model else aqueous_nacl_model_path()
    model = hp.load(path)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    c0 = time.process_time()
    results = run_scans(model, args.points)
    print(f"({time.process_time() - c0:.0f} s CPU)")
    plot(results, output / "scans.png", f"1 NaCl + 32 H2O: {path.name} vs GFN1-xTB")
    with open(output / "scans.json", "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"plot: {output / 'scans.png'}")
    return results


if __name__ == "__main__":
    main()
