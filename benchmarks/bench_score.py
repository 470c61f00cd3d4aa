"""Overhead of the score-driven samplers over their network, and DDPM / NCSN training steps.

Run ``python -m benchmarks.bench_score`` (part of ``make bench``); ``--quick`` is a smoke run.

Rows, per size (toy: the default ConditionalMLP on 2-D data, batch 128; digits: the
``configs/*/digits.yaml`` U-Net, base 16, on 16x16 images, batch 64):

1. ``network forward``: one call ``net(x, c)`` under ``no_grad``, the floor for a sampler step.
2. ``annealed Langevin step``: ``annealed_langevin`` over 10 levels x 10 steps, per update;
   ratio to row 1 (target <= 1.15: the update is three element-wise ops and a noise draw).
3. ``DDPM ancestral step``: ``ddpm_ancestral`` with T = 100, per step; ratio to row 1.
4. ``DDPM training step`` / ``NCSN training step``: per-sample loss, backward, Adam step.
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

    def ancestral() -> None:
        ddpm_ancestral(lambda y, t: net(y, t.to(y.dtype)), schedule, x)

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


def main(argv: list[str] | None = None) -> str:
    def rows(quick: bool) -> list[Row]:
        out = bench(TOY, repeats=2 if quick else 7)
        return out if quick else out + bench(DIGITS, repeats=5)

    title = "Score-sampler benchmark"
    return run_benchmark(argv, __doc__.splitlines()[0], title, RESULTS_PATH, rows)


if __name__ == "__main__":
    main()
