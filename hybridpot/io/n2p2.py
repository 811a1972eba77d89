"""Import n2p2 neural network potentials (2G and 4G HDNNPs) as :class:`HybridPotential` s.

An n2p2 potential directory holds ``input.nn`` (settings), ``scaling.data`` (symmetry
function statistics), ``weights.ZZZ.data`` (short-range networks, ``ZZZ`` = atomic number)
and, for 4G-HDNNPs (``nnp_generation 4``), ``weightse.ZZZ.data`` (electronegativity
networks) and ``hardness.ZZZ.data`` (atomic hardness).

Conventions reproduced from n2p2 (reimplemented from its documented formulas):

* Elements are indexed in atomic-number order; each element's symmetry functions are
  sorted with n2p2's comparison (:meth:`SymmetryFunction.n2p2_sort_key`); ``scaling.data``
  rows and network inputs follow that order.
* Scaling: ``scale_symmetry_functions`` (min/max to ``[scale_min_short, scale_max_short]``,
  default ``[0, 1]``), ``center_symmetry_functions``, both, or
  ``scale_symmetry_functions_sigma``.
* Networks: ``global_hidden_layers_short``, ``global_nodes_short``,
  ``global_activation_short`` (one letter per hidden layer plus one for the output);
  weights file lines ``value a index l_s n_s l_e n_e`` / ``value b index l_e n_e``;
  ``normalize_nodes`` divides every neuron's input sum (weights and bias) by the number of
  neurons of the previous layer.
* Normalisation (``mean_energy``, ``conv_energy``, ``conv_length``): n2p2 multiplies
  positions and symmetry-function lengths alike by ``conv_length`` (so the functions do not
  change) and the networks give energies ``E_nn``; the physical energy is
  ``E_nn / conv_energy + N mean_energy``. ``atom_energy`` offsets are added per atom.
* 4G: ``chi_i`` from the electronegativity networks, charges from charge equilibration
  with Gaussian widths ``fixed_gausswidth`` and hardness ``J``:
  ``A_ii = J_i + k_e / (sigma_i sqrt(pi))``, ``A_ij = k_e erf(r_ij / (sqrt(2) gamma_ij)) / r_ij``,
  ``sum_i q_i = Q``; the short-range network takes the charge as its last input; the
  energy is ``E_short + E_elec`` with ``E_elec = sum_{i<j} k_e q_i q_j erf(r_ij/(sqrt(2)
  gamma_ij)) / r_ij * f_s(r_ij)`` (``screen_electrostatics r_in r_out [core]``; ``f_s = 1 -
  c(x)`` rises from 0 to 1 between them, ``c`` n2p2's CoreFunction, default ``c`` = cosine
  ``(cos(pi x) + 1)/2`` as in n2p2's Mode::setupElectrostatics), ``k_e = 1 / four_pi_epsilon``
  in the file's units. The charges come from the unscreened QEq matrix (as in n2p2).

Units: the files do not state their units. ``units="file"`` keeps them (positions,
energies and charges in whatever the potential was trained on); ``units="ase"`` converts to
Å and eV given the file's units (``file_units``, default Bohr and Hartree as in the n2p2
examples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from ase.data import atomic_numbers, chemical_symbols
from ase.units import Bohr, Hartree
from torch import nn

from ..atomic_nets import ElementNets, activation_from_n2p2
from ..descriptors import SymmetryFunction, SymmetryFunctions
from ..model import HybridPotential
from ..short_range import ShortRange

__all__ = ["from_n2p2", "read_n2p2_settings", "N2P2Settings", "FILE_UNITS"]

#: Unit systems of n2p2 files: (length unit in Å, energy unit in eV).
FILE_UNITS = {"bohr_hartree": (Bohr, Hartree), "angstrom_ev": (1.0, 1.0)}

# keywords that change the model and that this importer does not implement
_UNSUPPORTED = {
    "element_hidden_layers_short": "per-element network sizes",
    "element_nodes_short": "per-element network sizes",
    "element_activation_short": "per-element activations",
    "element_hidden_layers_electrostatic": "per-element network sizes",
    "element_nodes_electrostatic": "per-element network sizes",
    "element_activation_electrostatic": "per-element activations",
    "nnp_type": "the old 'nnp_type' charge-network potentials (use nnp_generation 2 or 4)",
    "conv_charge": "charge normalisation",
}
# keywords read by this importer (everything else is a training/tool option and ignored)
_MODEL_KEYWORDS = {
    "nnp_generation", "number_of_elements", "elements", "atom_energy", "cutoff_type", "symfunction_short",
    "symfunction", "scale_symmetry_functions", "center_symmetry_functions", "scale_symmetry_functions_sigma",
    "scale_min_short", "scale_max_short", "global_hidden_layers_short", "global_nodes_short",
    "global_activation_short", "global_hidden_layers_electrostatic", "global_nodes_electrostatic",
    "global_activation_electrostatic", "normalize_nodes", "mean_energy", "conv_energy", "conv_length",
    "fixed_gausswidth", "screen_electrostatics", "ewald_prec", "ewald_truncation_error_method",
    "four_pi_epsilon", "initial_hardness",
}


@dataclass
class N2P2Settings:
    """The model-relevant content of an n2p2 ``input.nn``.

    ``keywords`` maps each keyword to the list of its value strings (one per occurrence);
    ``symfunctions`` holds the symmetry-function lines (``symfunction_short`` or ``symfunction``).
    """

    keywords: Dict[str, List[str]] = field(default_factory=dict)
    symfunctions: List[str] = field(default_factory=list)
    path: str = ""

    def has(self, key: str) -> bool:
        return key in self.keywords

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        values = self.keywords.get(key)
        if not values:
            if default is None:
                raise ValueError(f"{self.path}: keyword {key!r} is missing")
            return default
        if len(values) > 1 and key not in ("atom_energy", "fixed_gausswidth", "initial_hardness"):
            raise ValueError(f"{self.path}: keyword {key!r} is given {len(values)} times")
        return values[0]


def read_n2p2_settings(path: str | Path) -> N2P2Settings:
    """Read an n2p2 ``input.nn`` file (``#`` starts a comment).

    Raises ``ValueError`` naming the keyword for model keywords this importer does not support.
    """
    path = Path(path)
    settings = N2P2Settings(path=str(path))
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        words = raw.split("#")[0].split()
        if not words:
            continue
        key, rest = words[0], " ".join(words[1:])
        if key in _UNSUPPORTED:
            raise ValueError(f"{path}, line {lineno}: keyword {key!r} ({_UNSUPPORTED[key]}) is not supported")
        if key in ("symfunction_short", "symfunction"):
            settings.symfunctions.append("symfunction_short " + rest)
            continue
        if key in _MODEL_KEYWORDS:
            settings.keywords.setdefault(key, []).append(rest)
    return settings


# ----------------------------------------------------------------------------- helpers
class _Scale(nn.Module):
    """Multiply by a constant (energy normalisation and unit conversion of a network output)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor!r}"


