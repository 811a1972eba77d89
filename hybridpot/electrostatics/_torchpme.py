"""The one place where hybridpot calls torch-pme (0.5.0) beyond its documented calculator API.

The PME operator of :mod:`hybridpot.electrostatics.operator` and the CG preconditioner build their
own stencils and meshes from torch-pme's pieces: the 1D interpolation weights, the mesh
interpolator's geometry, the k-space filter of a potential on a mesh, the k-vectors of a mesh,
and a ``PMECalculator`` whose mesh is fixed once (torch-pme recomputes it on every call and
rounds it up to a power of two). Those are private or internal in torch-pme: if a torch-pme
release changes them, this module is what to adapt (tests/test_electrostatics_operator.py
``test_pme_stencil_kspace_equals_torchpme`` checks the result against torch-pme's own
``PMECalculator._compute_kspace``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torchpme

#: Coulomb constant k_e = 1/(4 pi eps0) in eV Å / e^2 (torch-pme's prefactor)
COULOMB_PREFACTOR = float(torchpme.prefactors.eV_A)


def coulomb_potential(smearing: float, dtype: torch.dtype, device) -> torchpme.CoulombPotential:
    """torch-pme's Coulomb potential with range-separation ``smearing`` (Å), prefactor k_e (eV Å/e^2)."""
    return torchpme.CoulombPotential(smearing=smearing, prefactor=COULOMB_PREFACTOR).to(dtype=dtype, device=device)


def pme_calculator(potential, mesh_spacing: float, interpolation_nodes: int, dtype: torch.dtype, device):
    """A torch-pme ``PMECalculator`` (its mesh is set by :func:`fix_pme_mesh`)."""
    return torchpme.PMECalculator(potential, mesh_spacing=mesh_spacing,
                                  interpolation_nodes=interpolation_nodes).to(dtype=dtype, device=device)


def fix_pme_mesh(calculator, cell: torch.Tensor, mesh_shape: Sequence[int]) -> None:
    """Set the calculator's interpolator and k-space filter to ``cell`` and ``mesh_shape`` once
    (differentiably in the cell) and stop torch-pme from recomputing them on later calls
    (torch-pme 0.5.0 ``MeshInterpolator.update`` / ``KSpaceFilter.update``)."""
    ns = torch.tensor(tuple(mesh_shape), device=cell.device)
    calculator.mesh_interpolator.update(cell, ns)
    calculator.kspace_filter.update(cell, ns)

    def _no_update(*args, **kwargs):
        return None

    calculator.mesh_interpolator.update = _no_update
    calculator.kspace_filter.update = _no_update


def mesh_interpolator_of(calculator):
    """The calculator's ``MeshInterpolator`` (``ns_mesh``, ``inverse_cell``, ``interpolation_nodes``)."""
    return calculator.mesh_interpolator


def kspace_filter_values(calculator) -> torch.Tensor:
    """The calculator's k-space filter on its mesh, ``[nx, ny, nz // 2 + 1]`` (torch-pme's
    ``KSpaceFilter._kfilter``; read directly to skip its per-call NaN check, a host sync on GPUs)."""
    return calculator.kspace_filter._kfilter


def kspace_filter_on_mesh(cell: torch.Tensor, mesh_shape: Sequence[int], potential) -> torch.Tensor:
    """The k-space filter of ``potential`` on a mesh of ``mesh_shape`` points (no gradient use)."""
    ns = torch.tensor(tuple(mesh_shape), device=cell.device)
    kspace_filter = torchpme.lib.KSpaceFilter(cell, ns, kernel=potential, fft_norm="backward", ifft_norm="forward")
    return kspace_filter._kfilter


def mesh_interpolator(cell: torch.Tensor, mesh_shape: Sequence[int], nodes: int, method: str):
    """A torch-pme ``MeshInterpolator`` (``method`` "Lagrange" or "P3M" = B-spline weights)."""
    return torchpme.lib.MeshInterpolator(cell, torch.tensor(tuple(mesh_shape), device=cell.device), nodes, method)


def one_d_weights(interpolator, offsets: torch.Tensor) -> torch.Tensor:
    """The interpolator's 1D weights ``[p, n, 3]`` at ``offsets`` (mesh units, torch-pme's
    ``_compute_1d_weights``)."""
    return interpolator._compute_1d_weights(offsets)


def mesh_kvectors(cell: torch.Tensor, mesh_shape: Sequence[int]) -> torch.Tensor:
    """k-vectors ``[nx, ny, nz // 2 + 1, 3]`` (1/Å) of an rfft on a mesh of ``mesh_shape``."""
    from torchpme.lib.kvectors import generate_kvectors_for_mesh

    return generate_kvectors_for_mesh(cell, torch.tensor(tuple(mesh_shape), device=cell.device))


#: the slab layout as torch-pme's ``periodic`` argument wants it
_SLAB_PERIODIC = (True, True, False)


def slab_correction_potential(potential, positions: torch.Tensor, cell: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Potential ``[n, channels]`` (V, full, not halved) of the slab dipole correction of charges
    ``v [n, channels]`` (:mod:`hybridpot.electrostatics.slab`): torch-pme 0.5.0's
    ``CoulombPotential.pbc_correction`` with ``periodic = (True, True, False)``, which for a
    slab whose third lattice vector is along z is ``(4 pi k_e / V) (z_i M_z - (sum_j v_j z_j^2 +
    Q z_i^2) / 2 - Q L_z^2 / 12)`` (Ballenegger, Arnold & Cerdà 2009); differentiable in all inputs."""
    periodic = torch.tensor(_SLAB_PERIODIC, device=cell.device)
    return potential.pbc_correction(periodic, positions, cell, v)
