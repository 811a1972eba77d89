"""Model files that cannot run code: a versioned JSON architecture plus a plain dict of tensors.

A model file (``hybridpot.save``) is a ``torch.save`` archive of one plain dict::

    {"format": "hybridpot-model", "format_version": 1, "hybridpot_version": "0.1.0",
     "architecture": "<JSON text>", "tensors": {state-dict name: tensor}}

read back with ``torch.load(..., weights_only=True)``: torch's restricted unpickler, which
accepts only tensors, numbers, strings and containers of them, so a file cannot execute code
on load (a crafted file is refused before any object is built). The architecture is JSON:
each term as its class name (looked up in the table of codecs below, never imported by name
from the file) and its constructor options; symmetry functions as their n2p2
``symfunction_short`` lines (:meth:`SymmetryFunctions.to_n2p2`), so the description does not
depend on descriptor internals; networks as their layer lists. The model is rebuilt from the
architecture and its tensors loaded with ``load_state_dict(strict=True, assign=True)``, so
every parameter and buffer keeps its saved dtype and value: bit-exact.

Why ``torch.save`` with ``weights_only`` rather than safetensors: no new dependency, the
same ``.pt`` files and one mechanism for models and training checkpoints (optimiser states
are nested dicts of tensors and numbers, which safetensors cannot hold without flattening).
torch's weights-only unpickler is the documented safe loader of torch >= 2.6 (the project
pins 2.13).

Old files (a pickled ``HybridPotential``, before format version 1) load only with
``trust_pickle=True`` and a warning; re-save them with :func:`save_model`.

Adding a term: register an :class:`Codec` for its class with :func:`register_codec` (or give
the class ``architecture(self, context) -> dict`` and a classmethod
``from_architecture(spec, context)``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFileError",
    "UntrustedFileError",
    "Codec",
    "register_codec",
    "save_model",
    "load_model",
    "read_architecture",
    "safe_torch_load",
]

FORMAT = "hybridpot-model"
#: version of the architecture description; readers refuse newer versions
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model or checkpoint file cannot be read; the message names the file and what to do."""


class UntrustedFileError(ModelFileError):
    """The file holds pickled Python objects (an old-format model or a crafted file): not loaded."""


# ---------------------------------------------------------------------------- safe torch.load
def _describe_torch_load_error(path: Path, err: Exception) -> str:
    size = path.stat().st_size
    if size == 0:
        return f"{path}: the file is empty (0 bytes); it was not written completely: save or copy it again"
    with open(path, "rb") as fh:
        head = fh.read(4)
    first = str(err).splitlines()[0] if str(err) else ""
    if head.startswith(b"PK") or head[:1] == b"\x80":  # a torch zip archive or a pickle stream
        return (f"{path}: the file is truncated or corrupted ({size} bytes; {type(err).__name__}: {first}); "
                "save or copy it again")
    return (f"{path}: not a hybridpot/torch file (it starts with {head!r}; a model file is written by "
            "hybridpot.save or hybridpot train)")


