"""DCGAN-style convolutional generators, encoders and image energy networks.

Resolution ladders (``w`` = ``base_width``; the first layer maps 1x1 to the base resolution
with a valid (transposed) conv, every later one is k4 s2 p1; channel widths halve per block
from the top, as in DCGAN)::

    image_size  generator spatial sizes          hidden widths
    8           1 -k4-> 4 -> 8                   8w
    16          1 -k4-> 4 -> 8 -> 16             8w, 4w
    28          1 -k7-> 7 -> 14 -> 28            8w, 4w
    32          1 -k4-> 4 -> 8 -> 16 -> 32       8w, 4w, 2w     (Pang et al.'s SVHN/CIFAR net)
    64          1 -k4-> 4 -> 8 -> 16 -> 32 -> 64 8w, 4w, 2w, w  (CelebA-64, as DCGAN)

The encoder mirrors the generator: strided convs from the image down to 4x4 (7x7 for 28 px)
with widths doubling towards ``8w``, then one valid conv (k4, or k7 for 28 px) to
``out_features`` at 1x1.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lebm.nets.mlp import Activation, make_activation

IMAGE_SIZES = (8, 16, 28, 32, 64)

# image_size -> (kernel of the valid conv between 1x1 and the base resolution, which equals the
# base resolution: 4x4 or 7x7; number of hidden layers = number of stride-2 encoder convs).
_LADDER: dict[int, tuple[int, int]] = {8: (4, 1), 16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _check_common(channels: int, image_size: int, base_width: int) -> None:
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    if image_size not in _LADDER:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")


def image_shape(data_shape: tuple[int, ...], name: str) -> tuple[int, int]:
    """``(channels, image_size)`` of a square image shape (C, S, S), checked for ``name``."""
    shape = tuple(int(d) for d in data_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(
            f"{name} needs square images, data_shape (C, S, S) with S in {IMAGE_SIZES}, got "
            f"{shape}; use an MLP network (lebm.nets.GeneratorMLP / EnergyMLP) for other data"
        )
    return shape[0], shape[1]


def _block_widths(base_width: int, n_blocks: int) -> list[int]:
    """Hidden widths from the top (1x1 side) down: 8w, 4w, 2w, w for n_blocks = 4."""
    return [base_width * 2 ** (3 - i) for i in range(n_blocks)]


class DCGANGenerator(nn.Module):
    """DCGAN-style generator ``g(z)``: (B, latent_dim) -> (B, *data_shape), images (C, S, S).

    Transposed convolutions from a 1x1 feature map, ``activation`` between layers, ``tanh`` on
    the output by default (data scaled to [-1, 1]). With ``image_size=32``, ``base_width=64`` and no batch
    norm this is exactly Pang et al.'s SVHN/CIFAR-10 generator::

        ConvT(nz->512, k4 s1 p0) -> ConvT(512->256, k4 s2 p1) -> ConvT(256->128, k4 s2 p1)
        -> ConvT(128->C, k4 s2 p1) -> tanh,   LeakyReLU(0.2) between layers.

    See the module docstring for the other sizes.

    Args:
        latent_dim: size of z (supplied by the model).
        data_shape: ``(C, S, S)``, S one of 8, 16, 28, 32, 64 (supplied by the model).
        base_width: ``w``; the first layer has ``8 w`` channels, halving per block.
        activation: nonlinearity between layers (leaky ReLU has slope 0.2).
        batch_norm: BatchNorm2d after every hidden transposed conv (their bias is then dropped).
            Pang et al. use none.
        output_activation: ``"tanh"`` (outputs in (-1, 1)) or ``"none"`` (a linear output:
            logits of a Bernoulli decoder, locations of a likelihood on unbounded values).

    Attributes:
        data_shape: ``(channels, image_size, image_size)``.
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: tuple[int, ...],
        base_width: int = 64,
        activation: Activation = "leaky_relu",
        batch_norm: bool = False,
        output_activation: Literal["tanh", "none"] = "tanh",
    ) -> None:
        super().__init__()
        channels, image_size = image_shape(data_shape, "DCGANGenerator")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if output_activation not in ("tanh", "none"):
            raise ValueError(
                f"output_activation must be 'tanh' or 'none', got {output_activation!r}"
            )
        _check_common(channels, image_size, base_width)
        make_activation(activation)  # validates the name before any layer is built
        self.latent_dim = latent_dim
        self.data_shape = (channels, image_size, image_size)

        kernel, n_up = _LADDER[image_size]
        widths = _block_widths(base_width, n_up)
        layers: list[nn.Module] = []
        in_ch = latent_dim
        for i, out_ch in enumerate(widths):
            if i == 0:
                conv = nn.ConvTranspose2d(in_ch, out_ch, kernel, 1, 0, bias=not batch_norm)
            else:
                conv = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=not batch_norm)
            layers.append(conv)
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(make_activation(activation))
            in_ch = out_ch
        layers.append(nn.ConvTranspose2d(in_ch, channels, 4, 2, 1))
        if output_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, channels, image_size, image_size); values in (-1, 1) with
        the tanh output."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"DCGANGenerator expects z of shape (B, {self.latent_dim}), got {tuple(z.shape)}"
            )
        return self.net(z[:, :, None, None])


