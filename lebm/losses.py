"""Shared per-sample objectives. Every function returns one value per sample; callers reduce."""

from __future__ import annotations

import math

from torch import Tensor


def gaussian_log_likelihood(x: Tensor, mean: Tensor, sigma: float) -> Tensor:
    """``log N(x; mean, sigma^2 I)`` summed over the event dimensions.

    Args:
        x: observations, shape (B, *event).
        mean: predicted means, shape (B, *event).
        sigma: observation noise standard deviation.

    Returns:
        Log-likelihood per sample, shape (B,), including the normalising constant
        ``-D (log sigma + log(2 pi) / 2)``.
    """
    dim = math.prod(x.shape[1:])
    sq = (x - mean).flatten(1).pow(2).sum(1)
    return -sq / (2.0 * sigma**2) - dim * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))


def gaussian_log_prior(z: Tensor, sigma: float) -> Tensor:
    """Unnormalised ``log N(z; 0, sigma^2 I) = -||z||^2 / (2 sigma^2)``, shape (B,)."""
    return -z.flatten(1).pow(2).sum(1) / (2.0 * sigma**2)


def contrastive_energy_loss(f_pos: Tensor, f_neg: Tensor) -> Tensor:
    """Per-sample maximum-likelihood loss of an EBM with log-density ``f`` (up to log Z).

    Minimising ``mean(f_neg) - mean(f_pos)`` raises ``f`` on positives (data or posterior
    samples) and lowers it on negatives (model samples); its gradient is the log-likelihood
    gradient ``E_pos[grad f] - E_neg[grad f]`` with the sign flipped.

    Args:
        f_pos: ``f`` at positive samples, shape (B,).
        f_neg: ``f`` at negative samples, shape (B,).

    Returns:
        ``f_neg - f_pos``, shape (B,).
    """
    return f_neg - f_pos
