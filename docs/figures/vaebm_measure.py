"""Measurements behind the README's VAEBM section (eight Gaussians, a trained checkpoint).

1. The seed's mode-collapse question and stage 2's gain: MMD^2, modes covered, per-mode
   weights and the off-mode fraction (samples farther than 3 mode standard deviations from
   every mode centre; the centres and the standard deviation are those of the test split's
   modes) of the VAE alone (``sample_vae``) and of VAEBM (``sample``), 2000 samples each from
   three sampling seeds, against the test split (1000 points; its own off-mode fraction is
   printed as the floor).
2. Langevin vs MALA vs HMC as VAEBM's eps-space sampler at an equal budget of gradient
   evaluations per chain, the checkpoint's sampler length (HMC: proposals x 4 leapfrog steps;
   lebm's HMC reuses the end gradient, so a proposal costs L gradients): acceptance, MMD^2 of
   2000 chains to the test split, and effective sample size per gradient of the decoded x
   (both coordinates, the smaller) from 64 chains of 4000 gradients, the first half dropped.

The scatter of the test split, the VAE's and VAEBM's samples (2000 each, seed 1) goes to
``docs/figures/vaebm_eight_gaussians_samples.png``.

    OMP_NUM_THREADS=1 python docs/figures/vaebm_measure.py runs/vaebm/eight_gaussians/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from datamodules import EightGaussiansDataModule
from lebm.metrics import SampleQuality, mode_components
from lebm.models import VAEBM
from lebm.models.vaebm import mode_coverage
from lebm.samplers import HMC, MALA, Langevin

FIGURE = Path(__file__).with_name("vaebm_eight_gaussians_samples.png")


def scatter_figure(model: VAEBM, real: torch.Tensor, path: Path = FIGURE) -> None:
    """Test split | VAE alone | VAEBM, 2000 samples each (seed 1), with off-mode fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("test split", real),
        ("VAE alone", model.sample_vae(2000, torch.Generator().manual_seed(1))),
        ("VAEBM", model.sample(2000, torch.Generator().manual_seed(1))),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), sharex=True, sharey=True)
    for ax, (title, x) in zip(axes, panels, strict=True):
        off = off_mode_fraction(real, x)[0]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.set_title(f"{title} (off-mode {off:.2f})")
        ax.set_aspect("equal")
        ax.set_xlim(-2.2, 2.2)
        ax.set_ylim(-2.2, 2.2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ess(chains: torch.Tensor) -> float:
    """Effective sample size of (T, C) scalar chains: C T / (1 + 2 sum rho_k), rho summed
    while positive (Geyer's initial positive sequence, simplified)."""
    x = chains - chains.mean(0)
    steps = x.shape[0]
    var = x.pow(2).mean()
    tau = 1.0
    for k in range(1, steps // 2):
        rho = (x[k:] * x[:-k]).mean() / var
        if rho <= 0:
            break
        tau += 2 * rho.item()
    return chains.shape[1] * steps / tau


def off_mode_fraction(real, fake) -> tuple[float, float]:
    """Fraction of ``fake`` (and of ``real``) farther than 3 mode standard deviations from
    every mode centre of ``real``."""
    labels = mode_components(real.double())
    k = int(labels.max()) + 1
    centers = torch.stack([real[labels == i].mean(0) for i in range(k)])
    std = torch.stack([real[labels == i].std(0) for i in range(k)]).mean()

    def frac(x):
        return float((torch.cdist(x.float(), centers).min(1).values > 3 * std).float().mean())

    return frac(fake), frac(real)


def quality(real, fake) -> dict[str, float]:
    metric = SampleQuality()
    metric.update(real, fake)
    out = {k: float(v) for k, v in metric.compute().items()}
    cov = mode_coverage(real, fake)
    out["covered"] = int(cov["covered"])
    out["modes"] = int(cov["modes"])
    out["min_weight"] = float(cov["fake_weights"].min())
    out["max_weight"] = float(cov["fake_weights"].max())
    out["off"], out["off_real"] = off_mode_fraction(real, fake)
    return out


def main(path: str) -> None:
    torch.manual_seed(0)
    model = VAEBM.load_from_checkpoint(path, map_location="cpu").eval()
    data = EightGaussiansDataModule(num_samples=10000, batch_size=128, standardize=True)
    data.setup("test")
    real = torch.cat(list(data.test_dataloader()))[:2000]
    print(
        f"test split: {len(real)} points, off-mode fraction {off_mode_fraction(real, real)[1]:.4f}"
    )
    print("model      seed  mmd      mmd_wide  mode_w_err  covered  min_w  max_w  off-mode")
    for seed in (1, 2, 3):
        for name, draw in (("VAE alone", model.sample_vae), ("VAEBM", model.sample)):
            q = quality(real, draw(2000, torch.Generator().manual_seed(seed)))
            print(
                f"{name:<10} {seed:>4}  {q['mmd']:.5f}  {q['mmd_wide']:.5f}  "
                f"{q['mode_weight_error']:.3f}       {q['covered']}/{q['modes']}    "
                f"{q['min_weight']:.3f}  {q['max_weight']:.3f}  {q['off']:.3f}"
            )
    s, budget = model.sampler.step_size, model.sampler.n_steps
    samplers = {
        f"Langevin s={s}": (Langevin(budget, s), 1),
        f"MALA s={s}": (MALA(budget, s), 1),
        "HMC eps=0.1 L=4": (HMC(budget // 4, 0.1, n_leapfrog=4), 4),
        "HMC eps=0.2 L=4": (HMC(budget // 4, 0.2, n_leapfrog=4), 4),
    }
    print(f"equal budget: {budget} gradients per chain")
    print("sampler           accept  mmd      ess/grad")
    for name, (sampler, grads) in samplers.items():
        eps0 = model.initial_noise(2000, torch.Generator().manual_seed(2))
        result = sampler(model.log_target, eps0, generator=torch.Generator().manual_seed(3))
        x = model.decode(result.sample)[0].detach()
        mmd = quality(real, x)["mmd"]
        accept = "-" if result.acceptance_rate is None else f"{result.acceptance_rate.mean():.2f}"
        long = sampler(
            model.log_target,
            model.initial_noise(64, torch.Generator().manual_seed(4)),
            generator=torch.Generator().manual_seed(5),
            n_steps=4000 // grads,
            return_trajectory=True,
        )
        traj = long.trajectory[long.trajectory.shape[0] // 2 :]  # (T, C, state)
        xs = torch.stack([model.decode(t)[0].detach() for t in traj])  # (T, C, 2)
        e = min(ess(xs[..., 0]), ess(xs[..., 1])) / (64 * (traj.shape[0] - 1) * grads)
        print(f"{name:<17} {accept:>6}  {mmd:.5f}  {e:.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
