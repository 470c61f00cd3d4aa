"""Shared per-sample objectives. Every function returns one value per sample; callers reduce."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_log_likelihood(x: Tensor, mean: Tensor, sigma: float | Tensor) -> Tensor:
    """``log N(x; mean, sigma^2 I)`` summed over the event dimensions.

    Args:
        x: observations, shape (B, *event).
        mean: predicted means, shape (B, *event).
        sigma: observation noise standard deviation: a float, or a tensor of shape () or (1,)
            (a learned scale; gradients flow into it).

    Returns:
        Log-likelihood per sample, shape (B,), including the normalising constant
        ``-D (log sigma + log(2 pi) / 2)``.
    """
    dim = math.prod(x.shape[1:])
    sq = (x - mean).flatten(1).pow(2).sum(1)
    log_sigma = sigma.log() if isinstance(sigma, Tensor) else math.log(sigma)
    return -sq / (2.0 * sigma**2) - dim * (log_sigma + 0.5 * math.log(2.0 * math.pi))


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """``log Bernoulli(p; sigmoid(logits))`` of data in [-1, 1], summed over event dimensions.

    The target probability is ``p = (x + 1) / 2`` in [0, 1]; for grey levels (p strictly
    between 0 and 1) this is the cross-entropy ``p log s + (1 - p) log(1 - s)``,
    ``s = sigmoid(logits)``, not a normalised density of x (the usual "Bernoulli" VAE on
    grey-scale images).

    Args:
        x: observations in [-1, 1], shape (B, *event).
        logits: decoder outputs, shape (B, *event).

    Returns:
        Log-likelihood per sample, shape (B,).
    """
    target = (x + 1.0) / 2.0
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return -bce.flatten(1).sum(1)


def discretized_logistic_log_likelihood(
    x: Tensor, loc: Tensor, log_scale: Tensor, num_bins: int = 256
) -> Tensor:
    """Discretised logistic ``log P(x)`` of data in [-1, 1] (PixelCNN++, Salimans et al. 2017).

    The interval [-1, 1] holds ``num_bins`` bins of width ``2 / (num_bins - 1)`` centred at
    ``-1 + 2 k / (num_bins - 1)``. With ``F(y) = sigmoid((y - loc) / s)`` and the half width
    ``h = 1 / (num_bins - 1)``::

        P(x) = F(x + h) - F(x - h)        interior bins,
        P(x) = F(-1 + h)                  the first bin (all mass below it),
        P(x) = 1 - F(1 - h)               the last bin (all mass above it),

    so the bins' probabilities sum to 1. The interior difference is computed without
    cancellation, exactly: with ``a = (x + h - loc) / s`` and ``b = (x - h - loc) / s``,
    ``sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b)))``, so
    ``log P = log sigmoid(a) + log sigmoid(-b) + log(-expm1(-2 h / s))`` (no density
    fallback for tiny bins is needed, unlike PixelCNN++'s float32 code).

    Args:
        x: observations in [-1, 1], shape (B, *event); values between bin centres are treated
            as lying in the bin whose interval holds them.
        loc: locations, shape (B, *event).
        log_scale: ``log s``, broadcastable to x (a learned scalar, or per element).
        num_bins: number of bins (256 for 8-bit data).

    Returns:
        Log-probability per sample, shape (B,), summed over event dimensions.
    """
    half = 1.0 / (num_bins - 1)
    inv_scale = torch.exp(-log_scale)
    plus = inv_scale * (x - loc + half)
    minus = inv_scale * (x - loc - half)
    log_cdf_plus = F.logsigmoid(plus)  # log F(x + h): the first bin
    log_survival_minus = F.logsigmoid(-minus)  # log (1 - F(x - h)): the last bin
    log_width = torch.log(-torch.expm1(-2.0 * half * inv_scale))  # log (1 - exp(-(a - b)))
    interior = log_cdf_plus + log_survival_minus + log_width
    log_prob = torch.where(
        x < -1.0 + half,
        log_cdf_plus,
        torch.where(x > 1.0 - half, log_survival_minus, interior),
    )
    return log_prob.flatten(1).sum(1)


def gaussian_kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per sample.

    ``KL = sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1) / 2``.

    Args:
        mu: posterior means, shape (B, d).
        logvar: posterior log-variances, shape (B, d).

    Returns:
        KL divergence per sample, shape (B,), in nats.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).flatten(1).sum(1)


def diagonal_gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Normalised ``log N(z; mu, diag exp(logvar))`` summed over the last dimension.

    Args:
        z: points, shape (..., d).
        mu: means, broadcastable to z.
        logvar: log-variances, broadcastable to z.

    Returns:
        Log-density, shape ``z.shape[:-1]``.
    """
    sq = (z - mu).pow(2) * torch.exp(-logvar)
    return -0.5 * (sq + logvar + math.log(2.0 * math.pi)).sum(-1)


def gaussian_log_prior(z: Tensor, sigma: float) -> Tensor:
    """Unnormalised ``log N(z; 0, sigma^2 I) = -||z||^2 / (2 sigma^2)``, shape (B,)."""
    return -z.flatten(1).pow(2).sum(1) / (2.0 * sigma**2)


def contrastive_energy_loss(f_pos: Tensor, f_neg: Tensor, l2: float = 0.0) -> Tensor:
    """Per-sample maximum-likelihood loss of an EBM with log-density ``f`` (up to log Z).

    Minimising ``mean(f_neg) - mean(f_pos)`` raises ``f`` on positives (data or posterior
    samples) and lowers it on negatives (model samples); its gradient is the log-likelihood
    gradient ``E_pos[grad f] - E_neg[grad f]`` with the sign flipped. ``l2 > 0`` adds the
    energy-magnitude penalty ``l2 (f_pos^2 + f_neg^2)`` (Du and Mordatch 2019), which keeps
    ``f`` from running away when the negatives stop reaching the positives' region.

    Args:
        f_pos: ``f`` at positive samples, shape (B,).
        f_neg: ``f`` at negative samples, shape (B,).
        l2: weight of the penalty (0: none).

    Returns:
        ``f_neg - f_pos [+ l2 (f_pos^2 + f_neg^2)]``, shape (B,).
    """
    loss = f_neg - f_pos
    if l2 > 0:
        loss = loss + l2 * (f_pos.square() + f_neg.square())
    return loss
