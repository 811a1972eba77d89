"""Training configuration: dataclasses with documented defaults, read from YAML.

See ``examples/train_config.yaml`` for a complete, commented file. Unknown keys are
errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

__all__ = ["DataConfig", "ModelConfig", "SchedulerConfig", "TrainingConfig", "OutputConfig", "Config", "load_config"]


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
    #: torch threads (None: the cores not busy with other processes, see hybridpot.training.threads)
    threads: Optional[int] = None
    #: Kalman filter settings (hybridpot.training.kalman_fit.KalmanSettings fields, n2p2 names in its docs)
    kalman: Dict[str, float] = field(default_factory=dict)


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
        cfg = _build(cls, dict(d or {}), "config")
        cfg.base_dir = str(base_dir)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.model.kind.upper() not in ("2G", "4G"):
            raise ValueError(f"model.kind must be '2G' or '4G', got {self.model.kind!r}")
        if self.training.dtype not in ("float32", "float64"):
            raise ValueError(f"training.dtype must be 'float32' or 'float64', got {self.training.dtype!r}")
        if self.training.scheduler.kind not in ("plateau", "exponential", "cosine", "none"):
            raise ValueError(f"training.scheduler.kind: unknown {self.training.scheduler.kind!r}")
        if self.training.batch_size < 1:
            raise ValueError("training.batch_size must be >= 1")


def _build(cls, d: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(k for k in known if k != 'base_dir')}")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not field().default_factory else f.default  # type: ignore[misc]
        if is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif is_dataclass(default):
            raise ValueError(f"{where}.{name} must be a mapping")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Read a YAML config file; relative paths in it are relative to the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    with open(path) as fh:
        try:
            d = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML: {err}") from err
    if d is not None and not isinstance(d, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    try:
        return Config.from_dict(d, base_dir=str(path.resolve().parent))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
