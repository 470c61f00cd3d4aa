"""Networks in lebm.nets: shapes, Pang's generator, conditioning, gradients, clear errors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from lebm.nets import (
    ConditionalMLP,
    ConvEncoder,
    ConvEnergy,
    DCGANGenerator,
    EncoderMLP,
    UNet,
    sinusoidal_embedding,
)

SIZES = (8, 16, 28, 32, 64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def one_thread():
    """Tiny MLPs gain nothing from intra-op threads and stall badly on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _grads_reach_every_parameter(module: nn.Module, out: torch.Tensor) -> None:
    weights = torch.randn(out.shape, generator=_gen(1))
    (out * weights).sum().backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"no gradient reaches {missing}"


# --------------------------------------------------------------------------- DCGAN generator
def test_pang_svhn_generator_exact_layers_and_parameter_count():
    g = DCGANGenerator(latent_dim=100, data_shape=(3, 32, 32), base_width=64)
    layers = list(g.net)
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in layers[::2]
    ]
    assert convs == [
        (100, 512, (4, 4), (1, 1), (0, 0)),
        (512, 256, (4, 4), (2, 2), (1, 1)),
        (256, 128, (4, 4), (2, 2), (1, 1)),
        (128, 3, (4, 4), (2, 2), (1, 1)),
    ]
    assert all(type(m) is nn.ConvTranspose2d and m.bias is not None for m in layers[::2])
    acts = layers[1::2]
    assert [type(m) for m in acts] == [nn.LeakyReLU] * 3 + [nn.Tanh]
    assert all(m.negative_slope == 0.2 for m in acts[:3])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    # (100*512 + 512*256 + 256*128 + 128*3) * 16 weights + 512 + 256 + 128 + 3 biases
    assert sum(p.numel() for p in g.parameters()) == 3_447_683
    assert g.data_shape == (3, 32, 32)


@pytest.mark.parametrize("image_size", SIZES)
def test_generator_and_encoder_shapes(image_size):
    g = DCGANGenerator(latent_dim=6, data_shape=(2, image_size, image_size), base_width=4)
    x = g(torch.randn(3, 6, generator=_gen()))
    assert x.shape == (3, 2, image_size, image_size) == (3, *g.data_shape)
    enc = ConvEncoder((2, image_size, image_size), out_features=10, base_width=4)
    assert enc(x).shape == (3, 10)
    assert ConvEnergy((2, image_size, image_size), base_width=4)(x).shape == (3,)


def test_generator_width_schedules():
    def hidden_widths(g):
        return [m.out_channels for m in g.net if isinstance(m, nn.ConvTranspose2d)]

    assert hidden_widths(DCGANGenerator(8, (3, 64, 64), base_width=64)) == [512, 256, 128, 64, 3]
    assert hidden_widths(DCGANGenerator(8, (1, 16, 16), base_width=8)) == [64, 32, 1]
    assert hidden_widths(DCGANGenerator(8, (1, 8, 8), base_width=8)) == [64, 1]
    g28 = DCGANGenerator(8, (1, 28, 28), base_width=8)
    assert hidden_widths(g28) == [64, 32, 1]
    assert g28.net[0].kernel_size == (7, 7)
    enc = ConvEncoder((3, 64, 64), out_features=1, base_width=64)
    widths = [m.out_channels for m in enc.net if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 1]


def test_generator_output_is_tanh_bounded():
    g = DCGANGenerator(latent_dim=4, data_shape=(1, 16, 16), base_width=4)
    x = g(100.0 * torch.randn(16, 4, generator=_gen()))
    assert x.abs().max() <= 1.0
    assert x.abs().max() > 0.9  # saturates for large z: the output really goes through tanh


def test_generator_linear_output_is_the_tanh_generators_pre_activation():
    tanh = DCGANGenerator(latent_dim=4, data_shape=(1, 16, 16), base_width=4)
    linear = DCGANGenerator(4, (1, 16, 16), base_width=4, output_activation="none")
    assert type(tanh.net[-1]) is nn.Tanh and type(linear.net[-1]) is nn.ConvTranspose2d
    linear.load_state_dict(tanh.state_dict())  # the same parameters
    z = 100.0 * torch.randn(16, 4, generator=_gen())
    logits = linear(z)
    assert logits.abs().max() > 1.0  # unbounded: Bernoulli logits, unclamped locations
    assert torch.allclose(torch.tanh(logits), tanh(z), atol=1e-6)
    with pytest.raises(ValueError, match="output_activation must be 'tanh' or 'none', got 'relu'"):
        DCGANGenerator(4, (1, 16, 16), output_activation="relu")


