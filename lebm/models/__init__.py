"""One LightningModule per file."""

from lebm.models.ddpm import DDPM
from lebm.models.latent_ebm import LatentEBM
from lebm.models.ncsn import NCSN
from lebm.models.thermo_latent_ebm import ThermoLatentEBM

__all__ = ["DDPM", "LatentEBM", "NCSN", "ThermoLatentEBM"]
