"""A small time-conditional U-Net for DDPM / NCSN on small images (8 to 64 px)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lebm.nets.time_mlp import batch_times, sinusoidal_embedding


class ResBlock(nn.Module):
    """Residual block conditioned on an embedding: (B, in_ch, H, W), (B, E) -> (B, out_ch, H, W).

    ``h = conv1(silu(norm1(x))) + W silu(e)``; ``out = skip(x) + conv2(drop(silu(norm2(h))))``,
    with GroupNorm norms, 3x3 convs and a 1x1 conv as skip when the width changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels with a residual: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, ch: int, groups: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (a.transpose(-1, -2) for a in qkv.unbind(1))  # (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class _Stage(nn.Module):
    """A ResBlock followed by optional self-attention."""

    def __init__(self, block: ResBlock, attention: SelfAttention | None) -> None:
        super().__init__()
        self.block = block
        self.attention = attention if attention is not None else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attention(self.block(x, emb))


class Downsample(nn.Module):
    """3x3 conv with stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Time-conditional U-Net ``eps(x, t)`` / ``s(x, sigma)``: (B, C, H, W), (B,) -> (B, C, H, W).

    Level ``i`` works at resolution ``H / 2^i`` with ``base_channels * channel_mults[i]``
    channels. Down path: per level ``num_res_blocks`` ResBlocks (GroupNorm, SiLU, 3x3 convs, the
    time embedding added after the first conv), then a stride-2 conv except at the last level.
    Middle: two ResBlocks. Up path: per level ``num_res_blocks + 1`` ResBlocks, each taking the
    concatenated skip of the matching down-path output, then nearest x2 + 3x3 conv except at
    level 0. Self-attention follows every ResBlock of the levels listed in
    ``attention_resolutions`` (and the middle's first block if the lowest level is listed).
    The time embedding is ``MLP(sinusoidal_embedding(t * time_scale))`` of width ``embed_dim``.

    Height and width must be divisible by ``2 ** (len(channel_mults) - 1)``; for example
    ``(1, 2)`` for 8 to 64 px, ``(1, 2, 2)`` for 8 to 64 px (28 included), ``(1, 2, 2, 2)`` for
    16, 32, 64. Parameter counts do not depend on the image size: base 32, mults (1, 2) has
    0.63M (16x16 digits on CPU); the default mults (1, 2, 2) 1.05M.

    Args:
        data_shape: ``(C, H, W)`` of the images (supplied by the model); square images also fix
            ``image_size = H``, checked in forward and needed by ``attention_resolutions``.
        base_channels: width of level 0; every level's width must be divisible by ``groups``.
        channel_mults: width multiplier per level; its length sets the number of levels.
        num_res_blocks: ResBlocks per level on the down path (the up path has one more).
        attention_resolutions: spatial sizes in pixels (e.g. ``(8,)``) of the levels that get
            self-attention; needs ``image_size``.
        dropout: dropout probability inside ResBlocks.
        embed_dim: width of the time embedding; None means ``4 * base_channels``.
        groups: GroupNorm groups.
        time_scale: ``scale`` of :func:`~lebm.nets.time_mlp.sinusoidal_embedding`
            (1 for DDPM steps and log sigma; see :mod:`lebm.nets.time_mlp`).
        attention_heads: heads of every self-attention layer.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (),
        dropout: float = 0.0,
        embed_dim: int | None = None,
        groups: int = 8,
        time_scale: float = 1.0,
        attention_heads: int = 1,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in data_shape)
        if len(shape) != 3:
            raise ValueError(
                f"UNet needs images, data_shape (C, H, W), got {shape}; use "
                "lebm.nets.ConditionalMLP for low-dimensional data"
            )
        channels = shape[0]
        image_size = shape[1] if shape[1] == shape[2] else None
        channel_mults = tuple(channel_mults)
        attention_resolutions = tuple(attention_resolutions)
        _validate(
            channels,
            base_channels,
            channel_mults,
            num_res_blocks,
            attention_resolutions,
            dropout,
            embed_dim,
            groups,
            image_size,
            time_scale,
            attention_heads,
        )
        self.channels = channels
        self.channel_mults = channel_mults
        self.image_size = image_size
        self.time_scale = time_scale
        self.factor = 2 ** (len(channel_mults) - 1)
        emb_dim = 4 * base_channels if embed_dim is None else embed_dim
        self.sin_dim = base_channels + base_channels % 2
        attn_levels = set()
        if attention_resolutions:
            assert image_size is not None
            attn_levels = {
                i for i in range(len(channel_mults)) if image_size >> i in attention_resolutions
            }

        def stage(in_ch: int, out_ch: int, level: int) -> _Stage:
            block = ResBlock(in_ch, out_ch, emb_dim, dropout, groups)
            attn = SelfAttention(out_ch, groups, attention_heads) if level in attn_levels else None
            return _Stage(block, attn)

        self.time_embed = nn.Sequential(
            nn.Linear(self.sin_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)

        last = len(channel_mults) - 1
        ch = base_channels
        skip_chs = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, base_channels * mult, level))
                ch = base_channels * mult
                skip_chs.append(ch)
            if level < last:
                self.down.append(Downsample(ch))
                skip_chs.append(ch)

        self.middle = nn.ModuleList([stage(ch, ch, last), stage(ch, ch, -1)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skip_chs.pop(), base_channels * mult, level))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """(B, C, H, W), t (B,) float or a scalar -> (B, C, H, W)."""
        self._check_input(x)
        t = batch_times(t, x.shape[0], x.device)
        emb = sinusoidal_embedding(t, self.sin_dim, scale=self.time_scale).to(x.dtype)
        emb = self.time_embed(emb)

        h = self.conv_in(x)
        skips = [h]
        for module in self.down:
            h = module(h, emb) if isinstance(module, _Stage) else module(h)
            skips.append(h)
        for module in self.middle:
            h = module(h, emb)
        for module in self.up:
            if isinstance(module, _Stage):
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = module(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"UNet(channels={self.channels}) expects input of shape (B, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"UNet with channel_mults={self.channel_mults} halves the resolution "
                f"{len(self.channel_mults) - 1} times, so height and width must be divisible by "
                f"{self.factor}; got {h}x{w}. Use fewer levels or another image size."
            )
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"UNet built for {self.image_size}x{self.image_size} images got a {h}x{w} input; "
                f"build it with data_shape=({self.channels}, {h}, {w}) instead"
            )


def _validate(
    channels: int,
    base_channels: int,
    channel_mults: tuple[int, ...],
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...],
    dropout: float,
    embed_dim: int | None,
    groups: int,
    image_size: int | None,
    time_scale: float,
    attention_heads: int,
) -> None:
    for name, value in (
        ("channels", channels),
        ("base_channels", base_channels),
        ("num_res_blocks", num_res_blocks),
        ("groups", groups),
        ("attention_heads", attention_heads),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not channel_mults or any(m < 1 for m in channel_mults):
        raise ValueError(
            f"channel_mults must be a non-empty tuple of ints >= 1, got {channel_mults}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if embed_dim is not None and embed_dim < 1:
        raise ValueError(f"embed_dim must be >= 1 or None, got {embed_dim}")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    widths = [base_channels * m for m in channel_mults]
    bad = [w for w in widths if w % groups]
    if bad:
        raise ValueError(
            f"groups={groups} must divide every level width base_channels * channel_mults = "
            f"{widths}; {bad} are not divisible"
        )
    factor = 2 ** (len(channel_mults) - 1)
    if image_size is not None:
        if image_size < 1 or image_size % factor:
            raise ValueError(
                f"image_size={image_size} must be divisible by 2 ** (len(channel_mults) - 1) = "
                f"{factor} for channel_mults={channel_mults}"
            )
    if attention_resolutions:
        if image_size is None:
            raise ValueError(
                f"attention_resolutions={attention_resolutions} are spatial sizes in pixels; "
                "pass image_size so that they can be matched to levels"
            )
        levels = [image_size >> i for i in range(len(channel_mults))]
        unknown = [r for r in attention_resolutions if r not in levels]
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level; with image_size={image_size} "
                f"and channel_mults={channel_mults} the levels are {levels}"
            )
        bad_heads = [
            widths[i]
            for i, r in enumerate(levels)
            if r in attention_resolutions and widths[i] % attention_heads
        ]
        if bad_heads:
            raise ValueError(
                f"attention_heads={attention_heads} must divide the attended widths, got {bad_heads}"
            )