def test_encoder_mlp_flattens_and_sizes_have_no_defaults():
    enc = EncoderMLP((1, 4, 4), 6, hidden=8, depth=1)
    x = torch.randn(5, 1, 4, 4, generator=_gen())
    out = enc(x)
    assert out.shape == (5, 6)
    assert torch.equal(out, enc.net(x.reshape(5, 16)))
    for cls in (EncoderMLP, ConvEncoder):  # run-time sizes stay out of stored configs
        defaults = {n for n, p in inspect.signature(cls).parameters.items() if p.default is p.empty}
        assert defaults == {"data_shape", "out_features"}, cls


def test_batch_norm_variants():
    g = DCGANGenerator(4, (1, 16, 16), base_width=4, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 2
    enc = ConvEncoder((1, 16, 16), out_features=3, base_width=4, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 1  # not after the first
    assert enc(g(torch.randn(5, 4))).shape == (5, 3)


def test_conv_errors_name_argument_value_and_choices():
    with pytest.raises(
        ValueError, match=r"image_size must be one of \(8, 16, 28, 32, 64\), got 24"
    ):
        DCGANGenerator(10, (3, 24, 24))
    with pytest.raises(ValueError, match="image_size must be one of"):
        ConvEncoder((3, 48, 48), 2)
    with pytest.raises(ValueError, match="latent_dim must be >= 1, got 0"):
        DCGANGenerator(0, (3, 32, 32))
    with pytest.raises(ValueError, match="base_width must be >= 1"):
        DCGANGenerator(10, (3, 32, 32), base_width=0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        DCGANGenerator(10, (3, 32, 32), activation="swish")
    with pytest.raises(ValueError, match=r"expects z of shape \(B, 10\)"):
        DCGANGenerator(10, (3, 8, 8), base_width=2)(torch.randn(2, 11))
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3, 16, 16\)"):
        ConvEncoder((3, 16, 16), 2, base_width=2)(torch.randn(2, 3, 32, 32))


# --------------------------------------------------------------------------- embedding
def test_sinusoidal_embedding_finite_bounded_and_distinguishes_nearby_values():
    steps = torch.arange(0, 1001, dtype=torch.float32)  # DDPM: integer steps as float
    log_sigmas = torch.linspace(-5.0, 1.0, 121)  # NCSN: log sigma, spacing 0.05
    for values, min_gap in ((steps, 0.5), (log_sigmas, 0.04)):
        emb = sinusoidal_embedding(values, 32)
        assert emb.shape == (len(values), 32) and emb.dtype == torch.float32
        assert torch.isfinite(emb).all() and emb.abs().max() <= 1.0
        # sin^2 + cos^2 = 1 per frequency: norm sqrt(dim / 2)
        assert torch.allclose(emb.norm(dim=1), torch.full((len(values),), 4.0), atol=1e-4)
        dist = torch.cdist(emb, emb) + 1e9 * torch.eye(len(values))
        assert dist.min() > min_gap  # every pair of grid values, adjacent ones included
    # larger scale separates close log sigmas more
    a, b = torch.tensor([-2.0]), torch.tensor([-1.95])
    near = (sinusoidal_embedding(a, 32) - sinusoidal_embedding(b, 32)).norm()
    scaled = (
        sinusoidal_embedding(a, 32, scale=100) - sinusoidal_embedding(b, 32, scale=100)
    ).norm()
    assert scaled > 5 * near
    assert sinusoidal_embedding(torch.arange(3), 8).dtype == torch.float32  # ints accepted
    with pytest.raises(ValueError, match="dim must be a positive even number, got 7"):
        sinusoidal_embedding(steps, 7)
    with pytest.raises(ValueError, match=r"values must have shape \(B,\)"):
        sinusoidal_embedding(steps[:, None, None], 8)


# --------------------------------------------------------------------------- conditional MLP
def test_conditional_mlp_shapes_t_dependence_and_gradients(one_thread):
    torch.manual_seed(0)
    net = ConditionalMLP(data_shape=(2,))
    x = torch.randn(8, 2)
    out = net(x, torch.full((8,), 10.0))
    assert out.shape == (8, 2)
    assert not torch.allclose(out, net(x, torch.full((8,), 11.0)), atol=1e-4)
    assert not torch.allclose(out, net(x, torch.full((8,), 10.0).log()), atol=1e-4)
    assert torch.equal(out, net(x, 10.0))  # a scalar t is broadcast over the batch
    _grads_reach_every_parameter(net, out)

    shaped = ConditionalMLP(data_shape=(3, 4), hidden=16, depth=1)
    y = shaped(torch.randn(4, 3, 2, 2), torch.rand(4))
    assert y.shape == (4, 3, 2, 2)
    with pytest.raises(ValueError, match=r"data_dim=12\) got input of shape \(4, 13\)"):
        shaped(torch.randn(4, 13), torch.rand(4))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        shaped(torch.randn(4, 12), torch.rand(5))
    with pytest.raises(ValueError, match="depth must be >= 1"):
        ConditionalMLP(2, depth=0)
    with pytest.raises(ValueError, match="embed_dim must be a positive even number, got 31"):
        ConditionalMLP(2, embed_dim=31)


@pytest.mark.parametrize(
    "to_condition",
    [lambda u: 1000.0 * u, lambda u: -5.0 + 6.0 * u],  # DDPM step in [0, 1000]; log sigma
    ids=["ddpm_step", "log_sigma"],
)
def test_conditional_mlp_fits_a_time_dependent_target(to_condition, one_thread):
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    u = torch.rand(256)
    # rotation by an angle and a shift, both depending on u: not separable in x and t
    angle = math.pi * u
    target = torch.stack(
        [
            torch.cos(angle) * x[:, 0] - torch.sin(angle) * x[:, 1] + torch.sin(2 * angle),
            torch.sin(angle) * x[:, 0] + torch.cos(angle) * x[:, 1] - u,
        ],
        dim=1,
    )
    net = ConditionalMLP(data_shape=2, hidden=64, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    t = to_condition(u)

    def loss() -> torch.Tensor:
        return (net(x, t) - target).pow(2).mean()

    first = loss().item()
    for _ in range(150):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    last = loss().item()
    assert last < first / 10, f"loss {first:.3f} -> {last:.3f}"


# --------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize(
    "image_size, mults",
    [(8, (1, 2, 2)), (16, (1, 2, 2)), (28, (1, 2, 2)), (32, (1, 2, 2, 2)), (64, (1, 2, 2, 2))],
)
def test_unet_shapes(image_size, mults):
    net = UNet((3, image_size, image_size), base_channels=8, channel_mults=mults, groups=4)
    x = torch.randn(2, 3, image_size, image_size)
    assert net(x, torch.tensor([0.0, 999.0])).shape == x.shape


def test_unet_default_sizes_and_parameter_counts():
    net = UNet((1, 16, 16))  # base 32, mults (1, 2, 2)
    params = sum(p.numel() for p in net.parameters())
    assert params == 1_045_729
    small = UNet((1, 16, 16), channel_mults=(1, 2))
    assert sum(p.numel() for p in small.parameters()) == 634_273  # the 16x16 digits size
    for size in (16, 32):  # parameter counts do not depend on the image size
        net = UNet((1, size, size))
        assert sum(p.numel() for p in net.parameters()) == 1_045_729
        with torch.no_grad():
            assert net(torch.randn(1, 1, size, size), 5.0).shape == (1, 1, size, size)


def test_unet_depends_on_t_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = UNet(
        data_shape=(1, 8, 8),
        base_channels=8,
        channel_mults=(1, 2),
        attention_resolutions=(4,),
        groups=4,
        attention_heads=2,
        dropout=0.1,
    )
    assert (
        sum(type(m).__name__ == "SelfAttention" for m in net.modules()) == 4
    )  # 1 down, 1 mid, 2 up
    net.eval()  # no dropout noise in the comparison
    x = torch.randn(4, 1, 8, 8)
    out = net(x, torch.full((4,), 100.0))
    assert not torch.allclose(out, net(x, torch.full((4,), 101.0)), atol=1e-5)
    assert not torch.allclose(out, net(x, torch.full((4,), -2.0)), atol=1e-5)  # log sigma
    net.train()
    _grads_reach_every_parameter(net, net(x, torch.rand(4) * 1000))


def test_unet_errors_are_clear():
    with pytest.raises(
        ValueError, match=r"halves the resolution 2 times, .*divisible by 4; got 18x18"
    ):
        UNet((1, 16, 16), channel_mults=(1, 2, 2))(torch.randn(1, 1, 18, 18), 0.0)
    with pytest.raises(ValueError, match=r"image_size=28 must be divisible .* = 8"):
        UNet((1, 28, 28), channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"UNet needs images, data_shape \(C, H, W\), got \(2,\)"):
        UNet((2,))
    with pytest.raises(ValueError, match=r"groups=8 must divide every level width .*\[12, 24\]"):
        UNet((1, 16, 16), base_channels=12, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="pass image_size"):  # non-square: no pixel levels
        UNet((1, 16, 32), attention_resolutions=(8,))
    with pytest.raises(
        ValueError, match=r"attention_resolutions \[5\] match no level.*\[16, 8, 4\]"
    ):
        UNet((1, 16, 16), attention_resolutions=(5,))
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 1, H, W\)"):
        UNet((1, 16, 16))(torch.randn(1, 3, 16, 16), 0.0)
    with pytest.raises(ValueError, match=r"built for 16x16 images got a 32x32 input"):
        UNet((1, 16, 16))(torch.randn(1, 1, 32, 32), 0.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        UNet((1, 16, 16), dropout=1.0)
