"""Speed of ThermoLatentEBM against vanilla, of batched temperatures against a loop, and the
overhead of the GradientVariance callback.

Run ``python -m benchmarks.bench_thermo`` (part of ``make bench``); ``--quick`` is a smoke run.

Rows, per size (toy; Pang's SVHN networks at batch 10 on CPU, where batch 100 with ten
temperatures would take about a minute per iteration):

1. ``vanilla iteration``: LatentEBM posterior + prior chains, per-sample losses, one backward.
2. ``TI iteration, batched``: ThermoLatentEBM with N_t = 10: all N_t x B power-posterior chains
   in one sampler call, the same prior chains, losses, one backward. Ratio TI / vanilla.
3. ``TI iteration, loop over t``: the same estimator with one sampler call per temperature
   (how the seed study sampled). Ratio loop / batched.
4. ``GradientVariance.measure``: one measurement at the callback's defaults (probe 64, both
   sources, 8 redraws) on the vanilla model; its share of training time at the default
   ``every_n_steps`` = measure / (every_n_steps x (vanilla iteration + optimizer step)).

The seed implementation's TI cost 8.8x vanilla at N_t = 10 (temperatures one after another).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.bench_latent_ebm import (
    SVHN,
    TOY,
    Row,
    Size,
    generator_of,
    run_benchmark,
    time_interleaved,
)
from callbacks import GradientVariance
from lebm.models import LatentEBM, ThermoLatentEBM
from lebm.models.latent_ebm import Posterior
from lebm.thermo import PowerPosteriorSamples

RESULTS_PATH = Path(__file__).resolve().parent / "results_thermo.md"
NUM_TEMPERATURES = 10


def build(size: Size, batch: int) -> tuple[LatentEBM, ThermoLatentEBM, torch.Tensor]:
    """Vanilla and TI models with identical networks (Pang's defaults, sigma_eps 0.3)."""
    args = dict(
        data_shape=size.data_shape,
        latent_dim=size.latent_dim,
        generator=generator_of(size),
        likelihood_sigma=0.3,
    )
    torch.manual_seed(0)
    vanilla = LatentEBM(**args)
    thermo = ThermoLatentEBM(num_temperatures=NUM_TEMPERATURES, **args)
    thermo.energy, thermo.generator = vanilla.energy, vanilla.generator  # the same networks
    if size.conv_generator:
        x = torch.rand(batch, *size.data_shape) * 2 - 1
    else:
        x = torch.randn(batch, *size.data_shape)
    return vanilla, thermo, x


def iteration(model: LatentEBM, x: torch.Tensor) -> None:
    losses = model.learning_losses(x)
    (losses["energy"].mean() + losses["generator"].mean()).backward()


def looped_ti_iteration(model: ThermoLatentEBM, x: torch.Tensor) -> None:
    """The TI iteration with one sampler call per temperature instead of one for all."""
    chains = []
    for t in model.ladder.t.tolist():

        def tempered(z, t=t):
            return model.log_prior(z) + t * model.log_likelihood(x, z)

        z0 = model.initial_latents(len(x))
        chains.append(model.posterior_sampler(tempered, z0).sample)
    z = torch.stack(chains)[:, None]  # (N_t, 1, B, d)
    z_neg = model.sample_prior(len(x)).sample
    loss_ebm = (model.energy(z_neg) - model.energy(z[-1, 0])).mean()
    ladder = PowerPosteriorSamples(z, torch.zeros(z.shape[:3]), None, torch.zeros(()))
    loss_gen, _ = model.generator_loss(x, Posterior(z[-1, 0], ladder))
    (loss_ebm + loss_gen.mean()).backward()


def bench(size: Size, batch: int, repeats: int, overhead: bool) -> list[Row]:
    vanilla, thermo, x = build(size, batch)
    fns = {
        "vanilla iteration": lambda: iteration(vanilla, x),
        f"TI iteration (N_t={NUM_TEMPERATURES}), batched": lambda: iteration(thermo, x),
        f"TI iteration (N_t={NUM_TEMPERATURES}), loop over t": lambda: looped_ti_iteration(
            thermo, x
        ),
    }
    timed = time_interleaved(fns, warmup=1, repeats=repeats, min_block_s=0.0, device=x.device)
    label = f"{size.name} B={batch}"
    rows = [Row(label, "cpu", name, secs, n) for name, (secs, n) in timed.items()]
    rows[1].ratio = f"TI / vanilla = {rows[1].median_ms / rows[0].median_ms:.2f}"
    rows[2].ratio = f"loop / batched = {rows[2].median_ms / rows[1].median_ms:.2f}"
    if overhead:
        callback = GradientVariance()
        probe = torch.cat([x] * (callback.probe_size // len(x) + 1))[: callback.probe_size]
        callback.measure(vanilla, probe)  # warm-up
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            callback.measure(vanilla, probe)
            secs.append(time.perf_counter() - t0)
        row = Row(label, "cpu", "GradientVariance.measure (defaults)", secs, 1)
        # an optimizer step adds little at these sizes; the iteration time is the lower bound
        share = row.median_ms / (callback.every_n_steps * rows[0].median_ms + row.median_ms)
        row.ratio = f"{100 * share:.1f}% of training at every_n_steps={callback.every_n_steps}"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> str:
    def rows(quick: bool) -> list[Row]:
        out = bench(TOY, TOY.batch, repeats=2 if quick else 7, overhead=True)
        return out if quick else out + bench(SVHN, 10, repeats=3, overhead=False)

    return run_benchmark(argv, __doc__.splitlines()[0], "TI benchmark", RESULTS_PATH, rows)


if __name__ == "__main__":
    main()
