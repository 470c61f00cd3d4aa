"""Plain nn.Modules used by the models; each takes typed simple arguments."""

from lebm.nets.mlp import MLP, Activation, EnergyMLP, GeneratorMLP, make_activation

__all__ = ["MLP", "Activation", "EnergyMLP", "GeneratorMLP", "make_activation"]
