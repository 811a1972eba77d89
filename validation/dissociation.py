"""Dimer dissociation curves against GFN1-xTB: 2G vs 4G beyond the short-range cutoff.

Usage::

    python validation/dissociation.py --models runs/hybridpot_demo [--output dissociation_validation]
    python validation/dissociation.py              # trains the demo's models first (about 10 min)

``--models`` is a folder with ``model_2G.pt`` and ``model_4G.pt`` as written by ``hybridpot demo``;
without it the demo is run first (``--quick``: the demo's smoke-test models, not accurate).

Curves:

* NaCl, total charge 0: reference = the shipped GFN1-xTB dimer scan (60 points, 1.8-10 Å,
  3000 K electronic temperature; ``hybridpot/data/README.md``), part of the demo's training data;
* NaCl+, total charge +1 (the charged pair; doublet): not in the shipped data (the models never
  saw it); its reference is computed here with tblite, same method and settings
  (:func:`hybridpot.reference.compute_reference`), at the same 60 distances. Without tblite
  (``pip install 'hybridpot[reference]'``) this curve is skipped. For NaCl+ the 4G model is also
  evaluated with fragment constraints Na(+1) + Cl(0).

The table gives, per curve and model, the absolute energy error against the reference (eV):
RMSE over all points, RMSE and max |error| beyond the short-range cutoff, and the RMSE beyond the
cutoff after removing the mean error there ("shape": how well the long-range tail is followed,
independent of a constant offset). Beyond the cutoff a 2G model is a constant (the sum of the two
atomic energies), so its shape error is the reference's own variation there; a 4G model can follow
the Coulomb tail through its charges. A PNG shows the curves and the charges of Na.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def model_curve(model, r: np.ndarray, charge: float = 0.0, fragments=None, fragment_charges=None):
    """Energies (eV) and Na charges (e, nan without a charge model) of Na-Cl at distances ``r`` (Å)."""
    from ase import Atoms

    from hybridpot import HybridCalculator

    calc = HybridCalculator(model, skin=0.0, fragments=fragments, fragment_charges=fragment_charges)
    e, q = [], []
    for x in r:
        atoms = Atoms("NaCl", positions=[[0.0, 0.0, 0.0], [float(x), 0.0, 0.0]])
        atoms.info["charge"] = charge
        atoms.calc = calc
        e.append(atoms.get_potential_energy())
        q.append(atoms.get_charges()[0] if model.charges is not None else np.nan)
    return np.array(e), np.array(q)


def reference_curves(with_charged: bool = True) -> Dict[str, Dict[str, np.ndarray]]:
    """Reference NaCl (shipped) and, if tblite is installed, NaCl+ (computed) dimer scans."""
    from hybridpot.data import load_nacl_clusters

    scan = sorted((a for a in load_nacl_clusters() if a.info.get("source") == "dimer_scan"),
                  key=lambda a: a.get_distance(0, 1))
    refs = {"NaCl (Q=0)": {
        "charge": 0.0,
        "r": np.array([a.get_distance(0, 1) for a in scan]),
        "energy": np.array([a.get_potential_energy() for a in scan]),
        "q_na": np.array([a.get_charges()[0] for a in scan]),
    }}
    if with_charged:
        try:
            from hybridpot.reference import compute_reference, require_tblite

            require_tblite()
        except ImportError:
            print("tblite not installed: the NaCl+ reference curve is skipped")
            return refs
        r = refs["NaCl (Q=0)"]["r"]
        from ase import Atoms

        labelled = [compute_reference(Atoms("NaCl", positions=[[0, 0, 0], [x, 0, 0]]), charge=1.0) for x in r]
        refs["NaCl+ (Q=+1)"] = {
            "charge": 1.0,
            "r": r,
            "energy": np.array([a.get_potential_energy() for a in labelled]),
            "q_na": np.array([a.get_charges()[0] for a in labelled]),
        }
    return refs


def errors(e_model: np.ndarray, e_ref: np.ndarray, beyond: np.ndarray) -> Dict[str, float]:
    """RMSE (all), RMSE / max |err| / offset-free RMSE beyond the cutoff (eV)."""
    err = e_model - e_ref
    out = {"rmse_all_eV": float(np.sqrt(np.mean(err**2)))}
    if beyond.any():
        eb = err[beyond]
        out.update(rmse_beyond_eV=float(np.sqrt(np.mean(eb**2))), max_beyond_eV=float(np.abs(eb).max()),
                   shape_rmse_beyond_eV=float(np.sqrt(np.mean((eb - eb.mean()) ** 2))))
    else:
        out.update(rmse_beyond_eV=float("nan"), max_beyond_eV=float("nan"), shape_rmse_beyond_eV=float("nan"))
    return out


def format_table(rows: List[Dict[str, object]], cutoff: float, n_beyond: int) -> str:
    lines = [f"Energy error vs GFN1-xTB (eV); 'beyond' = {n_beyond} points with r > {cutoff:g} Å (short-range cutoff)",
             f"{'curve':14s} {'model':28s} {'RMSE all':>9s} {'RMSE beyond':>12s} {'max beyond':>11s} "
             f"{'shape beyond':>13s} {'q_Na(10 Å)':>10s}"]
    for row in rows:
        lines.append(f"{row['curve']:14s} {row['model']:28s} {row['rmse_all_eV']:9.3f} {row['rmse_beyond_eV']:12.3f} "
                     f"{row['max_beyond_eV']:11.3f} {row['shape_rmse_beyond_eV']:13.3f} {row['q_na_last']:10.3f}")
    return "\n".join(lines)


def main(argv=None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description="NaCl and NaCl+ dissociation: 2G vs 4G against GFN1-xTB")
    parser.add_argument("--models", default=None, help="folder with model_2G.pt and model_4G.pt (demo output)")
    parser.add_argument("--output", default="dissociation_validation")
    parser.add_argument("--quick", action="store_true", help="train the demo's quick models when no --models")
    parser.add_argument("--no-charged", action="store_true", help="skip the NaCl+ curve (needs tblite)")
    parser.add_argument("--points", type=int, default=None, help="use every k-th reference point only (tests)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import hybridpot as hp

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from md_stability import get_models_dir  # same folder

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    folder = get_models_dir(args.models, output, args.quick)
    models = {kind: hp.load(folder / f"model_{kind}.pt") for kind in ("2G", "4G")}
    cutoff = float(models["4G"].short_range.cutoff)
    refs = reference_curves(with_charged=not args.no_charged)
    if args.points:
        for ref in refs.values():
            for k in ("r", "energy", "q_na"):
                ref[k] = ref[k][:: args.points]

    rows: List[Dict[str, object]] = []
    fig, axes = plt.subplots(2, len(refs), figsize=(5.5 * len(refs), 7), dpi=120, sharex=True, squeeze=False)
    for col, (name, ref) in enumerate(refs.items()):
        r, e_ref = ref["r"], ref["energy"]
        beyond = r > cutoff
        variants = [("2G", models["2G"], {}), ("4G (QEq)", models["4G"], {})]
        if ref["charge"] == 1.0:
            variants.append(("4G, fragments Na(+1)+Cl(0)", models["4G"],
                             {"fragments": [[0], [1]], "fragment_charges": [1.0, 0.0]}))
        ax_e, ax_q = axes[0, col], axes[1, col]
        shift = e_ref[-1]
        ax_e.plot(r, e_ref - shift, "ko", ms=3, label="GFN1-xTB")
        ax_q.plot(r, ref["q_na"], "ko", ms=3, label="GFN1-xTB (Mulliken)")
        for label, model, kw in variants:
            e, q = model_curve(model, r, charge=ref["charge"], **kw)
            row = {"curve": name, "model": label, **errors(e, e_ref, beyond), "q_na_last": float(q[-1])}
            rows.append(row)
            y_low = min(-4.0, (e_ref - shift).min() - 0.5)
            off = e - shift
            if np.all(off > 3.0) or np.all(off < y_low):
                label = f"{label} (off scale: {np.mean(e - e_ref):+.1f} eV from the reference)"
            line, = ax_e.plot(r, off, label=label)
            if not np.all(np.isnan(q)):
                ax_q.plot(r, q, color=line.get_color(), label=label)
        for ax in (ax_e, ax_q):
            ax.axvline(cutoff, color="0.6", lw=0.8, ls=":")
        ax_e.set_title(name)
        ax_e.set_ylabel("E - E_ref(10 Å) (eV)")
        ax_e.set_ylim(min(-4.0, (e_ref - shift).min() - 0.5), 3.0)
        ax_e.legend(fontsize=7)
        ax_q.set_ylabel("charge of Na (e)")
        ax_q.set_xlabel("Na-Cl distance (Å)")
        ax_q.legend(fontsize=7)
    fig.tight_layout()
    png = output / "dissociation_2g_vs_4g.png"
    fig.savefig(png)
    plt.close(fig)
    n_beyond = int((next(iter(refs.values()))["r"] > cutoff).sum())
    table = format_table(rows, cutoff, n_beyond)
    print(table)
    print(f"plot: {png}")
    with open(output / "results.json", "w") as fh:
        json.dump({"rows": rows, "table": table, "png": str(png)}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