def safe_torch_load(path, map_location="cpu", what: str = "model file"):
    """``torch.load(path, weights_only=True)`` with hybridpot errors.

    Raises
    ------
    FileNotFoundError
        No such file.
    UntrustedFileError
        The file holds pickled Python objects beyond tensors and plain containers (nothing
        of it is executed).
    ModelFileError
        Empty, truncated, corrupted or not a torch file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a {what}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols other than its own before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Unsupported global" in text or "GLOBAL" in text or "Unsupported operand" in text:
            advice = ("If you trust the file, load it with hybridpot.load(path, trust_pickle=True) and re-save it "
                      "with hybridpot.save" if what == "model file" else
                      "Checkpoints of older hybridpot versions cannot be resumed: start the run again without "
                      "--resume (or train from its model.pt with model.from_file)")
            raise UntrustedFileError(
                f"{path}: refused: the {what} contains pickled Python objects, which could run code when "
                f"loaded (an old-format hybridpot file or a file from an untrusted source); nothing was "
                f"executed. {advice}"
            ) from None
        raise ModelFileError(_describe_torch_load_error(path, err)) from None
    except Exception as err:  # noqa: BLE001 - a damaged file makes the unpickler raise almost anything
        raise ModelFileError(_describe_torch_load_error(path, err)) from None


# ---------------------------------------------------------------------------- codecs
@dataclass
class Codec:
    """How one module class is written to and rebuilt from JSON.

    ``encode(module, context) -> dict`` (JSON-able constructor options; tensors come from the
    state dict) and ``decode(spec, context) -> module`` (a module of the same structure, whose
    tensors are then loaded).
    """

    cls_name: str
    encode: Callable
    decode: Callable


_CODECS: Dict[str, Codec] = {}


def register_codec(cls_name: str, encode: Callable, decode: Callable) -> None:
    """Register how a term class (by class name) is saved and rebuilt."""
    _CODECS[cls_name] = Codec(cls_name, encode, decode)


class _Context:
    """Shared modules (a descriptor used by two terms) are written once and referenced."""

    def __init__(self, descriptors: Optional[List] = None):
        self.descriptors: List = descriptors if descriptors is not None else []
        self._ids: Dict[int, int] = {}

    def descriptor_ref(self, descriptor) -> int:
        key = id(descriptor)
        if key not in self._ids:
            self._ids[key] = len(self.descriptors)
            self.descriptors.append(descriptor)
        return self._ids[key]


def encode_module(module: nn.Module, context: _Context) -> dict:
    name = type(module).__name__
    if hasattr(module, "architecture") and callable(module.architecture):
        return {"class": name, **module.architecture(context)}
    if name not in _CODECS:
        raise ValueError(
            f"cannot save a module of class {name}: the model file format knows {sorted(_CODECS)}; register "
            "one with hybridpot.serialization.register_codec"
        )
    return {"class": name, **_CODECS[name].encode(module, context)}


def decode_module(spec: dict, context: _Context) -> nn.Module:
    name = spec.get("class")
    if name not in _CODECS:
        raise ValueError(f"unknown module class {name!r} in the architecture (known: {sorted(_CODECS)})")
    return _CODECS[name].decode(spec, context)


def _params_dict(module) -> Optional[dict]:
    params = getattr(module, "params", None)
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else None


def _restore_params(module, stored: Optional[dict]) -> None:
    """Keep the saved range-separation parameters exactly (they are derived from the options)."""
    params = getattr(module, "params", None)
    if stored is not None and dataclasses.is_dataclass(params):
        module.params = type(params)(**stored)


# --- networks
def _layer_spec(layer: nn.Module) -> dict:
    from .atomic_nets import ACTIVATIONS
    from .io.n2p2 import _Scale

    if isinstance(layer, nn.Linear):
        return {"type": "linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, _Scale):
        return {"type": "scale", "factor": layer.factor}
    for key, cls in ACTIVATIONS.items():
        if type(layer) is cls:
            return {"type": "activation", "name": key}
    raise ValueError(f"cannot save network layer {type(layer).__name__}")


def _layer(spec: dict) -> nn.Module:
    from .atomic_nets import make_activation
    from .io.n2p2 import _Scale

    kind = spec["type"]
    if kind == "linear":
        return nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec["bias"]))
    if kind == "scale":
        return _Scale(float(spec["factor"]))
    if kind == "activation":
        return make_activation(str(spec["name"]))
    raise ValueError(f"unknown layer type {kind!r}")


def _encode_nets(nets, context) -> dict:
    return {
        "elements": list(nets.elements),
        "n_inputs": {str(z): int(n) for z, n in nets.n_inputs.items()},
        "hidden": list(nets.hidden),
        "activations": list(nets.activations),
        "n_outputs": int(nets.n_outputs),
        "output_activation": nets.output_activation,
        "layers": {z: [_layer_spec(layer) for layer in seq] for z, seq in nets.nets.items()},
    }


def _decode_nets(spec, context):
    from .atomic_nets import ElementNets

    nets = ElementNets(spec["elements"], {int(z): int(n) for z, n in spec["n_inputs"].items()},
                       hidden=tuple(spec["hidden"]), activation=list(spec["activations"]),
                       n_outputs=int(spec["n_outputs"]), output_activation=spec["output_activation"])
    for z, layers in spec["layers"].items():
        nets.nets[z] = nn.Sequential(*[_layer(s) for s in layers])
    return nets


register_codec("ElementNets", _encode_nets, _decode_nets)


# --- descriptors: through their public n2p2 lines
def _encode_descriptor(desc) -> dict:
    return {"n2p2": list(desc.to_n2p2()), "cutoff_type": int(desc.cutoff_type), "cutoff_alpha": desc.cutoff_alpha,
            "elements": list(desc.elements)}


def _decode_descriptor(spec):
    from .descriptors import SymmetryFunctions

    return SymmetryFunctions.from_n2p2(spec["n2p2"], cutoff_type=spec["cutoff_type"], cutoff_alpha=spec["cutoff_alpha"],
                                       elements=spec["elements"])


# --- terms
def _encode_short_range(m, context) -> dict:
    return {"elements": list(m.elements), "descriptor": context.descriptor_ref(m.descriptor),
            "use_charges": bool(m.use_charges), "nets": _encode_nets(m.nets, context)}


def _decode_short_range(spec, context):
    from .short_range import ShortRange

    nets = _decode_nets(spec["nets"], context)
    m = ShortRange(spec["elements"], context.descriptors[spec["descriptor"]], hidden=nets.hidden,
                   activation=list(nets.activations), use_charges=spec["use_charges"])
    m.nets = nets
    return m


register_codec("ShortRange", _encode_short_range, _decode_short_range)

_QEQ_OPTIONS = ("solver", "cg_tol", "cg_maxiter", "periodic_method", "matrix_free_min_atoms", "preconditioner",
                "warm_start", "kspace_precision", "coarse_tol", "real_space_cutoff", "training_charge_range")


def _encode_qeq(m, context) -> dict:
    options = {k: getattr(m, k) for k in _QEQ_OPTIONS if hasattr(m, k)}
    if dataclasses.is_dataclass(getattr(m, "params", None)):
        options["accuracy"] = m.params.accuracy
        options["interpolation_nodes"] = m.params.interpolation_nodes
    return {"elements": list(m.elements), "descriptor": context.descriptor_ref(m.descriptor),
            "learn_sigma": isinstance(m.raw_sigma, nn.Parameter), "options": options,
            "params": _params_dict(m), "nets": _encode_nets(m.nets, context)}


def _decode_qeq(spec, context):
    from .qeq import ChargeEquilibration

    nets = _decode_nets(spec["nets"], context)
    # hardness and widths are placeholders: the saved raw values come with the tensors
    m = ChargeEquilibration(spec["elements"], context.descriptors[spec["descriptor"]], hidden=nets.hidden,
                            activation=list(nets.activations), learn_sigma=spec["learn_sigma"], **spec["options"])
    m.nets = nets
    _restore_params(m, spec.get("params"))
    return m


register_codec("ChargeEquilibration", _encode_qeq, _decode_qeq)


def _encode_fixed(m, context) -> dict:
    return {"point_charges": bool(m.point_charges)}


def _decode_fixed(spec, context):
    from .qeq import FixedCharges

    m = FixedCharges(sigma=None if spec["point_charges"] else 1.0)  # the width table comes with the tensors
    m.point_charges = bool(spec["point_charges"])
    return m


register_codec("FixedCharges", _encode_fixed, _decode_fixed)


def _encode_electrostatics(m, context) -> dict:
    options = {"method": m.method, "accuracy": m.accuracy, "real_space_cutoff": m.real_space_cutoff,
               "screening": None if m.screening is None else list(m.screening),
               "ewald_max_atoms": m.ewald_max_atoms}
    if dataclasses.is_dataclass(getattr(m, "params", None)):
        options["interpolation_nodes"] = m.params.interpolation_nodes
    return {"options": options, "params": _params_dict(m)}


def _decode_electrostatics(spec, context):
    from .electrostatics import Electrostatics

    options = dict(spec["options"])
    if options.get("screening") is not None:
        options["screening"] = tuple(options["screening"])
    m = Electrostatics(**options)
    _restore_params(m, spec.get("params"))
    return m


register_codec("Electrostatics", _encode_electrostatics, _decode_electrostatics)


def _encode_dispersion(m, context) -> dict:
    return {"elements": list(m.elements), "damping": m.damping, "cutoff": m.cutoff, "switch_width": m.switch_width,
            "radius_scale": m.radius_scale, "d": m.d, "tail_correction": m.tail_correction,
            "learnable_scale": isinstance(m.scale, nn.Parameter),
            "c6": {str(z): float(m.c6[z]) for z in m.elements}, "r0": {str(z): float(m.r0[z]) for z in m.elements}}


def _decode_dispersion(spec, context):
    from .dispersion import Dispersion

    return Dispersion(spec["elements"], damping=spec["damping"], cutoff=spec["cutoff"], switch_width=spec["switch_width"],
                      radius_scale=spec["radius_scale"], d=spec["d"], tail_correction=spec["tail_correction"],
                      learnable_scale=spec["learnable_scale"], c6={int(z): v for z, v in spec["c6"].items()},
                      r0={int(z): v for z, v in spec["r0"].items()})


register_codec("Dispersion", _encode_dispersion, _decode_dispersion)


def _encode_repulsion(m, context) -> dict:
    return {"pairs": [[a, b, rc, eps] for (a, b), (rc, eps) in m.pairs.items()]}


def _decode_repulsion(spec, context):
    from .repulsion import PairRepulsion

    return PairRepulsion({(int(a), int(b)): float(rc) for a, b, rc, _ in spec["pairs"]},
                         {(int(a), int(b)): float(eps) for a, b, _, eps in spec["pairs"]})


register_codec("PairRepulsion", _encode_repulsion, _decode_repulsion)


def _encode_model(m, context) -> dict:
    return {"terms": [[name, encode_module(term, context)] for name, term in m.terms().items()]}


def _decode_model(spec, context):
    from .model import HybridPotential

    return HybridPotential(terms={name: decode_module(s, context) for name, s in spec["terms"]})


register_codec("HybridPotential", _encode_model, _decode_model)


# ---------------------------------------------------------------------------- whole files
def _split_state(module: nn.Module):
    """``(tensors, extra_state)``: the state dict's tensors and its JSON-able extra states."""
    tensors, extra = {}, {}
    for key, value in module.state_dict().items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach()
        else:
            try:
                json.dumps(value)
            except TypeError:
                raise ValueError(f"cannot save state {key!r} of type {type(value).__name__} (not JSON)") from None
            extra[key] = value
    return tensors, extra


