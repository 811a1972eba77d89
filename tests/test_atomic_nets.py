"""Element networks: n2p2's initial weights."""

import math

import pytest
import torch

from hybridpot.atomic_nets import ElementNets


def test_n2p2_initialisation_scales_only_tanh_layers():
    """n2p2 draws weights in [min, max), multiplies those into tanh layers by sqrt(6/(n_in+n_out)), zeroes the
    biases; softplus layers and the linear output layer keep the full interval."""
    nets = ElementNets([1, 8], {1: 40, 8: 30}, hidden=(20, 20), activation=["tanh", "softplus_n2p2"])
    nets.initialize_like_n2p2(-1.0, 1.0, generator=torch.Generator().manual_seed(0))
    for z in (1, 8):
        first, second, output = nets.linear_layers(z)
        bound = math.sqrt(6.0 / (first.in_features + first.out_features))
        assert float(first.weight.abs().max()) <= bound
        assert float(first.weight.abs().max()) > 0.9 * bound  # the scaled interval is filled (800-1200 draws)
        for layer in (second, output):  # into a softplus layer, into the linear output
            assert float(layer.weight.abs().max()) <= 1.0
            assert float(layer.weight.abs().max()) > 0.8
        for layer in (first, second, output):
            assert torch.count_nonzero(layer.bias) == 0


def test_n2p2_initialisation_follows_weights_interval_and_generator():
    nets = ElementNets([6], 10, hidden=(5,), activation="softplus_n2p2")
    nets.initialize_like_n2p2(0.5, 2.0, generator=torch.Generator().manual_seed(3))
    first = nets.linear_layers(6)[0].weight.detach().clone()
    assert float(first.min()) >= 0.5 and float(first.max()) < 2.0
    nets.initialize_like_n2p2(0.5, 2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, nets.linear_layers(6)[0].weight)
    with pytest.raises(ValueError, match="must exceed"):
        nets.initialize_like_n2p2(1.0, 1.0)
