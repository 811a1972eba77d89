"""Whole-model export as a metatomic ``AtomisticModel`` (metatomic-torch), for MD engines.

:func:`export_metatomic` writes a HybridPotential -- short range (2G or charge-aware 4G),
charge equilibration, electrostatics and dispersion -- as one TorchScript file that any
metatomic engine loads: metatomic's ASE calculator (metatomic-ase), i-PI, LAMMPS built with
``pair_style metatomic``, TorchSim. The model inside is :class:`hybridpot.scripted.ScriptedHybridPotential`
(traced local pieces + scripted QEq and Ewald/direct Coulomb sums; its docstring lists what is
supported and where it differs from the eager model).

The exported model

* requests one full neighbour list at the model's cutoff (Å, ``strict=False``: a Verlet skin
  is fine, longer pairs are dropped inside);
* reads the **total charge** (e) of each system from metatomic's standard per-system input
  ``"charge"`` (metatomic-ase fills it from ``atoms.info["charge"]``, default 0, as
  :class:`~hybridpot.HybridCalculator`; a system without it, e.g. from i-PI's metatomic driver,
  is neutral); models without charge equilibration request nothing;
* outputs ``"energy"`` (eV; per system, or per atom when the engine asks for
  ``sample_kind="atom"``); forces and stress are the engine's autograd of it (metatomic's
  convention), including the charges' response ``dq/dR`` (dense QEq solve, or the adjoint of
  the matrix-free CG solve);
* outputs the QEq charges as ``"hybridpot::charges"`` (per atom, e) on request;
* declares ``interaction_range`` = infinity for models with charge equilibration (the charges
  are global) and the cutoff otherwise; float64, CPU (not tried on a GPU).

``selected_atoms`` (domain decomposition) is not supported: the charge equilibration needs
every atom of the system, so an engine must give the model the whole system (one MPI rank).

Requires ``pip install 'hybridpot[metatomic]'`` (metatomic-torch, metatomic-ase).
"""

import math
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

__all__ = ["export_metatomic", "load_metatomic", "example_structure", "HAVE_METATOMIC", "METATOMIC_MISSING"]

#: the message of the ImportError when metatomic-torch is not installed
METATOMIC_MISSING = ("the metatomic export needs metatomic-torch (and metatomic-ase for the ASE calculator): "
                     "pip install 'hybridpot[metatomic]'")


try:  # the optional extra: pip install 'hybridpot[metatomic]'
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import ModelOutput, NeighborListOptions, System

    HAVE_METATOMIC = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_METATOMIC = False


def _metatomic():
    if not HAVE_METATOMIC:
        raise ImportError(METATOMIC_MISSING)
    import metatomic.torch as mta

    return mta


if HAVE_METATOMIC:

    class HybridMetatomicModel(nn.Module):
        """metatomic interface around :class:`~hybridpot.scripted.ScriptedHybridPotential`."""

        _neighbors: NeighborListOptions
        _inputs: Dict[str, ModelOutput]

        def __init__(self, core, cutoff: float, wants_charge: bool):
            super().__init__()
            self.core = core
            self._neighbors = NeighborListOptions(cutoff=float(cutoff), full_list=True, strict=False,
                                                  requestor="hybridpot")
            self._inputs = {}
            if wants_charge:
                self._inputs["charge"] = ModelOutput(quantity="", unit="e", sample_kind="system")
            self.wants_charge: bool = bool(wants_charge)

        def requested_neighbor_lists(self) -> List[NeighborListOptions]:
            return [self._neighbors]

        def requested_inputs(self) -> Dict[str, ModelOutput]:
            return self._inputs

        def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                    selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
            if selected_atoms is not None:
                raise ValueError("hybridpot's exported model needs whole systems (global charge equilibration): "
                                 "selected_atoms is not supported; run the engine on one domain")
            energies: List[torch.Tensor] = []
            charges: List[torch.Tensor] = []
            for system in systems:
                nl = system.get_neighbor_list(self._neighbors)
                samples = nl.samples.values
                i = samples[:, 0].to(torch.long)
                j = samples[:, 1].to(torch.long)
                shifts = samples[:, 2:5].to(torch.long)
                total = torch.zeros(1, dtype=system.positions.dtype, device=system.positions.device)
                # engines that do not send the total charge (i-PI's metatomic driver): neutral, as
                # HybridCalculator without atoms.info["charge"]
                if self.wants_charge and "charge" in system.known_data():
                    total = system.get_data("charge").block().values.reshape(1).to(system.positions.dtype)
                e, q = self.core(system.positions, system.types.to(torch.long), system.cell, system.pbc, i, j,
                                 shifts, total)
                energies.append(e)
                charges.append(q)
            results: Dict[str, TensorMap] = {}
            device = systems[0].positions.device if len(systems) > 0 else torch.device("cpu")
            for name, request in outputs.items():
                per_atom = request.sample_kind == "atom"
                if name == "energy":
                    values = energies
                    prop = "energy"
                elif name == "hybridpot::charges":
                    values = charges
                    prop = "charge"
                    per_atom = True
                else:
                    raise ValueError("hybridpot's exported model has no output " + name)
                if per_atom:
                    index: List[torch.Tensor] = []
                    for s, v in enumerate(values):
                        n = v.shape[0]
                        index.append(torch.stack([torch.full((n,), s, dtype=torch.int32, device=device),
                                                  torch.arange(n, dtype=torch.int32, device=device)], dim=1))
                    block = TensorBlock(values=torch.cat(values).reshape(-1, 1),
                                        samples=Labels(["system", "atom"], torch.cat(index)),
                                        components=torch.jit.annotate(List[Labels], []),
                                        properties=Labels([prop], torch.zeros(1, 1, dtype=torch.int32, device=device)))
                else:
                    totals = torch.stack([v.sum() for v in values]).reshape(-1, 1)
                    block = TensorBlock(values=totals,
                                        samples=Labels(["system"], torch.arange(len(values), dtype=torch.int32,
                                                                                device=device).reshape(-1, 1)),
                                        components=torch.jit.annotate(List[Labels], []),
                                        properties=Labels([prop], torch.zeros(1, 1, dtype=torch.int32, device=device)))
                results[name] = TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device)), [block])
            return results


