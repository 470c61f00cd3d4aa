"""What DDPM and NCSN share: a conditional network, its EMA copy, training and evaluation.

Both models learn one network ``net(x, c)`` conditioned on a scalar per sample (the diffusion
step for DDPM, ``log sigma`` for NCSN) by minimising a per-sample denoising loss, and sample by
running a sampler from :mod:`lebm.samplers` with that network. :class:`ScoreModelBase` holds
everything else, so each model only says how it forms the loss and how it samples:

* the network: :class:`lebm.nets.ConditionalMLP` for low-dimensional data or
  :class:`lebm.nets.UNet` for images, chosen by ``network`` and built from typed arguments;
* an optional exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``),
  used for sampling when present;
* Adam with linear warm-up; gradient clipping is the Trainer's (``gradient_clip_val``);
* val/test: the loss on held-out data (with a fixed seed, so epochs compare) and the sample
  quality metrics (MMD^2, SWD) of ``sample(len(batch))`` against the batch;
* ``predict_step`` and the gradient-variance protocol (``learning_losses``, ``gradient_groups``).
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lebm.data import batch_data
from lebm.metrics import SampleQuality
from lebm.nets import ConditionalMLP, UNet

NetworkName = Literal["mlp", "unet"]


def build_conditional_network(
    network: NetworkName,
    data_shape: tuple[int, ...],
    hidden: int,
    depth: int,
    embed_dim: int,
    base_channels: int,
    channel_mults: tuple[int, ...],
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...],
    dropout: float,
) -> nn.Module:
    """``net(x, c)``: (B, *data_shape), (B,) -> (B, *data_shape).

    ``"mlp"`` flattens any data shape (:class:`~lebm.nets.ConditionalMLP` of width ``hidden``,
    ``depth`` conditioned layers, ``embed_dim`` sinusoidal features); ``"unet"`` needs images
    (C, H, W) (:class:`~lebm.nets.UNet` with the ``base_channels`` ... ``dropout`` arguments).
    """
    if network == "mlp":
        return ConditionalMLP(math.prod(data_shape), hidden, depth, embed_dim)
    if network == "unet":
        if len(data_shape) != 3:
            raise ValueError(
                f"network='unet' needs images, data_shape (C, H, W), got {tuple(data_shape)}; "
                "use network='mlp' for low-dimensional data"
            )
        return UNet(
            channels=data_shape[0],
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            dropout=dropout,
            image_size=data_shape[1],
        )
    raise ValueError(f"network must be 'mlp' or 'unet', got {network!r}")


class ScoreModelBase(L.LightningModule, abc.ABC):
    """Base of the denoising-trained models (DDPM, NCSN); see the module docstring.

    Subclasses implement :meth:`per_sample_loss` and :meth:`_sample`, declare only their own
    arguments (keyword-only) plus ``**kwargs`` and call ``super().__init__(**kwargs)`` first
    (it saves the hyperparameters of both signatures); jsonargparse (LightningCLI) follows ``**kwargs`` into this
    signature, so every argument below is a typed, validated ``--model.init_args.*`` option of
    both models. Defaults suit 2-D toy data.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        network: ``"mlp"`` (any shape, flattened) or ``"unet"`` (images (C, H, W)).
        hidden: MLP width.
        depth: MLP conditioned hidden layers.
        embed_dim: MLP sinusoidal embedding width.
        base_channels: U-Net width of the first level.
        channel_mults: U-Net width multiplier per level (H must divide by 2^(levels - 1)).
        num_res_blocks: U-Net residual blocks per level.
        attention_resolutions: U-Net resolutions (pixels) with self-attention.
        dropout: U-Net dropout.
        lr: Adam learning rate.
        weight_decay: Adam (decoupled, AdamW) weight decay.
        warmup_steps: linear learning-rate warm-up over this many optimizer steps.
        ema_decay: decay of the exponential moving average of the weights used for sampling;
            None disables it (samples then come from the trained weights).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        network: NetworkName = "mlp",
        hidden: int = 128,
        depth: int = 3,
        embed_dim: int = 32,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (),
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float | None = 0.995,
    ) -> None:
        super().__init__()
        problems = []
        if len(data_shape) == 0 or any(int(d) < 1 for d in data_shape):
            problems.append(f"data_shape must be non-empty positive sizes, got {data_shape}")
        if not lr > 0:
            problems.append(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {weight_decay}")
        if warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {warmup_steps}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            problems.append(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))
        self.save_hyperparameters()  # this signature's arguments and the subclass's
        self.data_shape = tuple(int(d) for d in data_shape)
        self.net = build_conditional_network(
            network,
            self.data_shape,
            hidden,
            depth,
            embed_dim,
            base_channels,
            tuple(channel_mults),
            num_res_blocks,
            tuple(attention_resolutions),
            dropout,
        )
        self.ema: AveragedModel | None = None
        if ema_decay is not None:
            self.ema = AveragedModel(
                self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)
        self.val_quality = SampleQuality()
        self.test_quality = SampleQuality()

    # ----------------------------------------------------------------- model-specific
    @abc.abstractmethod
    def per_sample_loss(
        self, x: Tensor, generator: torch.Generator | None = None, net: nn.Module | None = None
    ) -> Tensor:
        """The training loss of each sample of x (fresh noise), shape (B,)."""

    @abc.abstractmethod
    def _sample(
        self, net: nn.Module, num_samples: int, generator: torch.Generator | None
    ) -> Tensor:
        """``num_samples`` data-space samples drawn with network ``net``."""

    # ----------------------------------------------------------------- sampling
    @property
    def sampling_net(self) -> nn.Module:
        """The network used to sample: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.net

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Data-space samples, shape (num_samples, *data_shape) (EMA weights when enabled)."""
        net = self.sampling_net
        was_training = net.training
        net.eval()
        try:
            return self._sample(net, num_samples, generator)
        finally:
            net.train(was_training)

    # ----------------------------------------------------------------- gradient-variance protocol
    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{"network": per-sample training loss (B,)}`` (see :mod:`lebm.grad_stats`)."""
        return {"network": self.per_sample_loss(x, generator)}

    def gradient_groups(self) -> dict[str, nn.Module]:
        """Loss name -> the network it trains."""
        return {"network": self.net}

    # ----------------------------------------------------------------- Lightning
    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self.per_sample_loss(batch_data(batch)).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        x = batch_data(batch)
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        net = self.sampling_net
        loss = self.per_sample_loss(x, generator, net=net).mean()
        self.log(f"{stage}/loss", loss, sync_dist=True)
        quality = self.val_quality if stage == "val" else self.test_quality
        quality.update(x, self.sample(len(x), generator))

    def _eval_epoch_end(self, stage: str) -> None:
        quality = self.val_quality if stage == "val" else self.test_quality
        values = quality.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=stage == "val")
        quality.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """``batch`` holds sample indices (datamodules.SampleRequests); returns len(batch) samples."""
        return self.sample(len(batch))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
