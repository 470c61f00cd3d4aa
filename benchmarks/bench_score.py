"""Overhead of the score-driven samplers over their network, and DDPM / NCSN training steps.

Run ``python -m benchmarks.bench_score`` (part of ``make bench``); ``--quick`` is a smoke run.

Rows, per size (toy: the default ConditionalMLP on 2-D data, batch 128; digits: the
``configs/*/digits.yaml`` U-Net, base 16, on 16x16 images, batch 64):

1. ``network forward``: one call ``net(x, c)`` under ``no_grad``, the floor for a sampler step.
2. ``annealed Langevin step``: ``annealed_langevin`` over 10 levels x 10 steps, per update;
   ratio to row 1 (target <= 1.15: the update is two fused element-wise ops and a norm).
3. ``DDPM ancestral step``: ``ddpm_ancestral`` with T = 100, per step, as ``DDPM`` calls it
   (float timesteps built once); ratio to row 1 (target <= 1.10).
4. ``DDPM training step`` / ``NCSN training step``: per-sample loss, backward, Adam step.
5. ``DDPM sampling loop`` (lebm) vs (diffusers): the whole T-step loop, lebm's
   ``ddpm_ancestral`` against diffusers' ``DDPMScheduler.step`` loop on the same network and
   betas (needs the ``bench`` dependency group). Ratio diffusers / lebm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.bench_latent_ebm import Row, run_benchmark, time_interleaved
from lebm.models import DDPM, NCSN
from lebm.nets import ConditionalMLP, UNet
from lebm.samplers import annealed_langevin, ddpm_ancestral
from lebm.schedules import NoiseSchedule, SigmaLadder

RESULTS_PATH = Path(__file__).resolve().parent / "results_score.md"
LEVELS, STEPS_EACH, T = 10, 10, 100


@dataclass(frozen=True)
class ScoreSize:
    name: str
    data_shape: tuple[int, ...]
    batch: int
    net: Callable[..., torch.nn.Module]  # called by the model as net(data_shape)


TOY = ScoreSize("toy", (2,), 128, ConditionalMLP)
DIGITS = ScoreSize(
    "digits16",
    (1, 16, 16),
    64,
    functools.partial(
        UNet,
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        dropout=0.0,
    ),
)


def bench(size: ScoreSize, repeats: int, min_block_s: float = 0.2) -> list[Row]:
    torch.manual_seed(0)
    ddpm = DDPM(data_shape=size.data_shape, num_timesteps=T, net=size.net)
    ncsn = NCSN(data_shape=size.data_shape, net=size.net)
    net = ncsn.net.eval()
    x = torch.randn(size.batch, *size.data_shape)
    c = torch.full((size.batch,), 0.5)
    ladder = SigmaLadder(1.0, 0.01, LEVELS)
    schedule = NoiseSchedule.linear(T)
    score = ncsn.score_fn(net)
    opt_ddpm = torch.optim.Adam(ddpm.net.parameters(), 1e-4)
    opt_ncsn = torch.optim.Adam(ncsn.net.parameters(), 1e-4)

    def forward() -> None:
        with torch.no_grad():
            net(x, c)

    def annealed() -> None:
        annealed_langevin(score, x, ladder.sigmas, STEPS_EACH, 1e-5)

    def ancestral() -> None:  # as DDPM._sample calls it: float timesteps built once
        ddpm_ancestral(net, schedule, x, t_dtype=x.dtype)

    def train(model, opt):
        def step() -> None:
            loss = model.per_sample_loss(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    fns = {
        "network forward": forward,
        "annealed Langevin step": annealed,
        "DDPM ancestral step": ancestral,
        "DDPM training step": train(ddpm, opt_ddpm),
        "NCSN training step": train(ncsn, opt_ncsn),
    }
    times = time_interleaved(
        fns, warmup=2, repeats=repeats, min_block_s=min_block_s, device=torch.device("cpu")
    )
    per_call = {"annealed Langevin step": LEVELS * STEPS_EACH, "DDPM ancestral step": T}
    rows = []
    for name, (seconds, calls) in times.items():
        seconds = [s / per_call.get(name, 1) for s in seconds]
        rows.append(Row(size.name, "cpu", name, seconds, calls))
    floor = rows[0].median_ms
    for row in rows[1:3]:
        row.ratio = f"{row.median_ms / floor:.2f} x forward"
    return rows


def diffusers_rows(size: ScoreSize, repeats: int) -> list[Row]:
    """lebm's DDPM sampling loop against diffusers' DDPMScheduler loop driving the same network
    on the same schedule (its betas passed as ``trained_betas``), variance beta_t
    (``fixed_large``, lebm's ``"large"``), no clipping, epsilon prediction, T steps, the same
    start and batch. Empty when diffusers is not installed (``uv sync --group bench``)."""
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        print("diffusers not installed (uv sync --group bench): no diffusers rows", flush=True)
        return []
    torch.manual_seed(0)
    ddpm = DDPM(data_shape=size.data_shape, num_timesteps=T, net=size.net)
    net = ddpm.net.eval()
    schedule = ddpm.schedule
    scheduler = DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=schedule.betas.tolist(),
        variance_type="fixed_large",
        clip_sample=False,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(T)
    x_T = torch.randn(size.batch, *size.data_shape)

    def lebm_loop() -> None:
        ddpm_ancestral(net, schedule, x_T, t_dtype=x_T.dtype)

    def diffusers_loop() -> None:
        x = x_T
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = net(x, torch.full((len(x),), float(t)))
                x = scheduler.step(eps, t, x).prev_sample

    times = time_interleaved(
        {"lebm": lebm_loop, "diffusers": diffusers_loop},
        warmup=1,
        repeats=repeats,
        min_block_s=0.0,
        device=torch.device("cpu"),
    )
    rows = [
        Row(size.name, "cpu", f"DDPM sampling loop, T={T} (lebm)", *times["lebm"]),
        Row(size.name, "cpu", f"DDPM sampling loop, T={T} (diffusers)", *times["diffusers"]),
    ]
    rows[1].ratio = f"diffusers / lebm = {rows[1].median_ms / rows[0].median_ms:.2f}"
    return rows


def main(argv: list[str] | None = None) -> str:
    def rows(quick: bool) -> list[Row]:
        out = bench(TOY, repeats=2 if quick else 7) + diffusers_rows(TOY, 2 if quick else 7)
        if quick:
            return out
        return out + bench(DIGITS, repeats=5) + diffusers_rows(DIGITS, 3)

    title = "Score-sampler benchmark"
    return run_benchmark(argv, __doc__.splitlines()[0], title, RESULTS_PATH, rows)


if __name__ == "__main__":
    main()
