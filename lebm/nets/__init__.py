"""Plain nn.Modules used by the models; each takes typed simple arguments."""

from lebm.nets.conv import ConvEncoder, ConvEnergy, DCGANGenerator
from lebm.nets.mlp import (
    MLP,
    Activation,
    EncoderMLP,
    EnergyMLP,
    FourierEncoder,
    GeneratorMLP,
    make_activation,
)
from lebm.nets.time_mlp import ConditionalMLP, sinusoidal_embedding
from lebm.nets.unet import UNet

__all__ = [
    "MLP",
    "Activation",
    "ConditionalMLP",
    "ConvEncoder",
    "ConvEnergy",
    "DCGANGenerator",
    "EncoderMLP",
    "EnergyMLP",
    "FourierEncoder",
    "GeneratorMLP",
    "UNet",
    "make_activation",
    "sinusoidal_embedding",
]
