"""Measurements behind the README's VAEBM section (eight Gaussians, a trained checkpoint).

1. The seed's mode-collapse question: modes covered and per-mode weights of the VAE alone
   (``sample_vae``) and of VAEBM (``sample``), 2000 samples each, against the test split.
2. Langevin vs MALA vs HMC as VAEBM's eps-space sampler at an equal budget of 100 gradient
   evaluations per chain (HMC: 25 proposals x 4 leapfrog steps; lebm's HMC reuses the end
   gradient, so a proposal costs L gradients): acceptance, MMD^2 of 2000 chains to the test
   split, and effective sample size per gradient of the decoded x (both coordinates, the
   smaller) from 64 chains of 4000 gradients, the first half dropped.

    OMP_NUM_THREADS=1 python docs/figures/vaebm_measure.py runs/vaebm/eight_gaussians/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import sys

import torch

from datamodules import EightGaussiansDataModule
from lebm.metrics import SampleQuality
from lebm.models import VAEBM
from lebm.models.vaebm import mode_coverage
from lebm.samplers import HMC, MALA, Langevin


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


def quality(real, fake) -> dict[str, float]:
    metric = SampleQuality()
    metric.update(real, fake)
    out = {k: float(v) for k, v in metric.compute().items()}
    cov = mode_coverage(real, fake)
    out["covered"] = int(cov["covered"])
    out["modes"] = int(cov["modes"])
    out["min_weight"] = float(cov["fake_weights"].min())
    out["max_weight"] = float(cov["fake_weights"].max())
    return out


def main(path: str) -> None:
    torch.manual_seed(0)
    model = VAEBM.load_from_checkpoint(path, map_location="cpu").eval()
    data = EightGaussiansDataModule(num_samples=10000, batch_size=128, standardize=True)
    data.setup("test")
    real = torch.cat(list(data.test_dataloader()))[:2000]
    g = torch.Generator().manual_seed(1)
    print("model          mmd      mmd_wide  mode_w_err  covered  min_w  max_w")
    for name, fake in (
        ("VAE alone", model.sample_vae(2000, g)),
        ("VAEBM", model.sample(2000, g)),
    ):
        q = quality(real, fake)
        print(
            f"{name:<14} {q['mmd']:.5f}  {q['mmd_wide']:.5f}  {q['mode_weight_error']:.3f}"
            f"       {q['covered']}/{q['modes']}    {q['min_weight']:.3f}  {q['max_weight']:.3f}"
        )
    s = model.sampler.step_size
    samplers = {
        f"Langevin s={s}": (Langevin(100, s), 1),
        f"MALA s={s}": (MALA(100, s), 1),
        "HMC eps=0.1 L=4": (HMC(25, 0.1, n_leapfrog=4), 4),
        "HMC eps=0.2 L=4": (HMC(25, 0.2, n_leapfrog=4), 4),
    }
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
