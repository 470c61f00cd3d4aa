"""Scalar conditioning (diffusion time, noise level) and a conditional MLP for low-dimensional data.

Time-scale convention, shared by :func:`sinusoidal_embedding`, :class:`ConditionalMLP` and
:class:`lebm.nets.UNet`: the embedding's highest frequency is ``scale`` radians per unit of the
conditioning value, its lowest ``scale / max_period``. So it resolves differences of about
``1 / scale`` and stays unambiguous over a range of about ``max_period / scale``.

- DDPM passes the integer step ``t`` in ``[0, T)`` as a float: keep ``scale = 1`` (adjacent steps
  differ by one radian in the fastest channels).
- NCSN passes ``log sigma`` (about ``[-5, 1]``): ``scale = 1`` works (the 10-level ladder from
  1 to 0.01 is 0.51 apart in log sigma, half a radian in the fastest channels, and the first
  few frequency pairs vary over the range); a larger scale such as 100 spreads log sigma over
  the DDPM-like range and puts more channels to use.
- Continuous time in ``[0, 1]`` (score SDEs): ``scale = 1000``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lebm.nets.mlp import Activation, make_activation


def sinusoidal_embedding(
    values: Tensor, dim: int, max_period: float = 10000.0, scale: float = 1.0
) -> Tensor:
    """Transformer-style sinusoidal features of a float scalar per sample.

    ``emb[:, k] = sin(scale * v * f_k)`` and ``emb[:, dim/2 + k] = cos(scale * v * f_k)`` with
    ``f_k = max_period ** (-k / (dim / 2))``, ``k = 0 .. dim/2 - 1`` (frequencies from 1 down
    to about ``1 / max_period``). See the module docstring for the choice of ``scale``.

    Args:
        values: (B,) conditioning values (integer tensors are converted to float).
        dim: embedding width; a positive even number.
        max_period: ratio of the slowest to the fastest wavelength.
        scale: multiplies ``values`` before embedding.

    Returns:
        (B, dim) features in [-1, 1]; float64 for float64 input, float32 otherwise.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even number, got {dim}")
    if max_period <= 1.0:
        raise ValueError(f"max_period must be > 1, got {max_period}")
    if values.dim() != 1:
        raise ValueError(f"values must have shape (B,), got {tuple(values.shape)}")
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponents = torch.arange(half, device=values.device, dtype=dtype) / half
    freqs = torch.exp(-math.log(max_period) * exponents)  # (half,)
    args = (values.to(dtype) * scale)[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def batch_times(t: Tensor | float, batch_size: int, device: torch.device) -> Tensor:
    """Conditioning values as a (B,) tensor: accepts a float, a 0-d, (B,) or (B, 1) tensor.

    A scalar (one noise level for the whole batch, as in annealed Langevin) is broadcast.
    """
    if not isinstance(t, Tensor):
        return torch.full((batch_size,), float(t), device=device)
    t = t.to(device)
    if t.dim() == 0:
        return t.expand(batch_size)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"t must be a scalar or have shape ({batch_size},) to match the batch, "
            f"got {tuple(t.shape)}"
        )
    return t


class ConditionalMLP(nn.Module):
    """Time- or noise-conditional MLP ``s(x, t)``: (B, *data_shape), (B,) -> (B, *data_shape).

    The eps-network of DDPM and the noise-conditional score network of NCSN on toy data.
    ``t`` goes through :func:`sinusoidal_embedding` and a two-layer MLP to a ``hidden``-wide
    embedding ``e``; every hidden layer adds its own linear projection of it::

        e   = W_e2 act(W_e1 sin_emb(t) + b) + b
        h_0 = x
        h_i = act(W_i h_{i-1} + b_i + P_i act(e) + c_i),   i = 1 .. depth
        out = W_out h_depth + b_out

    Args:
        data_shape: shape of one data point (supplied by the model), or its number of
            features; inputs are flattened to ``data_dim = prod(data_shape)`` features.
        hidden: width of every hidden layer and of the time embedding.
        depth: number of conditioned hidden layers (>= 1).
        embed_dim: width of the sinusoidal features (positive, even).
        activation: nonlinearity.
        time_scale: ``scale`` of :func:`sinusoidal_embedding` (1 for DDPM steps and log sigma;
            see :mod:`lebm.nets.time_mlp`).
    """

    def __init__(
        self,
        data_shape: int | tuple[int, ...],
        hidden: int = 128,
        depth: int = 3,
        embed_dim: int = 32,
        activation: Activation = "silu",
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        data_dim = data_shape if isinstance(data_shape, int) else math.prod(data_shape)
        if data_dim < 1:
            raise ValueError(f"data_dim must be >= 1, got {data_dim}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if depth < 1:
            raise ValueError(
                f"depth must be >= 1 (the conditioning enters hidden layers), got {depth}"
            )
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be a positive even number, got {embed_dim}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.data_dim = data_dim
        self.embed_dim = embed_dim
        self.time_scale = time_scale
        self.act = make_activation(activation)
        self.time_embed = nn.Sequential(
            nn.Linear(embed_dim, hidden), make_activation(activation), nn.Linear(hidden, hidden)
        )
        self.layers = nn.ModuleList(
            nn.Linear(data_dim if i == 0 else hidden, hidden) for i in range(depth)
        )
        self.time_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, data_dim)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """(B, data_dim) or (B, *shape) with ``prod(shape) = data_dim``, t (B,) or scalar -> x's shape."""
        batch = x.shape[0]
        h = x.reshape(batch, -1)
        if h.shape[1] != self.data_dim:
            raise ValueError(
                f"ConditionalMLP(data_dim={self.data_dim}) got input of shape {tuple(x.shape)} "
                f"({h.shape[1]} features per sample)"
            )
        t = batch_times(t, batch, x.device)
        emb = sinusoidal_embedding(t, self.embed_dim, scale=self.time_scale).to(h.dtype)
        emb = self.act(self.time_embed(emb))
        for layer, proj in zip(self.layers, self.time_proj, strict=True):
            h = self.act(layer(h) + proj(emb))
        return self.out(h).reshape(x.shape)
