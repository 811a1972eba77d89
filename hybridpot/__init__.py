"""hybridpot: machine-learned interatomic potentials with long-range physics.

E_total = E_short (Behler-Parrinello network) + E_elec (charge equilibration, Gaussian
charges, Ewald/PME) + E_disp (damped C6). Units: eV, Å, e.
"""

__version__ = "0.1.0"

from .atomic_nets import ElementNets
from .calculator import HybridCalculator
from .cutoff import cutoff_function
from .descriptors import SymmetryFunction, SymmetryFunctions
from .dispersion import Dispersion
from .repulsion import PairRepulsion
from .electrostatics import Electrostatics
from .model import HybridPotential, load, save
from .serialization import ModelFileError, UntrustedFileError
from .neighbors import NeighborList, build_graph, compute_neighbors
from .qeq import ChargeEquilibration, FixedCharges, QEqConvergenceError
from .short_range import ShortRange
from .system import AtomicSystem
from .io import read_extxyz, read_input_data, read_structures, write_extxyz, write_input_data
from .io.n2p2 import from_n2p2
from .training import AtomsDataset, Trainer, TrainingConfig, evaluate_model, load_config

__all__ = [
    "AtomicSystem",
    "NeighborList",
    "compute_neighbors",
    "build_graph",
    "cutoff_function",
    "SymmetryFunction",
    "SymmetryFunctions",
    "ElementNets",
    "ShortRange",
    "Dispersion",
    "PairRepulsion",
    "Electrostatics",
    "ChargeEquilibration",
    "FixedCharges",
    "QEqConvergenceError",
    "HybridPotential",
    "HybridCalculator",
    "save",
    "load",
    "ModelFileError",
    "UntrustedFileError",
    "read_structures",
    "read_extxyz",
    "write_extxyz",
    "read_input_data",
    "write_input_data",
    "from_n2p2",
    "AtomsDataset",
    "Trainer",
    "TrainingConfig",
    "evaluate_model",
    "load_config",
    "__version__",
]
