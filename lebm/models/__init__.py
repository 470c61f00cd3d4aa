"""One LightningModule per file."""

from lebm.models.latent_ebm import LatentEBM

__all__ = ["LatentEBM"]