def example_structure(model, n_per_element: int = 16, seed: int = 0):
    """A periodic structure with every element of ``model`` (for tracing the local pieces): a
    rattled simple-cubic arrangement at 2.6 Å spacing, the elements alternating, 4 x 4 x (2 x
    number of elements) sites. Total charge 0."""
    import numpy as np
    from ase import Atoms

    elements = model.elements
    if not elements:
        raise ValueError("the model lists no elements; pass an example structure")
    nz = 2 * len(elements)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), np.arange(nz), indexing="ij"), -1).reshape(-1, 3)
    numbers = [elements[k % len(elements)] for k in range(len(grid))]
    atoms = Atoms(numbers=numbers, positions=grid * 2.6, cell=np.array([4, 4, nz]) * 2.6, pbc=True)
    atoms.rattle(0.15, seed=seed)
    return atoms


def export_metatomic(model, path, example=None, check=None, skin: float = 1.0, name: str = "hybridpot model",
                     description: str = "") -> Path:
    """Write ``model`` as a metatomic ``AtomisticModel`` file (see the module docstring).

    Parameters
    ----------
    model : HybridPotential
        Exported in float64 (copied; the caller's model is unchanged).
    path : path
        Output file (``.pt``), loadable by metatomic engines and :func:`load_metatomic`.
    example : ase.Atoms, optional
        A structure with every element of the model, to trace the local pieces on (default:
        :func:`example_structure`).
    check : list of ase.Atoms, optional
        More structures the export must reproduce (energy, forces, stress within 1e-9 of the eager
        model, relative); :func:`hybridpot.scripted.script_model` adds a larger copy of the
        example by default.
    skin : float
        Extra neighbour range of the tracing lists (Å).

    Returns
    -------
    Path
        ``path``.
    """
    from .scripted import script_model

    mta = _metatomic()
    if example is None:
        example = example_structure(model)
    core = script_model(model, example, check=check, skin=skin)
    wants_charge = bool(core.has_charges)
    wrapper = HybridMetatomicModel(core, core.cutoff, wants_charge).eval()
    outputs = {
        "energy": mta.ModelOutput(quantity="", unit="eV", sample_kind="system"),
        "hybridpot::charges": mta.ModelOutput(quantity="", unit="e", sample_kind="atom",
                                              description="QEq charges of the 4G model (e)"),
    }
    if not wants_charge:
        del outputs["hybridpot::charges"]
    # CPU only: the traced pieces may hold device constants from tracing, and the export has not
    # run on a GPU (none lent to this work)
    devices = ["cpu"]
    capabilities = mta.ModelCapabilities(
        outputs=outputs,
        atomic_types=[int(z) for z in model.elements],
        interaction_range=math.inf if wants_charge else float(core.cutoff),
        length_unit="angstrom",
        supported_devices=devices,
        dtype="float64",
    )
    metadata = mta.ModelMetadata(name=name, description=description or (
        "hybridpot HybridPotential exported whole: " + ", ".join(model.term_names)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch 2.13: TorchScript deprecated
        atomistic = mta.AtomisticModel(wrapper, metadata, capabilities)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomistic.save(str(path))
    return path


def load_metatomic(path):
    """Load a file written by :func:`export_metatomic` (``metatomic.torch.load_atomistic_model``)."""
    mta = _metatomic()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return mta.load_atomistic_model(str(path))