def _element_list(settings: N2P2Settings) -> List[int]:
    symbols = settings.get("elements").split()
    for s in symbols:
        if s not in atomic_numbers:
            raise ValueError(f"{settings.path}: unknown element {s!r} in 'elements'")
    zs = sorted(atomic_numbers[s] for s in symbols)
    n = int(settings.get("number_of_elements", str(len(zs))))
    if n != len(zs):
        raise ValueError(f"{settings.path}: number_of_elements {n} but {len(zs)} elements listed")
    return zs


def _per_element_values(settings: N2P2Settings, key: str, zs: Sequence[int]) -> Dict[int, float]:
    out = {}
    for value in settings.keywords.get(key, []):
        words = value.split()
        if len(words) < 2 or words[0] not in atomic_numbers:
            raise ValueError(f"{settings.path}: cannot read {key!r} line {value!r}")
        z = atomic_numbers[words[0]]
        if z not in zs:
            raise ValueError(f"{settings.path}: {key!r} for element {words[0]} that is not in 'elements'")
        out[z] = float(words[1])
    return out


def _scaling_mode(settings: N2P2Settings) -> Tuple[str, float, float]:
    scale, center = settings.has("scale_symmetry_functions"), settings.has("center_symmetry_functions")
    if scale and not center:
        mode = "scale"
    elif center and not scale:
        mode = "center"
    elif scale and center:
        mode = "scalecenter"
    elif settings.has("scale_symmetry_functions_sigma"):
        mode = "sigma"
    else:
        mode = "none"
    s_min = float(settings.get("scale_min_short", "0.0"))
    s_max = float(settings.get("scale_max_short", "1.0"))
    return mode, s_min, s_max


