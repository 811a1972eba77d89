"""Cutoff functions: values, smoothness at r_c, inner shift."""

from __future__ import annotations

import math

import pytest
import torch

from hybridpot.cutoff import CUTOFF_TYPES, cutoff_function


@pytest.mark.parametrize("ctype", sorted(set(CUTOFF_TYPES) - {0}))
def test_one_inside_zero_outside_and_smooth(ctype):
    rc = 5.0
    r = torch.linspace(0.01, 6.0, 2001, dtype=torch.float64, requires_grad=True)
    f = cutoff_function(r, rc, ctype, alpha=0.2)
    (df,) = torch.autograd.grad(f.sum(), r)
    f = f.detach()
    assert torch.all(f[r.detach() >= rc] == 0) and torch.all(df[r.detach() >= rc] == 0)
    assert torch.all((f >= -1e-12) & (f <= 1 + 1e-12))  # polynomial rounding near x = 1
    # value and slope vanish continuously at r_c
    near = (r.detach() < rc) & (r.detach() > rc - 0.01)
    assert float(f[near].abs().max()) < 1e-3 and float(df[near].abs().max()) < 1e-2
    assert torch.isfinite(df).all()
    if ctype not in (2, 3):  # shifted types are exactly 1 below alpha * r_c
        assert torch.all(f[r.detach() < 0.2 * rc] == 1.0)


def test_known_values():
    rc = 4.0
    r = torch.tensor([2.0], dtype=torch.float64)
    assert float(cutoff_function(r, rc, 1)) == pytest.approx(0.5)
    assert float(cutoff_function(r, rc, 2)) == pytest.approx(math.tanh(0.5) ** 3)
    assert float(cutoff_function(r, rc, 3)) == pytest.approx(math.tanh(0.5) ** 3 / math.tanh(1) ** 3)
    assert float(cutoff_function(r, rc, 6)) == pytest.approx(0.5)  # poly2 is symmetric about x = 1/2
    assert float(cutoff_function(r, rc, "poly2")) == pytest.approx(0.5)
    assert float(cutoff_function(r, rc, 4)) == pytest.approx(math.exp(1 - 1 / 0.75))


def test_unknown_type():
    with pytest.raises(ValueError, match="unknown cutoff type"):
        cutoff_function(torch.ones(1), 1.0, 12)
