"""Training configuration: dataclasses with documented defaults, read from YAML.

See ``examples/train_config.yaml`` for a complete, commented file. The whole file is
validated before any data are read: unknown keys are errors (a typo must not silently fall
back to a default), every value is checked against its field's type (``lr: 1e-3``, which
YAML 1.1 reads as a string, is a number here) and range, and the keyword arguments given to
the model's terms (``charge_options``, ``electrostatics``, ``dispersion``) are checked
against the terms' constructors. Every error is one line, a :class:`ConfigError` (a
``ValueError``) naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

__all__ = ["DataConfig", "ModelConfig", "SchedulerConfig", "TrainingConfig", "OutputConfig", "Config", "ConfigError",
           "load_config", "YamlLoader"]


#: Coulomb settings shared by ChargeEquilibration and Electrostatics (model.coulomb)
COULOMB_KEYS = ("accuracy", "real_space_cutoff", "interpolation_nodes")


class ConfigError(ValueError):
    """An invalid configuration value: the message names file, key, value and the expected type."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``5E+2`` are numbers, not strings
    (YAML 1.1, which PyYAML implements, needs a dot: ``1.0e-3``)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


@dataclass
class DataConfig:
    """Where the reference data is and how to read and split it."""

    #: file with the reference structures (extended XYZ or n2p2 input.data); relative
    #: paths are relative to the config file
    train: str = ""
    #: optional separate validation / test files (then ``split`` is not used for them)
    validation: Optional[str] = None
    test: Optional[str] = None
    #: "extxyz" or "input.data"; default from the file name
    format: Optional[str] = None
    #: units of an input.data file: "angstrom_ev" or "bohr_hartree"
    units: str = "angstrom_ev"
    #: key names in extended XYZ files: energy, forces, charges, total_charge, dipole
    keys: Dict[str, str] = field(default_factory=dict)
    #: fractions (train, validation, test) of ``train`` when no separate files are given
    split: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    #: seed of the split permutation
    seed: int = 0
    #: give reference charges to the model as input charges (FixedCharges models)
    charges_as_input: bool = False


@dataclass
class ModelConfig:
    """Model architecture (ignored when ``from_file`` is given)."""

    #: "2G" (short range only) or "4G" (QEq charges + electrostatics + charge-aware short range)
    kind: str = "2G"
    #: start from a saved model instead of building one
    from_file: Optional[str] = None
    #: elements (symbols or numbers); default: those in the training data
    elements: Optional[List[Any]] = None
    #: symmetry functions: n2p2 file with symfunction_short (+ cutoff_type) lines, lengths in Å
    symfunctions: Optional[str] = None
    #: otherwise SymmetryFunctions.default(elements, r_cut=cutoff, n_radial=..., ...)
    cutoff: float = 6.0
    n_radial: int = 8
    angular_etas: List[float] = field(default_factory=lambda: [0.005, 0.03])
    zetas: List[float] = field(default_factory=lambda: [1.0, 4.0])
    #: feature scaling fitted on the training split: none, scale, center, scalecenter, sigma
    scaling: str = "scalecenter"
    scaling_range: List[float] = field(default_factory=lambda: [-1.0, 1.0])
    #: short-range element networks
    hidden: List[int] = field(default_factory=lambda: [25, 25])
    activation: str = "tanh"
    #: 4G charge model: electronegativity networks and extra ChargeEquilibration keyword arguments
    charge_hidden: List[int] = field(default_factory=lambda: [15, 15])
    charge_options: Dict[str, Any] = field(default_factory=dict)
    #: keyword arguments of Electrostatics (4G)
    electrostatics: Dict[str, Any] = field(default_factory=dict)
    #: 4G: the Coulomb settings that QEq and the electrostatics share, set once for both
    #: (accuracy, real_space_cutoff in Å, interpolation_nodes); see COULOMB_KEYS
    coulomb: Dict[str, Any] = field(default_factory=dict)
    #: add a Dispersion term (any model kind) with these keyword arguments; null = none
    dispersion: Optional[Dict[str, Any]] = None


@dataclass
class SchedulerConfig:
    """Learning-rate schedule (per stage)."""

    #: "plateau" (ReduceLROnPlateau on the validation loss), "exponential", "cosine" or "none"
    kind: str = "plateau"
    #: plateau: multiply the learning rate by ``factor`` after ``patience`` epochs without improvement
    factor: float = 0.5
    patience: int = 10
    #: exponential: multiply by ``gamma`` every epoch
    gamma: float = 0.99
    #: lower bound (plateau, cosine)
    min_lr: float = 1e-6