def _read_scaling(path: Path, desc: SymmetryFunctions) -> torch.Tensor:
    """Statistics ``[4, n_elements, max_features]`` (min, max, mean, sigma) from ``scaling.data``."""
    rows = []
    for raw in path.read_text().splitlines():
        words = raw.split("#")[0].split()
        if words:
            rows.append(words)
    n_el = len(desc.elements)
    stats = torch.zeros(4, n_el, desc.max_features, dtype=torch.float64)
    stats[1] = 1.0
    k = 0
    for e, n in enumerate(desc.n_features):
        for f in range(n):
            if k >= len(rows):
                raise ValueError(f"{path}: {len(rows)} rows, but the symmetry functions need {sum(desc.n_features)}")
            words = rows[k]
            if int(words[0]) != e + 1 or int(words[1]) != f + 1:
                raise ValueError(
                    f"{path}: row {k + 1} is for element index {words[0]}, function {words[1]}; "
                    f"expected {e + 1}, {f + 1} (n2p2 order)"
                )
            values = [float(w) for w in words[2:6]]
            if len(values) < 4:  # old files without sigma
                values += [0.0] * (4 - len(values))
            stats[:, e, f] = torch.tensor(values, dtype=torch.float64)
            k += 1
    # n2p2 ignores rows beyond those of the symmetry functions (RuNNer files end with
    # the energy range, two numbers): so do we, unless they look like more functions
    for words in rows[k:]:
        if len(words) >= 5:
            raise ValueError(f"{path}: {len(rows)} rows, but the symmetry functions need {k}")
    return stats


def _topology(settings: N2P2Settings, suffix: str) -> Tuple[List[int], List[str], str]:
    n_hidden = int(settings.get("global_hidden_layers" + suffix))
    nodes = [int(w) for w in settings.get("global_nodes" + suffix).split()]
    letters = settings.get("global_activation" + suffix).split()
    if len(nodes) != n_hidden or len(letters) != n_hidden + 1:
        raise ValueError(
            f"{settings.path}: inconsistent network topology for {suffix[1:]}: {n_hidden} hidden layers, "
            f"nodes {nodes}, activations {letters} (need one per hidden layer plus the output)"
        )
    return nodes, [activation_from_n2p2(a) for a in letters[:-1]], activation_from_n2p2(letters[-1])


def _load_weights(path: Path, net: nn.Sequential, normalize_nodes: bool) -> None:
    """Fill the linear layers of ``net`` from an n2p2 weights file.

    n2p2 files (``value a index l_s n_s l_e n_e`` / ``value b index l_e n_e``) are placed by
    their indices; files with one value per line (RuNNer style, as n2p2 reads them: first
    column only) are read in n2p2's connection order: layer by layer, the weights (for
    each neuron of the previous layer, all neurons of the layer), then the biases.
    """
    linears = [m for m in net if isinstance(m, nn.Linear)]
    weights = [torch.full_like(m.weight, float("nan"), dtype=torch.float64) for m in linears]
    biases = [torch.full_like(m.bias, float("nan"), dtype=torch.float64) for m in linears]
    expected = sum(w.numel() + b.numel() for w, b in zip(weights, biases))
    shape = [linears[0].in_features] + [m.out_features for m in linears]
    rows = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        words = raw.split("#")[0].split()
        if words:
            rows.append((lineno, raw, words))
    if rows and all(len(words) == 1 for _, _, words in rows):
        if len(rows) != expected:
            raise ValueError(f"{path}: {len(rows)} connections read, the network {shape} needs {expected} "
                             "(one per weight and bias)")
        values = iter(float(words[0]) for _, _, words in rows)
        for w, b in zip(weights, biases):
            for j in range(w.shape[1]):
                for k in range(w.shape[0]):
                    w[k, j] = next(values)
            for k in range(b.shape[0]):
                b[k] = next(values)
    else:
        for lineno, raw, words in rows:
            try:
                value, kind = float(words[0]), words[1]
                if kind == "a":
                    l_s, n_s, l_e, n_e = (int(w) for w in words[3:7])
                    if l_e != l_s + 1:
                        raise ValueError("weight does not connect neighbouring layers")
                    weights[l_s][n_e - 1, n_s - 1] = value
                elif kind == "b":
                    l_e, n_e = int(words[3]), int(words[4])
                    biases[l_e - 1][n_e - 1] = value
                else:
                    raise ValueError(f"connection type {kind!r} (expected a or b)")
            except (IndexError, ValueError) as err:
                raise ValueError(f"{path}, line {lineno}: cannot read connection {raw.strip()!r}: {err}") from None
        if len(rows) != expected or any(bool(torch.isnan(t).any()) for t in weights + biases):
            raise ValueError(f"{path}: {len(rows)} connections read, the network {shape} needs {expected} "
                             "(one per weight and bias)")
    with torch.no_grad():
        for m, w, b in zip(linears, weights, biases):
            if normalize_nodes:  # n2p2: (sum_j w_ij x_j + b_i) / n_prev
                w, b = w / m.in_features, b / m.in_features
            m.weight.copy_(w)
            m.bias.copy_(b)


