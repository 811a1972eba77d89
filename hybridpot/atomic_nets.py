"""Element-wise feed-forward networks with smooth activations."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Sequence

import torch
from torch import nn

from .descriptors import element_number

__all__ = ["ElementNets", "ACTIVATIONS", "make_activation", "N2P2_ACTIVATIONS", "activation_from_n2p2"]


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - ln 2`` (zero at the origin)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


class Gaussian(nn.Module):
    """``exp(-x^2 / 2)`` (n2p2 activation ``g``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * x * x)


class Cos(nn.Module):
    """``cos(x)`` (n2p2 activation ``c``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x)


class RevSigmoid(nn.Module):
    """``1 - 1 / (1 + exp(-x))`` (n2p2 activation ``S``, reverse logistic)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-x)


class NegExp(nn.Module):
    """``exp(-x)`` (n2p2 activation ``e``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x)


class Harmonic(nn.Module):
    """``x^2`` (n2p2 activation ``h``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class SoftplusN2P2(nn.Module):
    """``ln(1 + exp(x))``, linear above ``x = 35`` exactly as n2p2 (activation ``p``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x, beta=1.0, threshold=35.0)


#: Smooth activations by name (n2p2 one-letter codes in brackets).
ACTIVATIONS = {
    "linear": nn.Identity,  # (l)
    "tanh": nn.Tanh,  # (t)
    "softplus": nn.Softplus,  # (p, up to n2p2's switch to x above 35 instead of 20)
    "softplus_n2p2": SoftplusN2P2,  # (p)
    "shifted_softplus": ShiftedSoftplus,
    "sigmoid": nn.Sigmoid,  # (s)
    "revsigmoid": RevSigmoid,  # (S)
    "gaussian": Gaussian,  # (g)
    "cos": Cos,  # (c)
    "negexp": NegExp,  # (e)
    "harmonic": Harmonic,  # (h)
    "silu": nn.SiLU,
}

#: n2p2 activation letters (``global_activation_short`` etc.) and their names here.
N2P2_ACTIVATIONS = {
    "l": "linear",
    "t": "tanh",
    "s": "sigmoid",
    "p": "softplus_n2p2",
    "g": "gaussian",
    "c": "cos",
    "S": "revsigmoid",
    "e": "negexp",
    "h": "harmonic",
}


def activation_from_n2p2(letter: str) -> str:
    """Name of the activation for an n2p2 letter; ``r`` (ReLU) and unknown letters raise ``ValueError``."""
    if letter == "r":
        raise ValueError(
            "n2p2 activation 'r' (ReLU) refused: its derivative is discontinuous, which makes forces discontinuous"
        )
    if letter not in N2P2_ACTIVATIONS:
        raise ValueError(f"unknown n2p2 activation {letter!r}; known: {sorted(N2P2_ACTIVATIONS)} ('r' is refused)")
    return N2P2_ACTIVATIONS[letter]

_REFUSED = {
    "relu": "ReLU has a discontinuous derivative, which makes forces discontinuous; use 'tanh' or 'softplus'",
    "leaky_relu": "leaky ReLU has a discontinuous derivative, which makes forces discontinuous",
    "hardtanh": "hardtanh has a discontinuous derivative, which makes forces discontinuous",
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name; non-smooth activations are refused with ``ValueError``."""
    key = name.lower()
    if key in _REFUSED:
        raise ValueError(f"activation {name!r} refused: {_REFUSED[key]}")
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


class ElementNets(nn.Module):
    """One multilayer perceptron per element.

    Parameters
    ----------
    elements : iterable of int or str
        Elements, each getting its own network.
    n_inputs : int or dict
        Input size, the same for all elements or per atomic number.
    hidden : sequence of int
        Hidden layer sizes.
    activation : str or sequence of str
        Hidden-layer activation(s): one name for all hidden layers or one per layer.
        The output layer is linear.
    n_outputs : int
        Outputs per atom (1 for an atomic energy or electronegativity).
    output_activation : str
        Activation applied to the output layer (default linear, i.e. none).
    """

    def __init__(
        self,
        elements: Iterable[int | str],
        n_inputs: int | Dict[int, int],
        hidden: Sequence[int] = (25, 25),
        activation: str | Sequence[str] = "tanh",
        n_outputs: int = 1,
        output_activation: str = "linear",
    ):
        super().__init__()
        self.elements: List[int] = sorted({element_number(e) for e in elements})
        if isinstance(activation, str):
            activations = [activation] * len(hidden)
        else:
            activations = list(activation)
            if len(activations) != len(hidden):
                raise ValueError(f"{len(activations)} activations for {len(hidden)} hidden layers")
        for a in activations + [output_activation]:
            make_activation(a)  # validate early
        self.output_activation = output_activation
        self.hidden = tuple(int(h) for h in hidden)
        self.activations = activations
        self.n_outputs = n_outputs
        if isinstance(n_inputs, int):
            n_inputs = {z: n_inputs for z in self.elements}
        self.n_inputs = {int(z): int(n) for z, n in n_inputs.items()}
        self.nets = nn.ModuleDict()
        for z in self.elements:
            layers: List[nn.Module] = []
            width = self.n_inputs[z]
            for h, a in zip(self.hidden, activations):
                layers += [nn.Linear(width, h), make_activation(a)]
                width = h
            layers.append(nn.Linear(width, n_outputs))
            if output_activation != "linear":
                layers.append(make_activation(output_activation))
            self.nets[str(z)] = nn.Sequential(*layers)

    def initialize_like_n2p2(self, weights_min: float = -1.0, weights_max: float = 1.0,
                             generator: torch.Generator | None = None) -> None:
        """Draw the weights as n2p2's ``nnp-train`` does by default.

        n2p2 (Training::randomizeNeuralNetworkWeights without ``nguyen_widrow_weights``, then
        NeuralNetwork::modifyConnections) draws every weight uniformly in
        ``[weights_min, weights_max)``, multiplies the weights *into a tanh layer* by
        ``sqrt(6 / (n_in + n_out))`` (Glorot-Bengio) and sets every bias to zero. Layers with other
        activations, softplus included, and the linear output layer keep the full interval. (PyTorch's
        ``xavier_uniform_`` on every layer is a different start: for a tanh network it draws the output
        layer 1.6x narrower, for a softplus network every layer.)

        Parameters
        ----------
        weights_min, weights_max : float
            n2p2's ``weights_min`` and ``weights_max`` (defaults -1 and 1, as its examples).
        generator : torch.Generator, optional
            Random stream (default: torch's global one).
        """
        if not weights_max > weights_min:
            raise ValueError(f"weights_max ({weights_max}) must exceed weights_min ({weights_min})")
        with torch.no_grad():
            for z in self.elements:
                layers = list(self.nets[str(z)])
                for k, layer in enumerate(layers):
                    if not isinstance(layer, nn.Linear):
                        continue
                    layer.weight.uniform_(weights_min, weights_max, generator=generator)
                    if k + 1 < len(layers) and isinstance(layers[k + 1], nn.Tanh):
                        layer.weight.mul_(math.sqrt(6.0 / (layer.in_features + layer.out_features)))
                    layer.bias.zero_()

    def linear_layers(self, z: int) -> List[nn.Linear]:
        """The linear layers of element ``z``'s network, input to output."""
        return [m for m in self.nets[str(z)] if isinstance(m, nn.Linear)]

    def forward(self, features: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """Per-atom outputs ``[N, n_outputs]`` from padded features ``[N, F_max]``.

        Each element's network reads the first ``n_inputs[z]`` feature columns.
        """
        out = features.new_zeros(features.shape[0], self.n_outputs)
        for z in self.elements:
            idx = torch.nonzero(numbers == z).flatten()
            if idx.numel() == 0:
                continue
            x = features[idx, : self.n_inputs[z]]
            out = out.index_copy(0, idx, self.nets[str(z)](x))
        return out
