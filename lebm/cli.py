"""The ``lebm`` command: LightningCLI over every model and datamodule, chosen by class path.

    lebm fit     -c configs/latent_ebm/moons.yaml
    lebm test    -c configs/latent_ebm/moons.yaml --ckpt_path <run>/checkpoints/last.ckpt
    lebm predict -c configs/latent_ebm/moons.yaml --ckpt_path <run>/checkpoints/last.ckpt

What lebm adds to a plain LightningCLI:

- the datamodule's ``data_shape`` is linked into the model's ``data_shape`` (type it once);
- a CSVLogger writing to ``<trainer.default_root_dir>/version_N`` when no logger is chosen;
- always-on callbacks: ``checkpoint`` (ModelCheckpoint saving ``last.ckpt``) and
  ``prediction_writer`` (SampleWriter, used by ``lebm predict``);
- ``inference_mode=False`` by default, because validation and prediction run MCMC (autograd);
- a summary of where the outputs are, printed at the end of each command.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks.prediction_writer import SampleWriter


class LebmCLI(LightningCLI):
    """LightningCLI with lebm's links, defaults and output summary."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.data_shape", "model.init_args.data_shape", apply_on="instantiate"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_lightning_class_args(SampleWriter, "prediction_writer")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = CSVLogger(save_dir=root, name="")
        return super().instantiate_trainer(**kwargs)

    @rank_zero_only
    def _summary(self, stage: str) -> None:
        trainer = self.trainer
        run = Path(trainer.log_dir or trainer.default_root_dir)
        lines = [f"\nlebm {stage} finished. Run folder: {run}"]
        candidates = {
            "metrics": run / "metrics.csv",
            "samples": run / "samples.png",
            "curves": run / "metrics.png",
            "config": run / "config.yaml",
        }
        for label, path in candidates.items():
            if path.exists():
                lines.append(f"  {label:<11} {path}")
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if ckpt:
            lines.append(f"  {'checkpoint':<11} {ckpt}")
        writer = next((c for c in trainer.callbacks if isinstance(c, SampleWriter)), None)
        if stage == "predict" and writer is not None and writer.last_path is not None:
            lines.append(f"  {'predictions':<11} {writer.last_path}")
        prefix = {"fit": "val/", "validate": "val/", "test": "test/"}.get(stage)
        if prefix:
            for name, value in sorted(trainer.callback_metrics.items()):
                if name.startswith(prefix) and value.numel() == 1:
                    lines.append(f"  {name:<11} {value.item():.5f}")
        print("\n".join(lines), flush=True)

    def after_fit(self) -> None:
        self._summary("fit")

    def after_validate(self) -> None:
        self._summary("validate")

    def after_test(self) -> None:
        self._summary("test")

    def after_predict(self) -> None:
        self._summary("predict")


def run_cli(args: list[str] | None = None, run: bool = True) -> LebmCLI:
    """Build (and by default run) the CLI; ``args`` lets tests and scripts call it in-process."""
    return LebmCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={"inference_mode": False},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main() -> None:
    """Entry point of the ``lebm`` console script and ``python -m lebm``."""
    run_cli()


if __name__ == "__main__":
    main()