class ConvEncoder(nn.Module):
    """DCGAN-style encoder: (B, *data_shape) -> (B, out_features), images (C, S, S).

    Mirror of :class:`DCGANGenerator`: stride-2 convs (k4 s2 p1) with widths ``..., 2w, 4w, 8w``
    down to 4x4 (7x7 for 28 px), then a valid conv (k4; k7 for 28 px) to ``out_features``.
    Linear output. Used as the VAE/LAE encoder (``out_features = 2 * latent_dim`` for mean and
    log-variance) and, through :class:`ConvEnergy`, as an image energy network.

    Args:
        data_shape: ``(C, S, S)``, S one of 8, 16, 28, 32, 64 (supplied by the model).
        out_features: output width (supplied by the model: no default, so a stored config never
            holds it).
        base_width: ``w``; the last strided conv has ``8 w`` channels.
        activation: nonlinearity after every strided conv (leaky ReLU has slope 0.2).
        batch_norm: BatchNorm2d after every strided conv except the first (as in the DCGAN
            discriminator; those convs then have no bias).

    Attributes:
        data_shape: ``(channels, image_size, image_size)``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        out_features: int,
        base_width: int = 64,
        activation: Activation = "leaky_relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, image_size = image_shape(data_shape, type(self).__name__)
        _check_common(channels, image_size, base_width)
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        make_activation(activation)
        self.data_shape = (channels, image_size, image_size)
        self.out_features = out_features

        kernel, n_down = _LADDER[image_size]
        widths = _block_widths(base_width, n_down)[::-1]  # ..., 4w, 8w
        layers: list[nn.Module] = []
        in_ch = channels
        for i, out_ch in enumerate(widths):
            norm = batch_norm and i > 0
            layers.append(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(make_activation(activation))
            in_ch = out_ch
        layers += [nn.Conv2d(in_ch, out_features, kernel, 1, 0), nn.Flatten(1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, image_size, image_size) -> (B, out_features)."""
        if tuple(x.shape[1:]) != self.data_shape:
            expected = ", ".join(map(str, self.data_shape))
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {expected}), "
                f"got {tuple(x.shape)}"
            )
        return self.net(x)


class ConvEnergy(ConvEncoder):
    """Scalar image network ``f(x)``: (B, C, S, S) -> (B,).

    A :class:`ConvEncoder` with one output; same arguments otherwise.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        base_width: int = 64,
        activation: Activation = "leaky_relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__(data_shape, 1, base_width, activation, batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, image_size, image_size) -> (B,)."""
        return super().forward(x).squeeze(-1)
