"""Datasets shipped with hybridpot (see README.md in this folder for how they were made)."""

from __future__ import annotations

from pathlib import Path
from typing import List

__all__ = ["DATA_DIR", "nacl_clusters_path", "load_nacl_clusters", "molten_nacl_path", "load_molten_nacl", "molten_nacl_model_path",
           "molten_nacl_model_md_path"]

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


def molten_nacl_path() -> Path:
    """Path of the periodic molten-NaCl dataset (compressed extended XYZ, GFN1-xTB)."""
    return DATA_DIR / "molten_nacl.extxyz.gz"


def molten_nacl_model_md_path() -> Path:
    """Path of the active-learning frames: GFN1-xTB labels of the round-0 melt model's own MD."""
    return DATA_DIR / "molten_nacl_model_md.extxyz.gz"


def load_molten_nacl(include_model_md: bool = True) -> List:
    """The periodic molten-NaCl dataset (:mod:`hybridpot.reference_data.molten_salt`) as ``ase.Atoms``.

    64-ion boxes of liquid NaCl (Tosi–Fumi MD snapshots at 1.40-1.70 g/cm^3 and 1100-2500 K),
    rattled rock-salt crystals and (``include_model_md``) snapshots of a trained model's own melt
    MD (active learning, ``info["source"]`` starting with ``"model md"``), each with GFN1-xTB
    energy (eV), forces (eV/Å), stress (eV/Å^3) and charges (e).
    """
    import ase.io

    images = ase.io.read(str(molten_nacl_path()), index=":", format="extxyz")
    if include_model_md and molten_nacl_model_md_path().exists():
        images += ase.io.read(str(molten_nacl_model_md_path()), index=":", format="extxyz")
    return images


def molten_nacl_model_path() -> Path:
    """Path of the shipped 4G model trained on the NaCl clusters and the molten-NaCl data
    (made by ``examples/train_molten_nacl.py``; load with ``hybridpot.load``)."""
    return DATA_DIR / "molten_nacl_4G.pt"


# ---------------------------------------------------------------- aqueous NaCl
__all__ += ["aqueous_nacl_path", "aqueous_nacl_model_md_path", "aqueous_nacl_distorted_path", "load_aqueous_nacl",
            "aqueous_nacl_model_path", "aqueous_nacl_contacts_path", "aqueous_nacl_breakdown_paths"]


def aqueous_nacl_path() -> Path:
    """Path of the aqueous-NaCl dataset (1 NaCl + 32 H2O boxes, GFN1-xTB; compressed extended XYZ)."""
    return DATA_DIR / "aqueous_nacl.extxyz.gz"


def aqueous_nacl_model_md_path() -> Path:
    """Path of the aqueous-NaCl active-learning frames (GFN1-xTB labels of the round-0 model's own MD)."""
    return DATA_DIR / "aqueous_nacl_model_md.extxyz.gz"


def aqueous_nacl_distorted_path() -> Path:
    """Path of the aqueous-NaCl boxes with close H-H contacts (bent and approaching waters, GFN1-xTB)."""
    return DATA_DIR / "aqueous_nacl_distorted.extxyz.gz"


def aqueous_nacl_contacts_path() -> Path:
    """Path of the aqueous-NaCl boxes with close Na-O, O-O, O-H and Cl-H contacts (GFN1-xTB)."""
    return DATA_DIR / "aqueous_nacl_contacts.extxyz.gz"


def aqueous_nacl_breakdown_paths() -> List[Path]:
    """Paths of the aqueous-NaCl active-learning rounds on the models' way to a defect, in order."""
    return sorted(DATA_DIR.glob("aqueous_nacl_breakdown_r*.extxyz.gz"))