def _symmetry_functions(settings: N2P2Settings, zs: Sequence[int], length_unit: float) -> SymmetryFunctions:
    if not settings.symfunctions:
        raise ValueError(f"{settings.path}: no symmetry functions (symfunction_short lines)")
    raw = [SymmetryFunction.from_n2p2(line) for line in settings.symfunctions]  # file units, for the order
    for f in raw:
        for z in (f.center,) + tuple(f.neighbors):
            if z not in zs:
                raise ValueError(f"{settings.path}: symmetry function for element {chemical_symbols[z]} not in 'elements'")
    order = sorted(range(len(raw)), key=lambda k: raw[k].n2p2_sort_key())
    functions = [SymmetryFunction.from_n2p2(settings.symfunctions[k], length_unit=length_unit) for k in order]
    words = settings.get("cutoff_type").split()
    cutoff_type = int(words[0])
    alpha = float(words[1]) if len(words) > 1 else 0.0
    return SymmetryFunctions(functions, cutoff_type=cutoff_type, cutoff_alpha=alpha, elements=zs)


# ----------------------------------------------------------------------------- public entry point
def from_n2p2(
    directory: str | Path,
    units: str = "file",
    file_units: str = "bohr_hartree",
    dtype: torch.dtype = torch.float64,
    accuracy: float = 1e-8,
    overrides: Optional[Dict[str, str]] = None,
    ewald: str = "converged",
) -> HybridPotential:
    """Build a :class:`HybridPotential` equal to an n2p2 potential.

    Parameters
    ----------
    directory : str or Path
        n2p2 potential directory (``input.nn``, ``scaling.data``, ``weights.ZZZ.data``; for
        4G also ``weightse.ZZZ.data`` and ``hardness.ZZZ.data``).
    units : {"file", "ase"}
        ``"file"``: positions, energies (and charges) in the units of the files;
        ``"ase"``: Å and eV, converted from ``file_units``.
    file_units : {"bohr_hartree", "angstrom_ev"}
        Units the potential was trained in (only used with ``units="ase"``). The n2p2
        examples H2O_RPBE-D3, DMABN_SCAN and the 4G examples use Bohr and Hartree,
        Cu2S_PBE uses Å and eV.
    dtype : torch.dtype
        Parameter dtype (float64 reproduces n2p2 to rounding).
    accuracy : float
        4G, periodic structures, ``ewald="converged"``: relative accuracy of the Ewald/PME sums.
        The real-space cutoff is 10 Å or, when the widest Gaussian needs more, the least cutoff
        that fits it at this accuracy (:func:`hybridpot.electrostatics.minimum_real_space_cutoff`).
    ewald : {"converged", "n2p2"}
        4G, periodic structures: ``"converged"`` sums to ``accuracy`` (the physical result), or
        ``"n2p2"``: n2p2's own truncation from the file's ``ewald_prec`` and
        ``ewald_truncation_error_method`` (:class:`hybridpot.electrostatics.N2p2EwaldTruncation`,
        Ewald sums with n2p2's per-structure eta, real-space and k-space cutoffs), which
        reproduces n2p2's outputs at that setting (e.g. its stock ``ewald_prec 1.e-5``, 3e-8
        relative away from the converged energies of the H2O_RPBE-D3_4G example).
    overrides : dict, optional
        ``input.nn`` keywords to replace, e.g. ``{"global_nodes_short": "10 10"}`` where a
        directory's settings and weight files disagree (n2p2 does not check the number of
        weights; the Carbon_chain_4G example's short-range weights fit 10-10 hidden
        layers, its input.nn says 15 15).

    Returns
    -------
    HybridPotential
        For 2G: a short-range model. For 4G: short range (with the charge input),
        charge equilibration and screened electrostatics.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such n2p2 potential directory (it holds input.nn, scaling.data and "
                                "weights.ZZZ.data)")
    if not (directory / "input.nn").is_file():
        raise FileNotFoundError(f"{directory}: no input.nn: not an n2p2 potential directory")
    if units not in ("file", "ase"):
        raise ValueError(f"units must be 'file' or 'ase', got {units!r}")
    key = file_units.lower().replace("-", "_").replace("/", "_")
    if key not in FILE_UNITS:
        raise ValueError(f"unknown file_units {file_units!r}; choose one of {sorted(FILE_UNITS)}")
    length_unit, energy_unit = FILE_UNITS[key] if units == "ase" else (1.0, 1.0)

    settings = read_n2p2_settings(directory / "input.nn")
    for keyword, value in (overrides or {}).items():
        if keyword in ("symfunction_short", "symfunction"):
            raise ValueError("symmetry functions cannot be overridden")
        settings.keywords[keyword] = [str(value)]
    generation = int(settings.get("nnp_generation", "2"))
    if generation not in (2, 4):
        raise ValueError(f"{settings.path}: nnp_generation {generation} is not supported (2 or 4)")
    if generation == 4 and units == "ase" and key == "bohr_hartree":
        # atomic units have k_e = 1 Hartree Bohr / e^2; hybridpot's k_e (torch-pme) differs from
        # ase's Hartree * Bohr by 8.8e-9 relative: take the energy unit from k_e so that the
        # imported model is exactly n2p2's (energies then differ from a conversion with ase's
        # Hartree by that factor)
        from ..electrostatics import COULOMB_CONSTANT

        energy_unit = COULOMB_CONSTANT / length_unit
    zs = _element_list(settings)

    norm_keys = [settings.has(k) for k in ("mean_energy", "conv_energy", "conv_length")]
    if any(norm_keys) and not all(norm_keys):
        raise ValueError(f"{settings.path}: use all or none of mean_energy, conv_energy, conv_length")
    normalize = all(norm_keys)
    mean_energy = float(settings.get("mean_energy", "0.0")) if normalize else 0.0
    conv_energy = float(settings.get("conv_energy", "1.0")) if normalize else 1.0
    conv_length = float(settings.get("conv_length", "1.0")) if normalize else 1.0
    if normalize and generation == 4:
        raise ValueError(f"{settings.path}: data set normalisation (mean_energy/conv_*) with nnp_generation 4 is not supported")

    # n2p2 multiplies positions and symmetry-function lengths alike by conv_length, so the
    # functions keep their file-unit values: only the unit conversion applies
    desc = _symmetry_functions(settings, zs, length_unit)
    mode, s_min, s_max = _scaling_mode(settings)
    if mode != "none":
        stats = _read_scaling(directory / "scaling.data", desc)
        desc.set_scaling(mode, *stats, s_min=s_min, s_max=s_max)

    nodes, hidden_acts, out_act = _topology(settings, "_short")
    normalize_nodes = settings.has("normalize_nodes")
    short = ShortRange(zs, desc, hidden=nodes, activation=hidden_acts, use_charges=generation == 4)
    short.nets = ElementNets(zs, short.nets.n_inputs, hidden=nodes, activation=hidden_acts, output_activation=out_act)
    short = short.to(torch.float64)  # load the weights at full precision
    offsets = _per_element_values(settings, "atom_energy", zs)
    for z in zs:
        net = short.nets.nets[str(z)]
        _load_weights(directory / f"weights.{z:03d}.data", net, normalize_nodes)
        net.append(_Scale(energy_unit / conv_energy))
        short.atomic_energy_offset[z] = (mean_energy + offsets.get(z, 0.0)) * energy_unit

    charges = electrostatics = None
    if generation == 4:
        if units != "ase":
            raise ValueError(
                "4G potentials are imported with units='ase' (hybridpot's electrostatics work in Å, eV and e); "
                "give file_units for the files' units"
            )
        if ewald not in ("converged", "n2p2"):
            raise ValueError(f"ewald must be 'converged' or 'n2p2', got {ewald!r}")
        charges, electrostatics = _build_4g_terms(settings, directory, desc, zs, length_unit, energy_unit,
                                                  normalize_nodes, accuracy, ewald)
    model = HybridPotential(short_range=short, charges=charges, electrostatics=electrostatics)
    return model.to(dtype)


# ----------------------------------------------------------------------------- 4G terms
def _ewald_truncation(settings: N2P2Settings, max_sigma: float, length_unit: float):
    """n2p2's ``ewald_truncation_error_method`` / ``ewald_prec`` as an N2p2EwaldTruncation."""
    from ..electrostatics import N2p2EwaldTruncation

    method = int(settings.get("ewald_truncation_error_method", "0"))
    if not settings.has("ewald_prec"):
        raise ValueError(f"{settings.path}: ewald='n2p2' needs the ewald_prec keyword (n2p2 requires it for "
                         "periodic 4G structures)")
    args = [float(w) for w in settings.get("ewald_prec").split()]
    if (method == 0 and len(args) != 1) or (method == 1 and not 1 <= len(args) <= 3) or method not in (0, 1):
        raise ValueError(f"{settings.path}: ewald_prec {settings.get('ewald_prec')!r} does not fit "
                         f"ewald_truncation_error_method {method} (0: one value; 1: precision [max_charge [r_cut]])")
    return N2p2EwaldTruncation(method=method, precision=args[0], max_charge=args[1] if len(args) > 1 else 1.0,
                               max_sigma=max_sigma, fixed_cutoff=args[2] if len(args) > 2 else None,
                               length_unit=length_unit)


