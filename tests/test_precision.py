"""Mixed precision: every model trains and validates on CPU under ``precision="bf16-mixed"``
(autocast: the networks' matrix products in bfloat16) with finite losses, parameters, validation
metrics and samples, while the MCMC chains (start and final states of every sampler call) and
the parameters stay float32."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from datamodules import MoonsDataModule
from tests.conftest import quiet_trainer
from tests.test_ddp import MODELS


class Losses(Callback):
    """Records the training losses."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(loss.detach().float())


@pytest.fixture
def chain_dtypes(monkeypatch) -> set:
    """The dtypes of every MCMC chain's start and final states: lebm's sampler objects, the
    DDPM ancestral sampler and NCSN's annealed Langevin, as the models call them."""
    import lebm.models.ddpm
    import lebm.models.ncsn
    from lebm.samplers.objects import Sampler

    seen: set[torch.dtype] = set()

    def wrap(fn, start_arg: int):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            seen.update({args[start_arg].dtype, result.sample.dtype})
            return result

        return wrapped

    classes, pending = [], [Sampler]
    while pending:  # the sampler classes that define their own __call__
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "__call__" in vars(cls):
            classes.append(cls)
    for cls in classes:
        monkeypatch.setattr(cls, "__call__", wrap(vars(cls)["__call__"], 2))
    ddpm, ncsn = lebm.models.ddpm, lebm.models.ncsn
    monkeypatch.setattr(ddpm, "ddpm_ancestral", wrap(ddpm.ddpm_ancestral, 2))
    monkeypatch.setattr(ncsn, "annealed_langevin", wrap(ncsn.annealed_langevin, 1))
    return seen


@pytest.mark.parametrize("name", list(MODELS))
def test_bf16_mixed_trains_with_float32_chains(name, tmp_path, chain_dtypes):
    L.seed_everything(0, verbose=False)
    model = MODELS[name]()
    record = Losses()
    trainer = quiet_trainer(
        tmp_path,
        precision="bf16-mixed",
        max_epochs=2 if name == "VAEBM" else 1,  # VAEBM: VAE epoch, then an energy epoch
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[record],
    )
    trainer.fit(model, MoonsDataModule(num_samples=200, batch_size=32))
    # every model but the VAE runs chains (training or validation samples); all float32
    assert chain_dtypes == (set() if name == "VAE" else {torch.float32}), chain_dtypes
    assert record.losses and all(torch.isfinite(v).all() for v in record.losses)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/mmd"]) and torch.isfinite(metrics["val/swd"])
    sample = model.sample(16)
    assert sample.dtype == torch.float32 and torch.isfinite(sample).all()
