"""Pair kernels, n2p2 screening functions and the Coulomb constant (hybridpot.electrostatics.kernels)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from conftest import one_torch_thread
from hybridpot.electrostatics import (
    COULOMB_CONSTANT,
    gaussian_coulomb_kernel,
    screening_function,
)

# float() of results that carry autograd graphs is intended in these checks
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def test_coulomb_constant_matches_ase():
    from ase import units

    assert COULOMB_CONSTANT == pytest.approx(units.Hartree * units.Bohr, rel=1e-8)


def test_gaussian_pair_kernel_limits():
    gamma = torch.tensor(0.9, dtype=torch.float64)
    r = torch.tensor([0.0, 1e-9, 1e-5, 2e-4, 0.5, 3.0, 8.0, 30.0], dtype=torch.float64, requires_grad=True)
    k = gaussian_coulomb_kernel(r, gamma)
    assert torch.isfinite(k).all()
    kd = k.detach()
    assert float(kd[0]) == pytest.approx(math.sqrt(2 / math.pi) / 0.9, rel=1e-14)
    exact = [erf(x / (math.sqrt(2) * 0.9)) / x for x in r.detach().numpy()[1:]]
    assert np.allclose(kd.numpy()[1:], exact, rtol=1e-12, atol=0)
    assert float(kd[-1]) == pytest.approx(1 / 30.0, rel=1e-15)  # -> 1/r at long range
    assert float(kd[-2]) == pytest.approx(1 / 8.0, rel=1e-5)
    (grad,) = torch.autograd.grad(k.sum(), r)
    assert torch.isfinite(grad).all() and abs(float(grad[0])) < 1e-12  # smooth, flat at r = 0
    # derivative continuous across the series/closed-form switch (x = 1e-4)
    rr = torch.tensor([1.27e-4 * 0.999, 1.27e-4 * 1.001], dtype=torch.float64, requires_grad=True)
    (g2,) = torch.autograd.grad(gaussian_coulomb_kernel(rr, gamma).sum(), rr)
    assert float(g2[0]) == pytest.approx(float(g2[1]), rel=1e-2)


def test_screening_function_shape():
    r = torch.linspace(0, 10, 2001, dtype=torch.float64, requires_grad=True)
    f = screening_function(r, 3.0, 8.0)
    fd = f.detach()
    assert float(fd[r.detach() <= 3.0].abs().max()) == 0.0
    assert float((fd[r.detach() >= 8.0] - 1).abs().max()) == 0.0
    assert float(screening_function(torch.tensor(5.5), 3.0, 8.0)) == pytest.approx(0.5, abs=1e-15)
    # n2p2 POLY2 core: f_s = 1 - c(x), c(x) = ((15 - 6x) x - 10) x^3 + 1
    x = 0.3
    assert float(screening_function(torch.tensor(3.0 + 5 * x), 3.0, 8.0)) == pytest.approx(1 - (((15 - 6 * x) * x - 10) * x**3 + 1))
    (d1,) = torch.autograd.grad(f.sum(), r, create_graph=False)
    assert float(d1[(r.detach() - 3.0).abs() < 1e-9].abs().max()) < 1e-12
    assert float(d1[(r.detach() - 8.0).abs() < 1e-9].abs().max()) < 1e-12


@pytest.mark.parametrize("core", ["c", "p1", "p2", "p3", "p4", "e"])
def test_screening_cores_rise_smoothly_from_zero_to_one(core):
    r = torch.linspace(2.0, 9.0, 1401, dtype=torch.float64)
    f = screening_function(r, 3.0, 8.0, core)
    assert torch.all(f[r <= 3.0] == 0.0) and torch.all(f[r >= 8.0] == 1.0)
    assert torch.all(torch.diff(f) >= -1e-15)  # monotonic
    if core == "c":
        x = (r - 3.0) / 5.0
        inside = (x > 0) & (x < 1)
        torch.testing.assert_close(f[inside], 0.5 * (1 - torch.cos(math.pi * x[inside])))


@pytest.mark.parametrize("width", [0.0, 1.0])
@pytest.mark.parametrize("gaussian", [True, False])
def test_real_space_kernel_closed_form_derivatives(gaussian, width):
    """The fused real-space kernel: values bit-identical to torch-pme's sr_from_dist minus the erfc
    correction times the switch; first and second derivatives against finite differences."""
    from scipy.special import erfc

    from hybridpot.electrostatics import _torchpme
    from hybridpot.electrostatics.kernels import COULOMB_CONSTANT, _RealSpaceKernel, cutoff_switch, \
        erfc_coulomb_kernel, real_space_kernel

    torch.manual_seed(1)
    r = (torch.rand(40, dtype=torch.float64) * 8.8 + 0.4).requires_grad_()
    gamma = (torch.rand(40, dtype=torch.float64) + 0.5).requires_grad_() if gaussian else None
    composed = _torchpme.coulomb_potential(1.7, torch.float64, "cpu").sr_from_dist(r)
    if gaussian:
        composed = composed - COULOMB_CONSTANT * erfc_coulomb_kernel(r, gamma)
    if width:
        composed = composed * cutoff_switch(r, 9.0, width)
    fused = real_space_kernel(r, gamma, 1.7, 9.0, width)
    assert torch.equal(fused.detach(), composed.detach())
    x = r.detach().numpy()
    direct = erfc(x / (np.sqrt(2) * 1.7)) / x
    if gaussian:
        direct = direct - erfc(x / (np.sqrt(2) * gamma.detach().numpy())) / x
    if width:
        direct = direct * cutoff_switch(r.detach(), 9.0, width).numpy()
    np.testing.assert_allclose(fused.detach().numpy(), COULOMB_CONSTANT * direct, rtol=1e-12, atol=1e-15)
    inputs = (r, gamma)
    f = lambda r, g: _RealSpaceKernel.apply(r, g, 1.7, 9.0, width)  # noqa: E731
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