def architecture_of(model: nn.Module) -> dict:
    """The JSON description of a model (what :func:`save_model` writes besides the tensors)."""
    from . import __version__

    context = _Context()
    spec = encode_module(model, context)
    tensors, extra = _split_state(model)
    # dtypes of buffers outside the state dict (rebuilt by the constructors in float64)
    stored = set(tensors)
    buffer_dtypes = {name: str(b.dtype).replace("torch.", "") for name, b in model.named_buffers(remove_duplicate=False)
                     if name not in stored and b.is_floating_point()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hybridpot_version": __version__,
        "descriptors": [_encode_descriptor(d) for d in context.descriptors],
        "model": spec,
        "extra_state": extra,
        "buffer_dtypes": buffer_dtypes,
    }


def save_model(model: nn.Module, path) -> None:
    """Write ``model`` to ``path`` (atomic: a temporary file renamed into place).

    Raises ``ValueError`` for modules the format does not know (see :func:`register_codec`).
    """
    path = Path(path)
    arch = architecture_of(model)
    tensors, _ = _split_state(model)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": json.dumps(arch),
               "tensors": {k: v.cpu() for k, v in tensors.items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def build_from_architecture(arch: dict, tensors: Dict[str, torch.Tensor]) -> nn.Module:
    """The model described by ``arch`` with ``tensors`` loaded (bit-exact)."""
    version = arch.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"architecture has no valid format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this hybridpot reads ({FORMAT_VERSION}): "
                         f"written by hybridpot {arch.get('hybridpot_version')}; upgrade hybridpot")
    context = _Context([_decode_descriptor(d) for d in arch["descriptors"]])
    model = decode_module(arch["model"], context)
    state = dict(tensors)
    state.update(arch.get("extra_state", {}))
    model.load_state_dict(state, strict=True, assign=True)
    for name, dtype in arch.get("buffer_dtypes", {}).items():
        owner, _, buffer = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module._buffers[buffer] = module._buffers[buffer].to(getattr(torch, dtype))
    return model


