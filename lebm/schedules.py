"""Noise schedules for diffusion (DDPM) and noise-conditional score models (NCSN).

Both are small plain objects holding tensors; the network is passed in when called.

Timestep convention of :class:`NoiseSchedule` (as in improved-diffusion): integer ``t`` in
``0 .. T-1`` indexes the noising steps, ``t = 0`` being the first one. With ``x_0`` the data,
index ``t`` refers to the state *after* step ``t``::

    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I),     alpha_t = 1 - beta_t
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),    abar_t = prod_{s <= t} alpha_s

so ``add_noise(x0, eps, t=0)`` is one step of noise (Ho et al.'s ``x_1``) and ``t = T - 1`` is
the last (``x_T``). ``alpha_bars_prev[t]`` is ``abar_{t-1}``, with ``abar_{-1} = 1`` (the clean
data): the posterior ``q(x_{t-1} | x_t, x_0)`` at ``t = 0`` is a point mass at ``x_0``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ScheduleName = Literal["linear", "cosine"]


def _storage_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_timesteps(t: Tensor, num_steps: int) -> None:
    """Integer dtype, one dimension; the range is checked on the host for CPU tensors only
    (on an accelerator that would cost a device sync per call)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"timesteps must be a tensor of integers, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"timesteps must be integers in [0, {num_steps}) (0-indexed noising steps), got "
            f"dtype {t.dtype}"
        )
    if t.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(t.shape)}")
    if t.device.type == "cpu" and t.numel() > 0:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_steps:
            raise ValueError(
                f"timesteps must lie in [0, {num_steps - 1}] (0-indexed), got min {lo}, max {hi}"
            )


