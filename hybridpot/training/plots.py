"""Parity plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["parity_plot"]


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
