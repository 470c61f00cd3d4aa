"""The learned density as a heat map next to the data, and a kernel density baseline's NLL.

For models with a normalisable density in 1-D or 2-D (``lebm.models.EBM``: methods
``normalized_log_density`` and ``gridded``), :class:`DensityMap`

* draws, every ``every_n_epochs`` validation epochs (and after the last), the held-out data
  beside the model's density ``exp(f(x) - log Z)`` (2-D: a heat map; 1-D: the density curve
  over the data histogram, with the KDE's curve), to ``<run>/density/epoch=NNN.png`` and
  ``<run>/density.png`` (and to loggers that take images);
* logs the baseline ``val/kde_nll`` and ``test/kde_nll``: the mean negative log-likelihood
  (nats per point) of a Gaussian KDE fitted on the training split, its bandwidth chosen by
  the validation split's likelihood (:func:`lebm.density.kde_log_density`; so ``val/kde_nll``
  is slightly optimistic, ``test/kde_nll`` is not), beside the model's ``val/nll`` / ``test/nll``.

It only observes: nothing here changes the model or its training.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from callbacks._paths import log_image_to_loggers, logging_step, run_dir
from lebm.data import batch_data
from lebm.density import grid_points, kde_log_density


def _collect(loaders: Iterable | None, limit: int) -> Tensor | None:
    """Up to ``limit`` points from a dataloader (or a list of them)."""
    if loaders is None:
        return None
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    parts, count = [], 0
    for loader in loaders:
        for batch in loader:
            parts.append(batch_data(batch).cpu())
            count += len(parts[-1])
            if count >= limit:
                return torch.cat(parts)[:limit]
    return torch.cat(parts) if parts else None


class DensityMap(Callback):
    """Heat map of the learned density next to the data, and the KDE baseline's NLL.

    Args:
        every_n_epochs: plot after every n-th validation epoch (and always after the last).
        resolution: plot cells per axis (2-D) or curve points (1-D).
        margin: the plotted box is the data's bounding box widened by this fraction of its
            size on every side.
        max_points: at most this many points of a split are used (KDE fit, scatter).
        kde: log the KDE baseline (``val/kde_nll``, ``test/kde_nll``).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        resolution: int = 200,
        margin: float = 0.15,
        max_points: int = 10_000,
        kde: bool = True,
    ) -> None:
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("resolution", resolution),
            ("max_points", max_points),
        ):
            if value < 1:
                raise ValueError(f"DensityMap: {name} must be >= 1, got {value}")
        if not margin >= 0:
            raise ValueError(f"DensityMap: margin must be >= 0, got {margin}")
        self.every_n_epochs, self.resolution = every_n_epochs, resolution
        self.margin, self.max_points, self.kde = margin, max_points, kde
        self._kde_nll: dict[str, Tensor] = {}
        self._bandwidth: float | None = None

    # ----------------------------------------------------------------- data
    def _split(self, trainer: L.Trainer, name: str) -> Tensor | None:
        split = getattr(trainer.datamodule, "split", None)
        if callable(split):
            return split(name)[: self.max_points].cpu()
        dm = trainer.datamodule
        if dm is None:
            return None
        loader = getattr(dm, f"{name}_dataloader", None)
        return _collect(loader() if callable(loader) else None, self.max_points)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not (hasattr(pl_module, "normalized_log_density") and hasattr(pl_module, "gridded")):
            raise TypeError(
                f"DensityMap needs a model with a normalisable density (normalized_log_density, "
                f"gridded), such as lebm.models.EBM; got {type(pl_module).__name__}"
            )

    def kde_nll(self, trainer: L.Trainer, name: str) -> Tensor | None:
        """Mean KDE NLL of split ``name`` (cached); None without train and val data."""
        if name not in self._kde_nll:
            train, val = self._split(trainer, "train"), self._split(trainer, "val")
            target = self._split(trainer, name)
            if train is None or val is None or target is None or len(val) == 0:
                return None
            log_p, self._bandwidth = kde_log_density(train, val, target)
            self._kde_nll[name] = -log_p.float().mean()
        return self._kde_nll[name]

    # ----------------------------------------------------------------- hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not pl_module.gridded:
            return
        if self.kde and (value := self.kde_nll(trainer, "val")) is not None:
            pl_module.log("val/kde_nll", value.to(pl_module.device), sync_dist=False)
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        out = run_dir(trainer)  # on every rank: trainer.log_dir is a collective under DDP
        if not trainer.is_global_zero:
            return
        path = out / "density" / f"epoch={epoch:03d}.png"
        title = f"{type(pl_module).__name__}, epoch {epoch}, iteration {logging_step(trainer)}"
        self.plot(trainer, pl_module, path, title)
        shutil.copyfile(path, out / "density.png")
        log_image_to_loggers(trainer, "density", path)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.kde and pl_module.gridded and (value := self.kde_nll(trainer, "test")) is not None:
            pl_module.log("test/kde_nll", value.to(pl_module.device), sync_dist=False)

    # ----------------------------------------------------------------- figure
    @torch.no_grad()
    def plot(
        self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path, title: str = ""
    ) -> None:
        """Data beside the model's normalised density, written to ``path``."""
        from lebm.plotting import plt

        data = self._split(trainer, "val")
        if data is None or len(data) == 0:
            # a private stream: a plotting callback must not move the training's global RNG
            generator = torch.Generator(pl_module.device).manual_seed(0)
            data = pl_module.sample(1000, generator=generator).cpu()
        data = data.flatten(1).float()
        low, high = data.min(0).values, data.max(0).values
        pad = self.margin * (high - low).clamp_min(1e-3)
        low, high = (low - pad).min().item(), (high + pad).max().item()  # a square box
        dim = data.shape[1]
        points, _ = grid_points(dim, (low, high), self.resolution, device=pl_module.device)
        density = pl_module.normalized_log_density(points).exp().float().cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        if dim == 1:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.hist(data[:, 0].numpy(), bins=60, range=(low, high), density=True, color="0.75")
            ax.plot(points[:, 0].cpu().numpy(), density.numpy(), lw=2, label="model")
            if self.kde and self._bandwidth is not None:
                train = self._split(trainer, "train")
                kde = kde_log_density(train, train[:1], points.cpu(), [self._bandwidth])[0]
                ax.plot(points[:, 0].cpu().numpy(), kde.exp().numpy(), "--", lw=1, label="KDE")
            ax.set_xlim(low, high)
            ax.set_ylabel("density")
            ax.legend(loc="upper right")
            ax.set_title(title)
        else:
            fig, axes = plt.subplots(1, 2, figsize=(10, 5))
            axes[0].scatter(data[:, 0], data[:, 1], s=2, c="0.3")
            axes[0].set_title("held-out data")
            axes[1].imshow(
                density.view(self.resolution, self.resolution).numpy(),
                origin="lower",
                extent=(low, high, low, high),
                cmap="viridis",
                interpolation="nearest",
            )
            axes[1].set_title("model density exp(f - log Z)")
            for ax in axes:
                ax.set_xlim(low, high)
                ax.set_ylim(low, high)
                ax.set_aspect("equal")
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        if not math.isfinite(float(density.sum())):
            raise FloatingPointError(f"DensityMap: the plotted density is not finite ({path})")