def _build_4g_terms(settings: N2P2Settings, directory: Path, desc: SymmetryFunctions, zs: Sequence[int],
                    length_unit: float, energy_unit: float, normalize_nodes: bool, accuracy: float,
                    ewald: str = "converged"):
    import dataclasses

    from ..electrostatics import Electrostatics, minimum_real_space_cutoff
    from ..qeq import ChargeEquilibration

    four_pi_eps = float(settings.get("four_pi_epsilon", "1.0"))
    if four_pi_eps != 1.0:
        raise ValueError(f"{settings.path}: four_pi_epsilon {four_pi_eps} is not supported (only 1.0, atomic units)")
    widths = _per_element_values(settings, "fixed_gausswidth", zs)
    missing = [chemical_symbols[z] for z in zs if z not in widths]
    if missing:
        raise ValueError(f"{settings.path}: fixed_gausswidth missing for element(s) {missing}")
    hardness = {}
    for z in zs:
        path = directory / f"hardness.{z:03d}.data"
        values = [float(w) for line in path.read_text().splitlines() for w in line.split("#")[0].split()]
        if len(values) != 1:
            raise ValueError(f"{path}: expected one hardness value, found {len(values)}")
        if values[0] <= 0:
            raise ValueError(f"{path}: hardness {values[0]} must be positive")
        hardness[z] = values[0] * energy_unit  # (energy/e^2): charges are in e in both unit systems
    nodes, hidden_acts, out_act = _topology(settings, "_electrostatic")
    # the real-space cutoff must fit the widest Gaussian (the AlAuMgO_4G example has 2.27 Å)
    max_sigma = max(widths[z] for z in zs)
    real_space_cutoff = max(10.0, minimum_real_space_cutoff(max_sigma * length_unit, accuracy))
    qeq = ChargeEquilibration(zs, desc, hidden=nodes, activation=hidden_acts, solver="dense",
                              hardness=hardness, sigma={z: widths[z] * length_unit for z in zs}, learn_sigma=False,
                              accuracy=accuracy, real_space_cutoff=real_space_cutoff)
    qeq.nets = ElementNets(zs, qeq.nets.n_inputs, hidden=nodes, activation=hidden_acts, output_activation=out_act)
    qeq = qeq.to(torch.float64)
    for z in zs:
        net = qeq.nets.nets[str(z)]
        _load_weights(directory / f"weightse.{z:03d}.data", net, normalize_nodes)
        net.append(_Scale(energy_unit))  # electronegativity, energy/e
    screening = None
    if settings.has("screen_electrostatics"):
        words = settings.get("screen_electrostatics").split()
        core = words[2] if len(words) > 2 else "c"
        screening = (float(words[0]) * length_unit, float(words[1]) * length_unit, core)
    electrostatics = Electrostatics(method="auto", accuracy=accuracy, screening=screening,
                                    real_space_cutoff=real_space_cutoff)
    if ewald == "n2p2":
        # n2p2's truncated Ewald sums (per structure); an explicit Ewald sum like n2p2's
        truncation = _ewald_truncation(settings, max_sigma, length_unit)
        for term in (qeq, electrostatics):
            term.params = dataclasses.replace(term.params, truncation=truncation)
        electrostatics.method = "ewald"
        qeq.periodic_method = "ewald"
        qeq.preconditioner = "jacobi"
    return qeq, electrostatics
