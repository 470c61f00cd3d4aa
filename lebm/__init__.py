"""lebm: latent-variable energy-based and score-based generative models on PyTorch Lightning."""

__version__ = "0.1.0"
