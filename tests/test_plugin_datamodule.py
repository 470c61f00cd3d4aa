"""A user's own LightningDataModule, plugged into a stock config by class path.

This is the README's "Plugging in your own data" example run for real:
``lebm fit -c configs/latent_ebm/moons.yaml --data=tests.test_plugin_datamodule.RingData``.
"""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import CONFIGS, FAST

MOONS = str(CONFIGS / "latent_ebm" / "moons.yaml")


class RingData(L.LightningDataModule):
    """Points on a noisy unit ring, yielded torchvision style as ``(points, labels)`` tuples.

    Written the way a user would: no lebm base class; it provides ``data_shape`` and the
    dataloaders, nothing else.
    """

    def __init__(self, num_samples: int = 512, radius: float = 1.0, batch_size: int = 64) -> None:
        super().__init__()
        self.data_shape = (2,)
        self.batch_size = batch_size
        angle = torch.rand(num_samples, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
        points = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        self.points = points + 0.05 * torch.randn(points.shape, generator=torch.Generator())
        self.labels = torch.zeros(num_samples, dtype=torch.long)

    def _loader(self, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            TensorDataset(self.points, self.labels), batch_size=self.batch_size, shuffle=shuffle
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(100), batch_size=50)


class NoShapeData(RingData):
    """Forgets ``data_shape``: the CLI must say what is missing."""

    def __init__(self) -> None:
        super().__init__()
        del self.data_shape


def test_own_datamodule_by_class_path_trains_any_model(run_cli, tmp_path):
    cli = run_cli(
        [
            "fit",
            "-c",
            MOONS,
            "--data=tests.test_plugin_datamodule.RingData",
            "--data.radius=2.0",
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
        ]
    )
    assert isinstance(cli.datamodule, RingData) and cli.datamodule.points.abs().max() > 1.5
    assert cli.model.hparams.data_shape == (2,)  # linked from the user's datamodule
    assert cli.trainer.global_step > 0
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_gen"]) and torch.isfinite(metrics["val/mmd"])
    assert (tmp_path / "version_0" / "samples.png").exists()


def test_datamodule_without_data_shape_gets_a_clear_error(run_cli, tmp_path):
    with pytest.raises(AttributeError, match="NoShapeData has no attribute data_shape"):
        run_cli(
            [
                "fit",
                "-c",
                MOONS,
                "--data=tests.test_plugin_datamodule.NoShapeData",
                f"--trainer.default_root_dir={tmp_path}",
                *FAST,
            ]
        )
