"""What DDPM and NCSN share: a conditional network, its EMA copy, training and evaluation.

Both models learn one network ``net(x, c)`` conditioned on a scalar per sample (the diffusion
step for DDPM, ``log sigma`` for NCSN) by minimising a per-sample denoising loss, and sample by
running a sampler from :mod:`lebm.samplers` with that network. :class:`ScoreModelBase` holds
everything else, so each model only says how it forms the loss and how it samples:

* the network, given by class path and built by the model as ``net(data_shape)``:
  :class:`lebm.nets.ConditionalMLP` for low-dimensional data (the default),
  :class:`lebm.nets.UNet` for images, or any module with the signature ``net(x, c)``;
* an optional exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``),
  used for sampling when present;
* Adam with linear warm-up; gradient clipping is the Trainer's (``gradient_clip_val``);
* val/test (:class:`~lebm.models.base.GenerativeModel`): the loss on held-out data (with a
  fixed seed, so epochs compare) and the sample quality metrics (MMD^2, SWD);
* the gradient-variance protocol (``learning_losses``, ``gradient_groups``).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lebm.components import ConditionalNetFactory, as_factory
from lebm.data import batch_data
from lebm.models.base import GenerativeModel
from lebm.nets import ConditionalMLP


class ScoreModelBase(GenerativeModel, abc.ABC):
    """Base of the denoising-trained models (DDPM, NCSN); see the module docstring.

    Subclasses implement :meth:`per_sample_loss` and :meth:`_sample`, declare only their own
    arguments (keyword-only) plus ``**kwargs`` and call ``super().__init__(**kwargs)`` first
    (it saves the hyperparameters of both signatures); jsonargparse (LightningCLI) follows
    ``**kwargs`` into this signature, so every argument below is a typed, validated
    ``--model.init_args.*`` option of both models. Defaults suit 2-D toy data.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        net: the conditional network, a class called as ``net(data_shape)`` (config:
            ``class_path`` + ``init_args``) and then as ``net(x, c)``: (B, *data_shape), (B,)
            -> (B, *data_shape). None: :class:`lebm.nets.ConditionalMLP` with its defaults
            (width 128, 3 conditioned layers); :class:`lebm.nets.UNet` for images.
        lr: Adam learning rate.
        weight_decay: Adam (decoupled, AdamW) weight decay.
        warmup_steps: linear learning-rate warm-up over this many optimizer steps.
        ema_decay: decay of the exponential moving average of the weights used for sampling;
            None disables it (samples then come from the trained weights).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        net: ConditionalNetFactory | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float | None = 0.995,
    ) -> None:
        super().__init__(data_shape)  # saves this signature's arguments and the subclass's
        problems = []
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
        self.net = as_factory(net or ConditionalMLP, "net")(self.data_shape)
        self.ema: AveragedModel | None = None
        if ema_decay is not None:
            self.ema = AveragedModel(
                self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)

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

    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The training loss on held-out data with the sampling (EMA) network, fixed noise."""
        return {"loss": self.per_sample_loss(x, generator, net=self.sampling_net).mean()}

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
