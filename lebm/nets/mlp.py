"""Fully connected networks for low-dimensional latents and data."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["gelu", "leaky_relu", "silu", "relu", "tanh"]

_ACTIVATIONS: dict[str, type[nn.Module] | tuple[type[nn.Module], dict]] = {
    "gelu": nn.GELU,
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": 0.2}),
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}


def make_activation(name: Activation) -> nn.Module:
    """Build an activation by name (leaky ReLU uses slope 0.2, as in Pang et al.)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    entry = _ACTIVATIONS[name]
    cls, kwargs = entry if isinstance(entry, tuple) else (entry, {})
    return cls(**kwargs)


class MLP(nn.Module):
    """``in_features -> hidden x depth -> out_features`` with an activation after each hidden layer.

    Args:
        in_features: input width.
        out_features: output width.
        hidden: width of every hidden layer.
        depth: number of hidden layers (0 gives a single linear map).
        activation: nonlinearity between layers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 200,
        depth: int = 2,
        activation: Activation = "gelu",
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if hidden < 1 or depth < 0:
            raise ValueError(f"need hidden >= 1 and depth >= 0, got hidden={hidden}, depth={depth}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), make_activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_features) -> (B, out_features)."""
        return self.net(x)


class EnergyMLP(MLP):
    """Scalar network ``f(z)``: (B, latent_dim) -> (B,)."""

    def __init__(
        self, latent_dim: int, hidden: int = 200, depth: int = 2, activation: Activation = "gelu"
    ) -> None:
        super().__init__(latent_dim, 1, hidden, depth, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


class GeneratorMLP(MLP):
    """Generator ``g(z)``: (B, latent_dim) -> (B, *data_shape), linear output."""

    def __init__(
        self,
        latent_dim: int,
        data_shape: tuple[int, ...],
        hidden: int = 128,
        depth: int = 2,
        activation: Activation = "gelu",
    ) -> None:
        super().__init__(latent_dim, math.prod(data_shape), hidden, depth, activation)
        self.data_shape = tuple(data_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.data_shape)


class EncoderMLP(MLP):
    """Encoder ``e(x)``: (B, *data_shape) -> (B, out_features); flattens x, linear output.

    The VAE's default encoder (``out_features = 2 * latent_dim``: mean and log-variance).

    Args:
        data_shape: shape of one data point (supplied by the model).
        out_features: output width (supplied by the model).
        hidden: width of every hidden layer.
        depth: number of hidden layers.
        activation: nonlinearity between layers.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        out_features: int,
        hidden: int = 128,
        depth: int = 2,
        activation: Activation = "gelu",
    ) -> None:
        super().__init__(math.prod(data_shape), out_features, hidden, depth, activation)
        self.data_shape = tuple(data_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class FourierEncoder(nn.Module):
    """Features of low-dimensional data that stay linearly independent across a batch:
    ``[EncoderMLP(x), sin(x F), cos(x F)]``, (B, *data_shape) -> (B, out_features).

    ``F`` is a fixed random matrix (D x num_frequencies) with N(0, scale^2) entries (random
    Fourier features, Rahimi and Recht 2007), drawn from ``seed`` and stored as a buffer. The
    Langevin autoencoder's encoder needs this on 2-D data: there the features of a smooth MLP
    span only about ten directions across a batch of 128 points (the eigenvalues of their Gram
    matrix fall by 1e5 within the first 50), so Langevin on the last layer cannot move the codes
    of a batch independently and the model collapses to a deterministic autoencoder; fixed
    high-frequency features make the Gram matrix well conditioned (the ALD theorem's rank
    condition), while the MLP part keeps the encoder amortised.

    Args:
        data_shape: shape of one data point (supplied by the model).
        out_features: output width (supplied by the model); the MLP gives
            ``out_features - 2 num_frequencies`` of it.
        num_frequencies: columns of F.
        scale: standard deviation of F's entries (in units of the standardised data:
            larger = features decorrelate at shorter distances).
        hidden: the MLP's hidden width.
        depth: the MLP's hidden layers.
        activation: the MLP's nonlinearity.
        seed: seeds F (a fixed part of the architecture, the same on every run).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        out_features: int,
        num_frequencies: int = 128,
        scale: float = 30.0,
        hidden: int = 128,
        depth: int = 2,
        activation: Activation = "gelu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        learned = out_features - 2 * num_frequencies
        if learned < 1:
            raise ValueError(
                f"FourierEncoder: out_features ({out_features}) must exceed 2 * num_frequencies "
                f"({2 * num_frequencies}); raise the model's features or lower num_frequencies"
            )
        self.mlp = EncoderMLP(data_shape, learned, hidden, depth, activation)
        generator = torch.Generator().manual_seed(seed)
        frequencies = scale * torch.randn(
            math.prod(data_shape), num_frequencies, generator=generator
        )
        self.register_buffer("frequencies", frequencies)

    def forward(self, x: Tensor) -> Tensor:
        projection = x.flatten(1) @ self.frequencies
        return torch.cat([self.mlp(x), projection.sin(), projection.cos()], dim=1)
