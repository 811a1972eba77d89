"""Parity plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["parity_plot", "learning_curve_plot"]


def parity_plot(reference: np.ndarray, predicted: np.ndarray, title: str, unit: str, path: str | Path) -> Path:
    """Scatter of predicted vs reference values with the diagonal, RMSE and MAE; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if reference.shape != predicted.shape or reference.size == 0:
        raise ValueError(f"parity plot needs equal non-empty arrays, got {reference.shape} and {predicted.shape}")
    err = predicted - reference
    rmse, mae = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    lo = float(min(reference.min(), predicted.min()))
    hi = float(max(reference.max(), predicted.max()))
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1)
    ax.scatter(reference, predicted, s=6, alpha=0.6, edgecolors="none")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"reference {title} ({unit})")
    ax.set_ylabel(f"predicted {title} ({unit})")
    ax.set_title(f"{title}: RMSE {rmse:.4g}, MAE {mae:.4g} {unit}", fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


#: quantities of a learning curve, with the factor and unit they are plotted in
_CURVES = (("energy_rmse", 1e3, "meV/atom"), ("forces_rmse", 1e3, "meV/Å"), ("charges_rmse", 1e3, "me"),
           ("stress_rmse", 1e3, "meV/Å³"), ("dipole_rmse", 1.0, "e·Å"))


def learning_curve_plot(history: list, path: str | Path) -> Path:
    """Training and validation RMSEs per epoch, one panel per quantity (log scale), saved as PNG.

    ``history`` is the trainer's list of per-epoch records (``stage``, ``epoch``,
    ``train_<q>_rmse``, ``val_<q>_rmse``); the epochs of successive stages are numbered on.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, f, u) for k, f, u in _CURVES if any(f"train_{k}" in r or f"val_{k}" in r for r in history)]
    if not panels:
        raise ValueError("learning curve: the history has no RMSE to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=120, squeeze=False)
    x = list(range(1, len(history) + 1))
    for ax, (key, factor, unit) in zip(axes[0], panels):
        for split, style in (("train", "-"), ("val", "--")):
            ys = [factor * r[f"{split}_{key}"] if f"{split}_{key}" in r else float("nan") for r in history]
            if any(y == y for y in ys):
                ax.plot(x, ys, style, label=split)
        ends = [k for k in range(1, len(history)) if history[k]["stage"] != history[k - 1]["stage"]]
        for k in ends:
            ax.axvline(k + 0.5, color="0.6", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("epoch (all stages)")
        ax.set_ylabel(f"{key.replace('_rmse', '')} RMSE ({unit})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