def load_aqueous_nacl(include_model_md: bool = True, include_distorted: bool = True,
                      include_contacts: bool = True) -> List:
    """The aqueous-NaCl dataset (:mod:`hybridpot.reference_data.aqueous_nacl`) as ``ase.Atoms``.

    Periodic 98-atom boxes (Na, Cl, then O H H per water; total charge 0) from GFN1-xTB Langevin MD
    at 300-400 K with the ion pair in contact and separated, rattled copies,
    (``include_model_md``) frames of a trained model's own MD (``info["source"]`` starting with
    ``"model md"``), (``include_distorted``) boxes with close H-H contacts (``"distorted waters"``) and
    (``include_contacts``) boxes with close ion-water and H-bond contacts (``"contact"``) and the
    active-learning rounds of frames just before a model's MD defect (``"model breakdown"``);
    each with GFN1-xTB energy (eV), forces (eV/Å), stress (eV/Å^3) and Mulliken
    charges (e) at a 300 K electronic temperature.
    """
    import ase.io

    images = ase.io.read(str(aqueous_nacl_path()), index=":", format="extxyz")
    if include_model_md and aqueous_nacl_model_md_path().exists():
        images += ase.io.read(str(aqueous_nacl_model_md_path()), index=":", format="extxyz")
    if include_distorted and aqueous_nacl_distorted_path().exists():
        images += ase.io.read(str(aqueous_nacl_distorted_path()), index=":", format="extxyz")
    if include_contacts:
        for path in [aqueous_nacl_contacts_path()] + aqueous_nacl_breakdown_paths():
            if path.exists():
                images += ase.io.read(str(path), index=":", format="extxyz")
    return images


def aqueous_nacl_model_path() -> Path:
    """Path of the shipped 4G model of aqueous NaCl (made by ``examples/train_aqueous_nacl.py``)."""
    return DATA_DIR / "aqueous_nacl_4G.pt"


# ---------------------------------------------------------------- ethylammonium nitrate (EAN)
def ethylammonium_nitrate_path() -> Path:
    """Path of the EAN ionic-liquid dataset (GFN1-xTB, 4-ion-pair boxes; compressed extended XYZ)."""
    return DATA_DIR / "ethylammonium_nitrate.extxyz.gz"


def ethylammonium_nitrate_model_md_path() -> Path:
    """Path of the EAN active-learning frames (the round-0 model's own MD, labelled with GFN1-xTB)."""
    return DATA_DIR / "ethylammonium_nitrate_model_md.extxyz.gz"


def ethylammonium_nitrate_model_md_round2_path() -> Path:
    """Path of the second EAN active-learning round (relaxations and MD of the round-1 model, GFN1-xTB)."""
    return DATA_DIR / "ethylammonium_nitrate_model_md_round2.extxyz.gz"


def ethylammonium_nitrate_model_path() -> Path:
    """Path of the shipped 4G EAN model (``examples/train_ethylammonium_nitrate.py``; ``hybridpot.load``)."""
    return DATA_DIR / "ethylammonium_nitrate_4G.pt"


def load_ethylammonium_nitrate(include_model_md: bool = True) -> List:
    """The EAN dataset (:mod:`hybridpot.reference_data.ethylammonium_nitrate`) as ``ase.Atoms``.

    Periodic boxes of 4 [CH3CH2NH3][NO3] ion pairs (60 atoms) with GFN1-xTB energy (eV), forces
    (eV/Å), stress (eV/Å^3) and Mulliken charges (e); ``info["fragments"]`` and
    ``info["fragment_charges"]`` (each ion +1 or -1, for QEq) are rebuilt from the per-atom
    ``arrays["ion"]``. ``include_model_md``: add the active-learning frames (both rounds).
    """
    from ..reference_data.ethylammonium_nitrate import load_ean

    images = load_ean(ethylammonium_nitrate_path())
    if include_model_md:
        for path in (ethylammonium_nitrate_model_md_path(), ethylammonium_nitrate_model_md_round2_path()):
            if path.exists():
                images += load_ean(path)
    return images


__all__ += ["ethylammonium_nitrate_path", "ethylammonium_nitrate_model_md_path", "ethylammonium_nitrate_model_path",
            "ethylammonium_nitrate_model_md_round2_path", "load_ethylammonium_nitrate"]
