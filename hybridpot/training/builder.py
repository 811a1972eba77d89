"""Build a model from a :class:`~hybridpot.training.config.ModelConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..descriptors import SymmetryFunctions, element_number
from ..model import HybridPotential, load
from ..short_range import ShortRange
from .config import ModelConfig

__all__ = ["build_model"]


def build_model(cfg: ModelConfig, elements: Sequence[int], base_dir: str | Path = ".") -> HybridPotential:
    """A float64 model as described by ``cfg``.

    Parameters
    ----------
    cfg : ModelConfig
    elements : sequence of int
        Elements of the training data (used when ``cfg.elements`` is not set).
    base_dir : path
        Directory relative paths in ``cfg`` are resolved against.

    ``kind: 2G`` gives ``HybridPotential(short_range=ShortRange(...))``; ``kind: 4G`` adds
    ``ChargeEquilibration`` (sharing the symmetry functions), ``Electrostatics`` and a
    short range with the atomic charge as an extra input. ``dispersion`` (a mapping of
    ``Dispersion`` keyword arguments) adds a dispersion term to either kind.
    """
    base = Path(base_dir)
    if cfg.from_file is not None:
        path = Path(cfg.from_file)
        return load(path if path.is_absolute() else base / path).to(torch.float64)
    zs = sorted({element_number(e) for e in (cfg.elements if cfg.elements else elements)})
    if not zs:
        raise ValueError("no elements to build a model for")
    if cfg.symfunctions is not None:
        path = Path(cfg.symfunctions)
        path = path if path.is_absolute() else base / path
        descriptor = SymmetryFunctions.from_n2p2(path.read_text(), elements=zs)
    else:
        descriptor = SymmetryFunctions.default(zs, r_cut=cfg.cutoff, n_radial=cfg.n_radial,
                                               angular_etas=tuple(cfg.angular_etas), zetas=tuple(cfg.zetas))
    kind = cfg.kind.upper()
    terms = {}  # name -> term, in the order the model evaluates them (charge model first)
    if kind == "4G":
        try:
            from ..electrostatics import Electrostatics
            from ..qeq import ChargeEquilibration
        except ImportError as err:  # pragma: no cover - depends on the installed version
            raise ValueError(f"a 4G model needs hybridpot.qeq and hybridpot.electrostatics: {err}") from err
        # one Coulomb configuration (model.coulomb) for both QEq and the electrostatics
        terms["charges"] = ChargeEquilibration(zs, descriptor, hidden=tuple(cfg.charge_hidden),
                                               **{**cfg.charge_options, **cfg.coulomb})
    elif kind != "2G":
        raise ValueError(f"model kind must be '2G' or '4G', got {cfg.kind!r}")
    terms["short_range"] = ShortRange(zs, descriptor, hidden=tuple(cfg.hidden), activation=cfg.activation,
                                      use_charges=kind == "4G")
    if kind == "4G":
        terms["electrostatics"] = Electrostatics(**{**cfg.electrostatics, **cfg.coulomb})
    if cfg.dispersion is not None:
        from ..dispersion import Dispersion

        terms["dispersion"] = Dispersion(zs, **cfg.dispersion)
    return HybridPotential(terms=terms).to(torch.float64)
