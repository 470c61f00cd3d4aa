"""What every model inherits from lebm.models.base.GenerativeModel: evaluation that is
repeatable (its own seeded stream), per-model evaluation metrics, and the shared contract."""

from functools import partial

import pytest
import torch

from datamodules import MoonsDataModule
from lebm.models import DDPM, NCSN, LatentEBM, ThermoLatentEBM
from lebm.models.base import GenerativeModel
from lebm.nets import ConditionalMLP
from tests.conftest import quiet_trainer, tiny_latent_ebm_args

TINY_NET = partial(ConditionalMLP, hidden=16, depth=1)
MODELS = {
    "LatentEBM": lambda: LatentEBM(**tiny_latent_ebm_args()),
    "ThermoLatentEBM": lambda: ThermoLatentEBM(num_temperatures=3, **tiny_latent_ebm_args()),
    "DDPM": lambda: DDPM(num_timesteps=25, net=TINY_NET),
    "NCSN": lambda: NCSN(num_levels=3, steps_per_level=3, net=TINY_NET),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_validation_is_repeatable_whatever_the_global_stream(name, tmp_path):
    model = MODELS[name]()
    assert isinstance(model, GenerativeModel)
    data = MoonsDataModule(num_samples=300, batch_size=32)
    trainer = quiet_trainer(tmp_path, limit_val_batches=2)
    torch.manual_seed(1)
    (first,) = trainer.validate(model, datamodule=data, verbose=False)
    torch.manual_seed(2)  # evaluation draws from its own seeded stream, not the global one
    (second,) = trainer.validate(model, datamodule=data, verbose=False)
    assert first == second and {"val/mmd", "val/swd"} <= set(first)
    extra = {"val/mse"} if "Latent" in name else {"val/loss"}  # evaluation_metrics
    assert extra <= set(first)


def test_the_contract_is_named_when_missing():
    class Bare(GenerativeModel):
        pass

    model = Bare((2,))
    for call in (lambda: model.sample(3), lambda: model.learning_losses(torch.zeros(3, 2))):
        with pytest.raises(NotImplementedError, match="Bare must implement"):
            call()
    with pytest.raises(ValueError, match=r"data_shape must be a non-empty tuple .*\(0,\)"):
        Bare((0,))
