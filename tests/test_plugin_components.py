"""A user's own network and sampler, plugged into stock configs by class path, and checkpoints
that rebuild every model (with its components) from nothing but the file.

This is the README's "Plugging in your own network" example run for real:
``lebm fit -c configs/latent_ebm/moons.yaml
--model.generator=tests.test_plugin_components.ResidualGenerator --model.generator.width=24``.
"""

from functools import partial

import pytest
import torch
from torch import Tensor, nn

from lebm.components import as_factory, as_instance, to_config
from lebm.models import DDPM, NCSN, VAE, VAEBM, LangevinAutoencoder, LatentEBM, ThermoLatentEBM
from lebm.nets import (
    ConditionalMLP,
    ConvEncoder,
    DCGANGenerator,
    EncoderMLP,
    EnergyMLP,
    GeneratorMLP,
)
from lebm.samplers import HMC, MALA, Langevin, Sampler
from tests.conftest import CONFIGS, FAST, tiny_latent_ebm_args

MOONS = str(CONFIGS / "latent_ebm" / "moons.yaml")


class ResidualGenerator(nn.Module):
    """A generator written the way a user would: no lebm base class. The model supplies
    ``latent_dim`` and ``data_shape``; the config gives ``width``."""

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.data_shape = tuple(data_shape)
        out = int(torch.tensor(data_shape).prod())
        self.inp = nn.Linear(latent_dim, width)
        self.block = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.out = nn.Linear(width, out)

    def forward(self, z: Tensor) -> Tensor:
        h = self.inp(z)
        return self.out(h + self.block(h)).view(len(z), *self.data_shape)


class CountingLangevin(Sampler):
    """A sampler of the user's own: Langevin that counts its calls (settings only, as required)."""

    calls = 0

    def __init__(self, n_steps: int = 5, step_size: float = 0.01) -> None:
        super().__init__(n_steps, step_size)

    def __call__(self, log_prob, z0, *, generator=None, step_size=None, n_steps=None):
        type(self).calls += 1
        step_size, n_steps = self._settings(step_size, n_steps)
        return Langevin(n_steps, step_size)(log_prob, z0, generator=generator, step_size=step_size)


def test_own_network_and_sampler_by_class_path_through_lebm_fit(run_cli, tmp_path):
    CountingLangevin.calls = 0
    cli = run_cli(
        [
            "fit",
            "-c",
            MOONS,
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
            "--model.generator=tests.test_plugin_components.ResidualGenerator",
            "--model.generator.width=24",
            "--model.prior_sampler=tests.test_plugin_components.CountingLangevin",
            "--model.prior_sampler.n_steps=3",
        ]
    )
    model = cli.model
    assert isinstance(model.generator, ResidualGenerator) and model.generator.width == 24
    assert model.generator.data_shape == (2,)  # supplied by the model, linked from the data
    assert isinstance(model.prior_sampler, CountingLangevin) and model.prior_sampler.n_steps == 3
    assert CountingLangevin.calls >= cli.trainer.global_step > 0
    assert torch.isfinite(cli.trainer.callback_metrics["val/mmd"])

    # the checkpoint alone rebuilds the user's components
    ckpt = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    loaded = LatentEBM.load_from_checkpoint(ckpt)
    assert isinstance(loaded.generator, ResidualGenerator) and loaded.generator.width == 24
    assert loaded.prior_sampler == model.prior_sampler == CountingLangevin(3, 0.05)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_sampler_swapped_by_class_path_keeps_the_configs_settings(run_cli):
    cli = run_cli(
        [
            "-c",
            MOONS,
            "--model.posterior_sampler=lebm.samplers.HMC",
            "--model.posterior_sampler.n_leapfrog=3",
        ],
        run=False,
    )
    # the config's posterior Langevin(20, 0.005) becomes HMC with the same steps and step size
    assert cli.model.posterior_sampler == HMC(20, 0.005, n_leapfrog=3)


MODELS = {
    "LatentEBM": lambda: LatentEBM(
        **tiny_latent_ebm_args() | {"posterior_sampler": HMC(3, 0.05, n_leapfrog=2)}
    ),
    "ThermoLatentEBM": lambda: ThermoLatentEBM(
        num_temperatures=3, **tiny_latent_ebm_args() | {"prior_sampler": MALA(3, 0.1)}
    ),
    "LatentEBM-dcgan": lambda: LatentEBM(
        data_shape=(1, 8, 8), latent_dim=4, generator=partial(DCGANGenerator, base_width=4)
    ),
    "DDPM": lambda: DDPM(num_timesteps=25, net=partial(ConditionalMLP, hidden=16, depth=1)),
    "NCSN": lambda: NCSN(num_levels=3, steps_per_level=2, net=partial(ConditionalMLP, hidden=16)),
    "VAE-conv-logistic": lambda: VAE(
        data_shape=(1, 8, 8),
        latent_dim=4,
        encoder=partial(ConvEncoder, base_width=4),
        decoder=partial(DCGANGenerator, base_width=4, output_activation="none"),
        likelihood="logistic",
    ),
    "LangevinAutoencoder": lambda: LangevinAutoencoder(
        features=8, encoder=partial(EncoderMLP, hidden=8), sampler=HMC(2, 0.01, n_leapfrog=2)
    ),
    "VAEBM": lambda: VAEBM(
        vae=partial(VAE, encoder=partial(EncoderMLP, hidden=8)), sampler=HMC(2, 0.05), buffer_size=8
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_load_from_checkpoint_needs_no_other_argument(name, tmp_path):
    """Every model, built in Python with its components, reloads from the file alone (with
    torch.load(weights_only=True), the default: hyperparameters are plain data)."""
    import lightning as L

    model = MODELS[name]()
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path)
    for name, value in model.hparams.items():  # components come back with defaults filled in
        if not (isinstance(value, dict) and "class_path" in value):
            assert loaded.hparams[name] == value, name
    for name, module in model.named_children():
        assert type(getattr(loaded, name)) is type(module), name
    for name in ("prior_sampler", "posterior_sampler", "sampler"):
        assert getattr(loaded, name, None) == getattr(model, name, None), name
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    g = torch.Generator().manual_seed(0)
    expected = model.sample(3, generator=g)
    assert torch.equal(loaded.sample(3, generator=g.manual_seed(0)), expected)


def test_components_round_trip_through_their_config_form():
    # complete init_args (defaults filled in), without the sizes the model supplies
    spec = to_config(partial(GeneratorMLP, hidden=7))
    init_args = {"hidden": 7, "depth": 2, "activation": "gelu"}
    assert spec == {"class_path": "lebm.nets.mlp.GeneratorMLP", "init_args": init_args}
    assert as_factory(spec)(3, (2,)).net[0].out_features == 7
    init_args = {"hidden": 200, "depth": 2, "activation": "gelu"}
    assert to_config(EnergyMLP) == {"class_path": "lebm.nets.mlp.EnergyMLP", "init_args": init_args}
    with pytest.raises(TypeError, match=r"GeneratorMLP has no arguments \['width'\]"):
        to_config(partial(GeneratorMLP, width=7))
    hmc = HMC(4, 0.2, n_leapfrog=6, mass=2.0)
    assert as_instance(to_config(hmc), Sampler) == hmc
    assert repr(hmc) == "HMC(n_steps=4, step_size=0.2, n_leapfrog=6, mass=2.0, compile=False)"
    with pytest.raises(TypeError, match="without positional arguments"):
        to_config(partial(GeneratorMLP, 3))
    with pytest.raises(ImportError, match="has no 'Nope'"):
        as_factory({"class_path": "lebm.nets.Nope"})