@dataclass
class TrainingConfig:
    """Optimisation settings."""

    #: "float32" (fast) or "float64"; the saved model and final metrics are float64
    dtype: str = "float32"
    #: seed of weight initialisation and batch shuffling
    seed: int = 0
    batch_size: int = 8
    #: stage 1 (4G only): epochs fitting the charge model to reference charges / dipoles
    charge_epochs: int = 100
    charge_lr: float = 1e-3
    #: stage 2 (or the only stage of a 2G model): epochs fitting energies and forces
    epochs: int = 300
    lr: float = 1e-3
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: maximum gradient norm (0 = no clipping)
    clip_grad_norm: float = 10.0
    #: stop a stage after this many epochs without validation improvement (0 = never)
    early_stopping_patience: int = 50
    #: relative improvement that counts as better
    early_stopping_min_delta: float = 0.0
    #: loss weights of stage 2 (energy in (eV/atom)^-2, forces in (eV/Å)^-2, ...)
    weights: Dict[str, float] = field(default_factory=lambda: {"energy": 1.0, "forces": 1.0})
    #: loss weights of stage 1 (charges in e^-2, dipole in (e·Å)^-2, total_charge in e^-2)
    charge_weights: Dict[str, float] = field(default_factory=lambda: {"charges": 1.0, "dipole": 1.0})
    #: fit per-element energy offsets by least squares on the training split
    fit_energy_offsets: bool = True
    #: write a resumable checkpoint every N epochs
    checkpoint_every: int = 1
    #: "adam" (mini-batches, ``lr``, ``scheduler``, ``clip_grad_norm``) or "kalman" (n2p2's global
    #: extended Kalman filter, single-structure updates; ``batch_size``, ``lr`` and ``scheduler`` unused)
    optimizer: str = "adam"
    #: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available); under torchrun "cuda" is each rank's LOCAL_RANK GPU
    device: str = "cpu"
    #: torch threads (None: the cores not busy with other processes, see hybridpot.training.threads)
    threads: Optional[int] = None
    #: Kalman filter settings (hybridpot.training.kalman_fit.KalmanSettings fields, n2p2 names in its docs)
    kalman: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputConfig:
    """Where results go."""

    #: run directory (relative to the config file): checkpoint.pt, best_model.pt, model.pt, metrics.jsonl
    directory: str = "run"
    #: show tqdm progress bars
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    #: directory relative paths are resolved against (set by load_config)
    base_dir: str = "."

    def to_dict(self) -> dict:
        return asdict(self)

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """A path from the config, relative to ``base_dir``."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @classmethod
    def from_dict(cls, d: Optional[dict], base_dir: str = ".") -> "Config":
        cfg = _build(cls, dict(d or {}), "")
        cfg.base_dir = str(base_dir)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Value checks beyond the types (ranges, choices, keyword names); :class:`ConfigError`."""
        d, m, t = self.data, self.model, self.training
        _require(d.format in (None, "extxyz", "input.data"), "data.format", d.format, "extxyz, input.data or null")
        _require(d.units in ("angstrom_ev", "bohr_hartree"), "data.units", d.units, "angstrom_ev or bohr_hartree")
        _require(len(d.split) in (2, 3) and all(0 <= x <= 1 for x in d.split) and abs(sum(d.split) - 1) < 1e-9,
                 "data.split", d.split, "2 or 3 fractions in [0, 1] adding up to 1")
        _require(m.kind.upper() in ("2G", "4G"), "model.kind", m.kind, "'2G' or '4G'")
        _require(m.cutoff > 0, "model.cutoff", m.cutoff, "a positive number (Å)")
        _require(m.n_radial >= 1, "model.n_radial", m.n_radial, "an integer >= 1")
        _require(all(h >= 1 for h in m.hidden), "model.hidden", m.hidden, "a list of layer sizes >= 1")
        _require(all(h >= 1 for h in m.charge_hidden), "model.charge_hidden", m.charge_hidden,
                 "a list of layer sizes >= 1")
        _require(m.scaling in ("none", "scale", "center", "scalecenter", "sigma"), "model.scaling", m.scaling,
                 "none, scale, center, scalecenter or sigma")
        _require(len(m.scaling_range) == 2 and m.scaling_range[0] < m.scaling_range[1], "model.scaling_range",
                 m.scaling_range, "[min, max] with min < max")
        from ..atomic_nets import make_activation

        try:
            make_activation(m.activation)
        except ValueError as err:
            raise ConfigError(f"model.activation = {m.activation!r}: {err}") from None
        for key, value in m.coulomb.items():
            _require(key in COULOMB_KEYS, f"model.coulomb.{key}", value, f"one of {list(COULOMB_KEYS)}")
            for section in ("charge_options", "electrostatics"):
                other = getattr(m, section)
                _require(key not in other or other[key] == value, f"model.{section}.{key}", other.get(key),
                         f"no value here (model.coulomb.{key} = {value!r} sets it for QEq and electrostatics)")
        _require(all(m.coulomb.get(k, 1) > 0 for k in ("accuracy", "real_space_cutoff")), "model.coulomb",
                 m.coulomb, "a positive accuracy and real_space_cutoff")
        _check_keywords("model.charge_options", m.charge_options, "hybridpot.qeq.ChargeEquilibration")
        _check_keywords("model.electrostatics", m.electrostatics, "hybridpot.electrostatics.Electrostatics")
        _check_keywords("model.dispersion", m.dispersion, "hybridpot.dispersion.Dispersion")
        _require(t.dtype in ("float32", "float64"), "training.dtype", t.dtype, "'float32' or 'float64'")
        _require(t.scheduler.kind in ("plateau", "exponential", "cosine", "none"), "training.scheduler.kind",
                 t.scheduler.kind, "plateau, exponential, cosine or none")
        _require(t.batch_size >= 1, "training.batch_size", t.batch_size, "an integer >= 1")
        for key in ("epochs", "charge_epochs", "early_stopping_patience", "checkpoint_every"):
            _require(getattr(t, key) >= 0, f"training.{key}", getattr(t, key), "an integer >= 0")
        for key in ("lr", "charge_lr"):
            _require(getattr(t, key) > 0, f"training.{key}", getattr(t, key), "a positive number")
        _require(t.clip_grad_norm >= 0, "training.clip_grad_norm", t.clip_grad_norm, "a number >= 0 (0: no clipping)")
        _require(re.match(r"^(cpu|auto|cuda(:\d+)?)$", str(t.device).lower()) is not None, "training.device", t.device,
                 "cpu, cuda, cuda:N or auto")
        _require(t.optimizer in ("adam", "kalman"), "training.optimizer", t.optimizer, "'adam' or 'kalman'")
        _require(t.threads is None or t.threads >= 1, "training.threads", t.threads, "an integer >= 1 or null")
        from .kalman_fit import KalmanSettings

        kalman_fields = {f.name: f.type for f in fields(KalmanSettings)}
        for name, value in t.kalman.items():
            _require(name in kalman_fields, f"training.kalman.{name}", value,
                     f"a Kalman setting among {sorted(kalman_fields)}")
        try:
            KalmanSettings(**t.kalman)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"training.kalman = {t.kalman!r}: {err}") from None
        from .losses import QUANTITIES

        for key in ("weights", "charge_weights"):
            for name, w in getattr(t, key).items():
                _require(name in QUANTITIES, f"training.{key}.{name}", w, f"a loss name among {list(QUANTITIES)}")
                _require(w >= 0, f"training.{key}.{name}", w, "a number >= 0")


