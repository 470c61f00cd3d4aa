"""Speed of ThermoLatentEBM against vanilla, of batched temperatures against a loop, and the
overhead of the GradientVariance callback.

Run ``python -m benchmarks.bench_thermo`` (part of ``make bench``); ``--quick`` is a smoke run.

Rows, per size (toy; Pang's SVHN networks at batch 10 on CPU, where batch 100 with ten
temperatures would take about a minute per iteration):

1. ``vanilla iteration``: LatentEBM posterior + prior chains, per-sample losses, one backward.
2. ``TI iteration, batched``: ThermoLatentEBM with N_t = 10: all N_t x B power-posterior chains
   in one sampler call, the same prior chains, losses, one backward. Ratio TI / vanilla, and
   (MLP sizes) the ratio of their matrix-product FLOPs counted by :func:`linear_flops`.
3. ``TI iteration, loop over t``: the same estimator with one sampler call per temperature
   (how the seed study sampled). Ratio loop / batched.
5. ``peak memory``: one iteration at the SVHN size (batch 100, chains shortened to 2 steps;
   the peak does not grow with steps) in a fresh process each: vanilla, TI with all N_t x B
   chains at once, TI with ``chunk_size`` = B; the resident-set high-water mark
   (``ru_maxrss``) above its value before the iteration, in MiB (in the ms column).
4. ``GradientVariance.measure``: one measurement at the callback's defaults (probe 64, both
   sources, 8 redraws) on the vanilla model; its share of training time at the default
   ``every_n_steps`` = measure / (every_n_steps x (vanilla iteration + optimizer step)).

The seed implementation's TI cost 8.8x vanilla at N_t = 10 (temperatures one after another).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
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
from lebm.samplers import Langevin
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


def linear_flops(model: torch.nn.Module, x: torch.Tensor) -> int | None:
    """Multiply-add FLOPs (2 per multiply-add) of every ``nn.Linear`` forward in one
    :func:`iteration`, counted by forward hooks; None when the model has layers of other
    kinds with weights (convolutions), which this does not count. Each sampler step's backward
    mirrors its forward, so the ratio of two models' counts is their arithmetic ratio."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weighted = [m for m in model.modules() if getattr(m, "weight", None) is not None]
    if len(weighted) > len(layers):  # convolutions (or other weighted layers) too
        return None
    total = 0

    def count(layer, inputs, _output) -> None:
        nonlocal total
        total += (
            2 * (inputs[0].numel() // layer.in_features) * layer.in_features * layer.out_features
        )

    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        iteration(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    model.zero_grad(set_to_none=True)
    return total


def bench(size: Size, batch: int, repeats: int, overhead: bool) -> list[Row]:
    vanilla, thermo, x = build(size, batch)
    flops = linear_flops(vanilla, x), linear_flops(thermo, x)
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
    if None not in flops:  # the arithmetic the estimator needs, for comparison
        rows[1].ratio += f" (arithmetic {flops[1] / flops[0]:.2f}x)"
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


MEMORY_STEPS = 2
"""Posterior and prior steps in the memory rows: each step's graph is freed before the next, so
the peak does not grow with the number of steps (only the time does)."""


def peak_memory_child(kind: str, batch: int, chunk_size: int | None) -> dict[str, float]:
    """Run in a fresh process: build the SVHN-size model and data, then one iteration (no
    warm-up); the peak resident set during the iteration above the resident set just before it.

    On Linux the high-water mark ``VmHWM`` is reset to the current resident set before the
    iteration (``/proc/self/clear_refs``), so the difference is what the iteration added on top
    of everything allocated before (imports, networks, data): torch's CPU allocator returns
    large blocks to the system, and the peak counts every live tensor plus allocator slack."""
    torch.set_num_threads(1)
    steps = {"prior_sampler": Langevin(MEMORY_STEPS, 0.08)}
    posterior = Langevin(MEMORY_STEPS, 0.005)
    args = dict(
        data_shape=SVHN.data_shape,
        latent_dim=SVHN.latent_dim,
        generator=generator_of(SVHN),
        likelihood_sigma=0.3,
        posterior_sampler=posterior,
        **steps,
    )
    torch.manual_seed(0)
    if kind == "vanilla":
        model = LatentEBM(**args)
    else:
        model = ThermoLatentEBM(num_temperatures=NUM_TEMPERATURES, chunk_size=chunk_size, **args)
    x = torch.rand(batch, *SVHN.data_shape) * 2 - 1
    before = _reset_peak_kib()
    t0 = time.perf_counter()
    iteration(model, x)
    seconds = time.perf_counter() - t0
    after = _peak_kib()
    return {"peak_mib": (after - before) / 1024, "seconds": seconds}


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_kib() -> int:
    """Reset the resident-set high-water mark to the current resident set (Linux:
    ``/proc/self/clear_refs``) and return that, in KiB; elsewhere the high-water mark so far
    (``ru_maxrss``), which makes the difference a lower bound."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_rows(batch: int, chunk_size: int | None) -> list[Row]:
    """Peak memory of one iteration at the SVHN size: vanilla (B chains), TI with all
    N_t x B chains at once, and TI with ``chunk_size`` chains per network evaluation; each in
    its own process (see :func:`peak_memory_child`). The ms column is the peak in MiB."""
    cases = [("vanilla", None), ("ti", None)]
    if _has_chunking():
        cases.append(("ti", chunk_size))
    rows = []
    for kind, chunk in cases:
        code = (
            "import json; from benchmarks.bench_thermo import peak_memory_child; "
            f"print(json.dumps(peak_memory_child({kind!r}, {batch}, {chunk!r})))"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env
        )
        if out.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if kind == "vanilla":
            name = f"peak memory (MiB), vanilla iteration, {batch} chains"
        elif chunk is None:
            name = f"peak memory (MiB), TI iteration, {NUM_TEMPERATURES} x {batch} chains at once"
        else:
            name = f"peak memory (MiB), TI iteration, chunk_size={chunk}"
        # the value is in MiB (Row's column reads "ms"; the name says MiB)
        rows.append(Row(f"svhn B={batch}", "cpu", name, [result["peak_mib"] / 1e3], 1))
        print(f"{name}: {result['peak_mib']:.0f} MiB in {result['seconds']:.1f} s", flush=True)
    vanilla = rows[0].median_ms
    for row in rows[1:]:
        ratio = f"{row.median_ms / vanilla:.1f}" if vanilla > 0 else "n/a (vanilla peak 0)"
        row.ratio = f"{ratio} x vanilla"
    return rows


def _has_chunking() -> bool:
    import inspect

    return "chunk_size" in inspect.signature(ThermoLatentEBM.__init__).parameters


def main(argv: list[str] | None = None) -> str:
    def rows(quick: bool) -> list[Row]:
        out = bench(TOY, TOY.batch, repeats=2 if quick else 7, overhead=True)
        if quick:  # the memory rows need fresh processes: full runs only
            return out
        out += bench(SVHN, 10, repeats=3, overhead=False)
        return out + memory_rows(batch=SVHN.batch, chunk_size=SVHN.batch)

    return run_benchmark(argv, __doc__.splitlines()[0], "TI benchmark", RESULTS_PATH, rows)


if __name__ == "__main__":
    main()