def _legacy_pickle(path: Path, map_location) -> nn.Module:
    warnings.warn(
        f"{path}: loading an old pickled model file with trust_pickle=True runs code stored in the file; "
        "re-save it with hybridpot.save to get the safe format", UserWarning, stacklevel=3,
    )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # anything a corrupted pickle raises
        raise ModelFileError(_describe_torch_load_error(path, err)) from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT and isinstance(payload.get("model"), nn.Module):
        return payload["model"]
    raise ModelFileError(f"{path}: not a hybridpot model file (an unpickled {type(payload).__name__})")


def _payload_architecture(path: Path, payload) -> dict:
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path}: not a hybridpot model file (it holds a {type(payload).__name__})")
    if payload.get("format") == "hybridpot-checkpoint":
        raise ModelFileError(f"{path}: this is a training checkpoint, not a model: load the run's model.pt or "
                             "best_model.pt")
    if payload.get("format") != FORMAT or "architecture" not in payload or "tensors" not in payload:
        raise ModelFileError(f"{path}: not a hybridpot model file (keys {sorted(map(str, payload))[:8]})")
    try:
        return json.loads(payload["architecture"])
    except (TypeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: the architecture record is not valid JSON ({err}); the file is corrupted") from None


def load_model(path, map_location="cpu", trust_pickle: bool = False) -> nn.Module:
    """Load a model written by :func:`save_model` without running code from the file.

    Parameters
    ----------
    path : str or Path
    map_location : str or torch.device
        Device of the loaded tensors.
    trust_pickle : bool
        Also load old pickled files (format before version 1). This runs code stored in the
        file: only for files you trust. A warning says so.

    Raises
    ------
    FileNotFoundError
        No such file.
    UntrustedFileError
        Pickled Python objects in the file and ``trust_pickle`` not given (nothing executed).
    ModelFileError
        Empty, truncated, corrupted, not a model, or written by a newer hybridpot.
    """
    path = Path(path)
    try:
        payload = safe_torch_load(path, map_location=map_location)
    except UntrustedFileError:
        if not trust_pickle:
            raise
        return _legacy_pickle(path, map_location)
    arch = _payload_architecture(path, payload)
    try:
        model = build_from_architecture(arch, payload["tensors"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise ModelFileError(f"{path}: cannot rebuild the model from the file ({type(err).__name__}: {err})") from None
    return model.to(map_location).eval()


def read_architecture(path) -> dict:
    """The JSON architecture of a model file (nothing is built)."""
    path = Path(path)
    return _payload_architecture(path, safe_torch_load(path))