_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return f"{_type_name(inner)} or null"
    if origin in (list, List):
        return f"a list of {_type_name(args[0]).replace('a ', '').replace('an ', '')}s" if args else "a list"
    if origin in (dict, Dict):
        return f"a mapping of names to {_type_name(args[1]).replace('a ', '').replace('an ', '')}s" if args else "a mapping"
    return getattr(tp, "__name__", str(tp))


def _check(value, tp, key: str):
    """``value`` converted to the field type ``tp`` (numbers in strings to float), or ConfigError."""

    def fail():
        shown = repr(value) if not isinstance(value, str) else f"{value!r} (a string)"
        raise ConfigError(f"{key} = {shown}: expected {_type_name(tp)}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        return _check(value, [a for a in args if a is not type(None)][0], key)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)  # e.g. a YAML 1.1 "1e-3" from another loader
        fail()
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            fail()
        return [_check(v, args[0], f"{key}[{k}]") for k, v in enumerate(value)] if args else list(value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            fail()
        if not args:
            return dict(value)
        return {_check(k, args[0], f"{key} (key)"): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return value


def _build(cls, d: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(k for k in known if k != 'base_dir')}")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        key = f"{where}.{name}" if where else name
        default = f.default_factory() if f.default_factory is not field().default_factory else f.default  # type: ignore[misc]
        if is_dataclass(default):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} = {value!r}: expected a mapping of {type(default).__name__} keys")
            kwargs[name] = _build(type(default), value, key)
        else:
            kwargs[name] = _check(value, hints[name], key)
    return cls(**kwargs)


def _require(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key} = {value!r}: expected {expected}")


def _check_keywords(key: str, options: Optional[dict], target: str) -> None:
    """Keyword arguments for a term's constructor: every name must be a parameter of it."""
    if not options:
        return
    import importlib

    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    params = inspect.signature(cls.__init__).parameters
    fixed = {"self", "elements", "descriptor", "hidden"}
    allowed = sorted(p for p in params if p not in fixed and params[p].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                                    inspect.Parameter.VAR_POSITIONAL))
    for option in options:
        if option not in allowed:
            raise ConfigError(f"{key}.{option}: not an option of {name}; known: {allowed}")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; relative paths in it are relative to the file.

    Raises ``FileNotFoundError`` for a missing file and :class:`ConfigError` (one line,
    starting with the file name) for anything invalid in it. No data are read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    try:
        d = yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"{path}: top level must be a mapping (data:, model:, training:, output:)")
    try:
        return Config.from_dict(d, base_dir=str(path.resolve().parent))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {' '.join(str(err).split())}") from None
