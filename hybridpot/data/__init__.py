"""Datasets shipped with hybridpot (see README.md in this folder for how they were made)."""

from __future__ import annotations

from pathlib import Path
from typing import List

__all__ = ["DATA_DIR", "nacl_clusters_path", "load_nacl_clusters"]

DATA_DIR = Path(__file__).resolve().parent


def nacl_clusters_path() -> Path:
    """Path of the NaCl-clusters dataset (compressed extended XYZ)."""
    return DATA_DIR / "nacl_clusters.extxyz.gz"


def load_nacl_clusters(source: str | None = None) -> List:
    """The NaCl-clusters dataset as a list of ``ase.Atoms`` with reference results.

    Each structure has energy (eV), forces (eV/Å) and charges (e) in a
    ``SinglePointCalculator`` and the total charge in ``info["charge"]``.

    Parameters
    ----------
    source : str, optional
        Keep only structures whose ``info["source"]`` starts with this (e.g. ``"dimer_scan"``,
        ``"md"``, ``"rattle"``, ``"relaxed"``, ``"random"``).
    """
    import ase.io

    images = ase.io.read(str(nacl_clusters_path()), index=":", format="extxyz")
    if source is not None:
        images = [a for a in images if str(a.info.get("source", "")).startswith(source)]
    return images