def _gather(values: Tensor, t: Tensor, like: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``values[t]``: shape (B,) in ``dtype`` when ``like`` is None, else (B, 1, ..., 1) in
    ``like``'s dtype. A schedule left on another device than ``t`` is copied over per call."""
    out = values[t.to(values.device)] if values.device != t.device else values[t]
    out = out.to(t.device)
    if like is None:
        return out.to(dtype)
    return out.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class NoiseSchedule:
    """A DDPM variance schedule ``beta_0 .. beta_{T-1}`` and every quantity derived from it.

    Tensors are stored in float64 (float32 on MPS) and handed out in the dtype of the tensor
    they are combined with, so float32 training loses nothing to the long cumulative product.

    Args:
        betas: variances of the T noising steps, shape (T,), each in (0, 1).

    Attributes (all shape (T,)):
        betas: ``beta_t``.
        alphas: ``alpha_t = 1 - beta_t``.
        alpha_bars: ``abar_t = prod_{s <= t} alpha_s``.
        alpha_bars_prev: ``abar_{t-1}`` with ``abar_{-1} = 1``.
        sqrt_alpha_bars, sqrt_one_minus_alpha_bars: the marginal's mean coefficient and std.
        posterior_variance: ``beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``
            (0 at t = 0).
        posterior_mean_coef_x0: ``beta_t sqrt(abar_{t-1}) / (1 - abar_t)``.
        posterior_mean_coef_xt: ``sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)``.
        num_steps: T.
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(
                f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}"
            )
        betas = betas.to(_storage_dtype(betas.device))
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"every beta must lie in (0, 1), got min {betas.min().item():g}, "
                f"max {betas.max().item():g}"
            )
        self.num_steps = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.alpha_bars_prev = torch.cat([betas.new_ones(1), self.alpha_bars[:-1]])
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()
        one_minus = 1.0 - self.alpha_bars
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / one_minus
        self.posterior_mean_coef_x0 = betas * self.alpha_bars_prev.sqrt() / one_minus
        self.posterior_mean_coef_xt = self.alphas.sqrt() * (1.0 - self.alpha_bars_prev) / one_minus

    # ----------------------------------------------------------------------------------------
    # constructors

    @classmethod
    def linear(
        cls,
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        rescale: bool = True,
    ) -> NoiseSchedule:
        """Betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020).

        With ``rescale`` both ends are multiplied by ``1000 / num_steps`` (improved-diffusion),
        so that a short schedule for toy data still ends near ``abar_T = 0``: at T = 1000 it
        is Ho et al.'s schedule unchanged (``abar_T`` = 4.0e-5); at T = 100 ``abar_T`` = 2.0e-5,
        where the unscaled one would stop at 0.36.

        Raises:
            ValueError: ``num_steps < 1``, ends not ``0 < beta_start <= beta_end``, or a
                rescaled ``beta_end >= 1`` (T below ``1000 * beta_end``).
        """
        _check_num_steps(num_steps)
        if not 0 < beta_start <= beta_end:
            raise ValueError(
                f"need 0 < beta_start <= beta_end, got beta_start={beta_start:g}, "
                f"beta_end={beta_end:g}"
            )
        scale = 1000.0 / num_steps if rescale else 1.0
        start, end = beta_start * scale, beta_end * scale
        if end >= 1:
            raise ValueError(
                f"rescaled beta_end = {beta_end:g} * 1000 / {num_steps} = {end:g} must be < 1: use "
                f"num_steps > {int(1000 * beta_end)}, a smaller beta_end, or rescale=False"
            )
        return cls(torch.linspace(start, end, num_steps, dtype=torch.float64))

    @classmethod
    def cosine(
        cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999
    ) -> NoiseSchedule:
        """Cosine schedule (Nichol and Dhariwal 2021)::

            abar(t) = f(t) / f(0),  f(t) = cos^2(pi/2 * (t/T + s) / (1 + s)),
            beta_t = min(1 - abar(t + 1) / abar(t), max_beta),  t = 0 .. T-1.

        The clip makes the last beta ``max_beta`` (``abar`` is exactly 0 at t = T before it).

        Raises:
            ValueError: ``num_steps < 1``, ``s < 0`` or ``max_beta`` outside (0, 1).
        """
        _check_num_steps(num_steps)
        if not s >= 0:
            raise ValueError(f"cosine offset s must be >= 0, got {s:g}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta:g}")
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = (1.0 - abar[1:] / abar[:-1]).clamp(min=0.0, max=max_beta)
        # guard the tiny first beta at s = 0 (abar(1)/abar(0) can round to 1)
        betas = betas.clamp(min=torch.finfo(torch.float64).tiny)
        return cls(betas)

    @classmethod
    def from_name(cls, name: ScheduleName, num_steps: int = 1000, **kwargs) -> NoiseSchedule:
        """``linear`` (rescaled, Ho et al.'s ends) or ``cosine``; ``kwargs`` go to
        :meth:`linear` (``beta_start``, ``beta_end``, ``rescale``) or :meth:`cosine`.

        Raises:
            ValueError: an unknown name.
        """
        if name == "linear":
            return cls.linear(num_steps, **kwargs)
        if name == "cosine":
            return cls.cosine(num_steps, **kwargs)
        raise ValueError(f"unknown noise schedule {name!r}; choose 'linear' or 'cosine'")

    # ----------------------------------------------------------------------------------------
    # plain-object protocol

    _TENSORS = (
        "betas",
        "alphas",
        "alpha_bars",
        "alpha_bars_prev",
        "sqrt_alpha_bars",
        "sqrt_one_minus_alpha_bars",
        "posterior_variance",
        "posterior_mean_coef_x0",
        "posterior_mean_coef_xt",
    )

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(num_steps={self.num_steps}, beta=[{self.betas[0].item():.3g} .. "
            f"{self.betas[-1].item():.3g}], alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy with every tensor on ``device`` (float64, or float32 where the device
        has no float64); ``self`` is unchanged."""
        device = torch.device(device)
        dtype = _storage_dtype(device)
        new = object.__new__(type(self))
        new.num_steps = self.num_steps
        for name in self._TENSORS:
            setattr(new, name, getattr(self, name).to(device=device, dtype=dtype))
        return new

    # ----------------------------------------------------------------------------------------
    # the forward process and its posterior

    def marginal(
        self, t: Tensor, like: Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """Coefficients of ``q(x_t | x_0) = N(mean_coef * x_0, std^2 I)``.

        Args:
            t: integer timesteps, shape (B,), in ``0 .. T-1``.
            like: when given, results are shaped (B, 1, ..., 1) to broadcast against it and
                take its dtype; otherwise shape (B,) in ``dtype``.
            dtype: dtype of the (B,) results when ``like`` is None.

        Returns:
            (``sqrt(abar_t)``, ``sqrt(1 - abar_t)``), on ``t``'s device.
        """
        _check_timesteps(t, self.num_steps)
        return (
            _gather(self.sqrt_alpha_bars, t, like, dtype),
            _gather(self.sqrt_one_minus_alpha_bars, t, like, dtype),
        )

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Sample ``q(x_t | x_0)`` by reparameterisation:
        ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.

        Args:
            x0: data, shape (B, *event).
            eps: standard normal noise, same shape.
            t: integer timesteps, shape (B,).

        Returns:
            x_t, shape (B, *event), dtype of ``x0``.
        """
        if eps.shape != x0.shape:
            raise ValueError(f"eps must have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}")
        _check_batch(t, x0)
        mean_coef, std = self.marginal(t, like=x0)
        return mean_coef * x0 + std * eps

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Invert :meth:`add_noise` for ``x_0``:
        ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``. Shapes as in add_noise."""
        _check_batch(t, x_t)
        mean_coef, std = self.marginal(t, like=x_t)
        return (x_t - std * eps) / mean_coef

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``q(x_{t-1} | x_t, x_0) = N(mean, variance I)``, the Gaussian conditional of the
        forward process (Ho et al. eq. 6-7)::

            mean = posterior_mean_coef_x0[t] x_0 + posterior_mean_coef_xt[t] x_t,
            variance = beta_tilde_t

        At ``t = 0`` this is a point mass at ``x_0`` (variance 0).

        Returns:
            (mean of shape (B, *event); variance of shape (B, 1, ..., 1)), dtype of ``x_t``.
        """
        if x0.shape != x_t.shape:
            raise ValueError(
                f"x0 and x_t must share a shape, got {tuple(x0.shape)}, {tuple(x_t.shape)}"
            )
        _check_batch(t, x_t)
        _check_timesteps(t, self.num_steps)
        coef_x0 = _gather(self.posterior_mean_coef_x0, t, x_t, x_t.dtype)
        coef_xt = _gather(self.posterior_mean_coef_xt, t, x_t, x_t.dtype)
        variance = _gather(self.posterior_variance, t, x_t, x_t.dtype)
        return coef_x0 * x0 + coef_xt * x_t, variance

    def sample_timesteps(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``n`` timesteps drawn uniformly from ``0 .. T-1``, dtype long.

        ``device`` defaults to the generator's device, else the schedule's.
        """
        if device is None:
            device = generator.device if generator is not None else self.device
        return torch.randint(0, self.num_steps, (n,), generator=generator, device=device)


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def _check_batch(t: Tensor, x: Tensor) -> None:
    if isinstance(t, Tensor) and t.shape != x.shape[:1]:
        raise ValueError(
            f"timesteps must have shape ({x.shape[0]},) (one per sample), got {tuple(t.shape)}"
        )


class SigmaLadder:
    """Geometric noise levels ``sigma_max = sigma_1 > ... > sigma_L = sigma_min`` (NCSN).

    Args:
        sigma_max: the largest level; NCSNv2 suggests about the largest pairwise distance
            between training points.
        sigma_min: the smallest level.
        num_levels: L >= 1 (L = 1 needs ``sigma_max == sigma_min``: a single level, plain
            denoising score matching).

    Attributes:
        sigmas: shape (L,), descending, float64 (float32 on MPS); pass it to
            :func:`lebm.samplers.annealed_langevin` and
            :func:`lebm.score_matching.denoising_score_matching`, which cast it.
        num_levels: L.
    """

    def __init__(
        self, sigma_max: float = 1.0, sigma_min: float = 0.01, num_levels: int = 10
    ) -> None:
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
        if not 0 < sigma_min <= sigma_max < math.inf:
            raise ValueError(
                f"need 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min:g}, "
                f"sigma_max={sigma_max:g}"
            )
        if num_levels == 1 and sigma_min != sigma_max:
            raise ValueError(
                f"a single level needs sigma_max == sigma_min, got {sigma_max:g} and {sigma_min:g}"
            )
        if num_levels > 1 and sigma_min == sigma_max:
            raise ValueError(
                f"{num_levels} levels need sigma_max > sigma_min, got both {sigma_max:g}"
            )
        self.num_levels = num_levels
        self.sigmas = torch.logspace(
            math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64
        )
        # exact ends (logspace rounds through log10)
        self.sigmas[0], self.sigmas[-1] = sigma_max, sigma_min

    @property
    def device(self) -> torch.device:
        return self.sigmas.device

    def __len__(self) -> int:
        return self.num_levels

    def __repr__(self) -> str:
        return (
            f"SigmaLadder(sigma_max={self.sigmas[0].item():g}, "
            f"sigma_min={self.sigmas[-1].item():g}, num_levels={self.num_levels})"
        )

    def to(self, device: torch.device | str) -> SigmaLadder:
        """A copy with ``sigmas`` on ``device``; ``self`` is unchanged."""
        device = torch.device(device)
        new = object.__new__(type(self))
        new.num_levels = self.num_levels
        new.sigmas = self.sigmas.to(device=device, dtype=_storage_dtype(device))
        return new

    def sample_levels(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``n`` level indices drawn uniformly from ``0 .. L-1``, dtype long (index 0 is
        ``sigma_max``). ``device`` defaults to the generator's device, else the ladder's."""
        if device is None:
            device = generator.device if generator is not None else self.device
        return torch.randint(0, self.num_levels, (n,), generator=generator, device=device)
