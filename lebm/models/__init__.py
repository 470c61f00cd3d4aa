"""One LightningModule per file."""

from lebm.models.latent_ebm import LatentEBM
from lebm.models.thermo_latent_ebm import ThermoLatentEBM

__all__ = ["LatentEBM", "ThermoLatentEBM"]
