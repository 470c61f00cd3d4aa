"""One LightningModule per file."""

from lebm.models.ddpm import DDPM
from lebm.models.ebm import EBM
from lebm.models.lae import LangevinAutoencoder
from lebm.models.latent_ebm import LatentEBM
from lebm.models.ncsn import NCSN
from lebm.models.thermo_latent_ebm import ThermoLatentEBM
from lebm.models.vae import VAE
from lebm.models.vaebm import VAEBM

__all__ = [
    "DDPM",
    "EBM",
    "LangevinAutoencoder",
    "LatentEBM",
    "NCSN",
    "ThermoLatentEBM",
    "VAE",
    "VAEBM",
]
