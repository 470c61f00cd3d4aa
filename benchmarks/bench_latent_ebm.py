"""Speed of LatentEBM's sampler and training iteration against a plain reference loop.

Run ``python -m benchmarks.bench_latent_ebm`` (or ``make bench``); ``--quick`` runs a short
smoke version (toy size only, a few repeats, nothing written unless ``--output`` is given).

Rows, at a toy size and at Pang et al.'s SVHN size (see benchmarks/README.md):

1. ``posterior Langevin step (lebm)``: ``langevin(log_joint, z, n_steps=20)`` / 20.
2. ``bare forward+backward``: one forward of the log-joint and one ``autograd.grad`` in z,
   no sampler around it. The ratio row1 / row2 is the sampler's overhead.
3. ``training iteration (lebm)``: posterior + prior chains, losses, one backward, two Adam steps,
   all through LatentEBM's public methods.
4. ``training iteration (reference)``: the paper's algorithm written as the official code does
   it (two backward passes per posterior step, two separate loss backwards). Ratio ref / lebm.
5. ``training iteration (minimal loop)``: the reference with one backward pass per posterior
   step and nothing else changed: the least work the algorithm needs, written with no framework
   around it. Reference / minimal is the most any implementation of the same algorithm, chain
   lengths and networks can gain over the reference; lebm / minimal is lebm's own overhead.

Before timing, a sanity check asserts that one lebm posterior Langevin step moves z by exactly
the reference's summed gradient (likelihood part + EBM part + Gaussian reference part).
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lebm.models import LatentEBM
from lebm.nets import DCGANGenerator, EnergyMLP, GeneratorMLP
from lebm.samplers import Langevin, hmc, langevin

SEED = 0
# Chain lengths (LatentEBM's defaults): the posterior length is also N in row 1. --quick
# shortens both so that the smoke run stays fast even on a loaded machine.
FULL_STEPS = {"posterior_steps": 20, "prior_steps": 60}
QUICK_STEPS = {"posterior_steps": 5, "prior_steps": 5}
# Step sizes (LatentEBM's defaults, Pang et al.'s SVHN settings), the same in both modes.
POSTERIOR_STEP_SIZE, PRIOR_STEP_SIZE = 0.005, 0.08
RESULTS_PATH = Path(__file__).resolve().parent / "results.md"
# HMC rows: proposals x leapfrog steps of eps (per leapfrog step: one forward + backward)
HMC_PROPOSALS, HMC_LEAPFROG, HMC_STEP_SIZE = 4, 5, 0.05
THREADS = 1  # torch threads in every benchmark (stable timings on a shared machine)


# --------------------------------------------------------------------------- networks
# The model builds them as ``energy(latent_dim)`` and ``generator(latent_dim, data_shape)``.
ENERGY = functools.partial(EnergyMLP, hidden=200, depth=2, activation="gelu")
MLP_GENERATOR = functools.partial(GeneratorMLP, hidden=128, depth=2, activation="gelu")
# Pang et al.'s SVHN generator: (B, nz) -> (B, 3, 32, 32), no batch norm, tanh output; lebm's
# DCGANGenerator at 32 px: ConvT nz-8ngf (k4 s1 p0), 8ngf-4ngf, 4ngf-2ngf, 2ngf-3 (k4 s2 p1),
# LeakyReLU 0.2, ngf = 64.
SVHN_GENERATOR = functools.partial(
    DCGANGenerator, base_width=64, activation="leaky_relu", batch_norm=False
)


@dataclass(frozen=True)
class Size:
    name: str
    latent_dim: int
    data_shape: tuple[int, ...]
    batch: int
    conv_generator: bool


TOY = Size("toy", latent_dim=2, data_shape=(2,), batch=128, conv_generator=False)
SVHN = Size("svhn", latent_dim=100, data_shape=(3, 32, 32), batch=100, conv_generator=True)


def generator_of(size: Size) -> Callable[..., nn.Module]:
    """The size's generator class (a partial): Pang's SVHN generator or the default MLP."""
    return SVHN_GENERATOR if size.conv_generator else MLP_GENERATOR


def build(
    size: Size,
    device: torch.device,
    batch: int | None = None,
    posterior_steps: int = FULL_STEPS["posterior_steps"],
    prior_steps: int = FULL_STEPS["prior_steps"],
) -> tuple[LatentEBM, Tensor]:
    """A LatentEBM with the size's networks (defaults: EBM 200x2 GELU, sigma_eps 0.3) and data."""
    torch.manual_seed(SEED)
    model = LatentEBM(
        data_shape=size.data_shape,
        latent_dim=size.latent_dim,
        energy=ENERGY,
        generator=generator_of(size),
        likelihood_sigma=0.3,
        prior_sampler=Langevin(prior_steps, PRIOR_STEP_SIZE),
        posterior_sampler=Langevin(posterior_steps, POSTERIOR_STEP_SIZE),
    )
    model.to(device)
    n = size.batch if batch is None else batch
    if size.conv_generator:  # image-like data in [-1, 1]
        x = torch.rand(n, *size.data_shape, device=device) * 2.0 - 1.0
    else:
        x = torch.randn(n, *size.data_shape, device=device)
    return model, x


def log_joint_of(model: LatentEBM, x: Tensor) -> Callable[[Tensor], Tensor]:
    """The posterior log-density exactly as LatentEBM.sample_posterior builds it."""

    def log_joint(z: Tensor) -> Tensor:
        return model.log_prior(z) + model.log_likelihood(x, z)

    return log_joint


# --------------------------------------------------------------------------- row 2: bare step
def bare_forward_backward(
    energy: nn.Module, generator: nn.Module, x: Tensor, z: Tensor, sigma: float, sigma0: float
) -> Tensor:
    """What one Langevin step fundamentally needs: log-joint forward + one grad in z."""
    z = z.detach().requires_grad_(True)
    lp = (
        energy(z).sum()
        - z.pow(2).sum() / (2.0 * sigma0**2)
        - (x - generator(z)).pow(2).sum() / (2.0 * sigma**2)
    )
    (grad,) = torch.autograd.grad(lp, z)
    return grad


# --------------------------------------------------------------------------- row 4: reference
class Reference:
    """The paper's training iteration, written the way the official code does it.

    Separate networks (deep copies of the model's) and separate Adam optimizers with the same
    settings. Same step-size convention as lebm: ``z <- z + s * grad log pi + sqrt(2 s) eps``.
    """

    def __init__(self, model: LatentEBM) -> None:
        hp = model.hparams
        self.energy = copy.deepcopy(model.energy)
        self.generator = copy.deepcopy(model.generator)
        self.latent_dim = hp.latent_dim
        self.sigma0, self.sigma = hp.prior_sigma, hp.likelihood_sigma
        prior, posterior = model.prior_sampler, model.posterior_sampler
        self.prior_steps, self.prior_s = prior.n_steps, prior.step_size
        self.post_steps, self.post_s = posterior.n_steps, posterior.step_size
        self.opt_e = torch.optim.Adam(self.energy.parameters(), lr=hp.energy_lr, betas=hp.betas)
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=hp.generator_lr, betas=hp.betas
        )

    def posterior_grad(self, x: Tensor, z: Tensor) -> Tensor:
        """grad_z log p(z | x) with two backward passes: generator term, then EBM term."""
        z = z.detach().requires_grad_(True)
        log_lik = -(x - self.generator(z)).pow(2).sum() / (2.0 * self.sigma**2)
        (grad_g,) = torch.autograd.grad(log_lik, z)
        (grad_e,) = torch.autograd.grad(self.energy(z).sum(), z)
        return grad_g + grad_e - z.detach() / self.sigma0**2

    def prior_grad(self, z: Tensor) -> Tensor:
        z = z.detach().requires_grad_(True)
        (grad_e,) = torch.autograd.grad(self.energy(z).sum(), z)
        return grad_e - z.detach() / self.sigma0**2

    def iteration(self, x: Tensor) -> None:
        n = x.shape[0]
        z_pos = torch.randn(n, self.latent_dim, device=x.device) * self.sigma0
        z_neg = torch.randn(n, self.latent_dim, device=x.device) * self.sigma0
        s, noise = self.post_s, math.sqrt(2.0 * self.post_s)
        for _ in range(self.post_steps):
            z_pos = z_pos + s * self.posterior_grad(x, z_pos) + noise * torch.randn_like(z_pos)
        s, noise = self.prior_s, math.sqrt(2.0 * self.prior_s)
        for _ in range(self.prior_steps):
            z_neg = z_neg + s * self.prior_grad(z_neg) + noise * torch.randn_like(z_neg)
        z_pos, z_neg = z_pos.detach(), z_neg.detach()

        self.opt_g.zero_grad()
        loss_g = (x - self.generator(z_pos)).pow(2).flatten(1).sum(1).mean() / (2.0 * self.sigma**2)
        loss_g.backward()
        self.opt_g.step()

        self.opt_e.zero_grad()
        loss_e = self.energy(z_neg).mean() - self.energy(z_pos).mean()
        loss_e.backward()
        self.opt_e.step()


class MinimalLoop(Reference):
    """The reference loop with one backward pass per posterior step: the algorithm's floor."""

    def posterior_grad(self, x: Tensor, z: Tensor) -> Tensor:
        return bare_forward_backward(self.energy, self.generator, x, z, self.sigma, self.sigma0)


# --------------------------------------------------------------------------- row 3: lebm
def lebm_iteration_fn(model: LatentEBM, x: Tensor) -> Callable[[], None]:
    """One LatentEBM iteration through its public methods, as its training_step does it."""
    (opt_ebm, opt_gen), _ = model.configure_optimizers()

    def iteration() -> None:
        pos = model.sample_posterior(x)
        neg = model.sample_prior(len(x))
        losses = model.losses_from_latents(x, pos.sample, neg.sample)
        loss = losses["energy"].mean() + losses["generator"].mean()
        opt_ebm.zero_grad()
        opt_gen.zero_grad()
        loss.backward()
        opt_ebm.step()
        opt_gen.step()

    return iteration


# --------------------------------------------------------------------------- sanity check
def check_gradient(size: Size, batch: int | None = None) -> float:
    """Assert one lebm posterior Langevin step moves z by s * (reference summed gradient), and
    that the minimal loop's one-backward gradient is the reference's two-backward one.

    With a seeded torch.Generator, ``langevin(..., n_steps=1)`` returns
    ``z0 + s * grad + sqrt(2 s) * eps`` where eps is the generator's first normal draw, so
    ``grad = (z1 - z0 - sqrt(2 s) eps) / s``. A large s keeps the float32 recovery exact enough.
    Returns the relative error ``||grad_lebm - grad_ref|| / ||grad_ref||``.
    """
    model, x = build(size, torch.device("cpu"), batch)
    ref = Reference(model)
    z0 = torch.randn(x.shape[0], size.latent_dim)
    s = 1.0
    gen = torch.Generator().manual_seed(123)
    z1 = langevin(model.posterior_log_density(x), z0, 1, s, generator=gen).sample
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(123))
    grad_lebm = (z1 - z0 - math.sqrt(2.0 * s) * eps) / s
    grad_ref = ref.posterior_grad(x, z0)
    rel = ((grad_lebm - grad_ref).norm() / grad_ref.norm()).item()
    assert rel <= 1e-5, f"{size.name}: lebm posterior gradient differs from reference: rel {rel:g}"
    grad_min = MinimalLoop(model).posterior_grad(x, z0)
    rel_min = ((grad_min - grad_ref).norm() / grad_ref.norm()).item()
    assert rel_min <= 1e-5, f"{size.name}: minimal loop's gradient differs: rel {rel_min:g}"
    return rel


# --------------------------------------------------------------------------- timing
def _sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    min_block_s: float,
    device: torch.device,
) -> dict[str, tuple[list[float], int]]:
    """Seconds per call of each fn, repeats blocks each, the fns alternating block by block.

    Alternating keeps slow drift (other load on the machine) from favouring one row. Each block
    runs ``number`` calls, ``number`` chosen after warm-up so a block lasts at least min_block_s.
    Returns {name: (per-call seconds of each block, number)}.
    """
    sync = _sync_fn(device)
    numbers = {}
    for name, fn in fns.items():
        elapsed = 0.0
        for _ in range(max(warmup, 1)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            elapsed = time.perf_counter() - t0
        numbers[name] = max(1, math.ceil(min_block_s / max(elapsed, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            number = numbers[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / number)
    return {name: (times[name], numbers[name]) for name in fns}


@dataclass
class Row:
    size: str
    device: str
    name: str
    seconds: list[float]  # per call (per step for row 1), one per block
    calls: int  # calls per block
    ratio: str = ""

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.seconds)


def bench_size(
    size: Size,
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    min_block_s: float,
    steps: dict[str, int],
) -> list[Row]:
    model, x = build(size, device, **steps)
    n_steps, s = model.posterior_sampler.n_steps, model.posterior_sampler.step_size
    hp = model.hparams
    torch.manual_seed(SEED + 1)
    z = torch.randn(x.shape[0], size.latent_dim, device=device) * hp.prior_sigma

    def lebm_chain() -> None:  # as LatentEBM.sample_posterior calls it
        langevin(log_density, z, n_steps, s)

    def bare() -> None:
        bare_forward_backward(
            model.energy, model.generator, x, z, hp.likelihood_sigma, hp.prior_sigma
        )

    hmc_steps, leapfrog_n, hmc_eps = HMC_PROPOSALS, HMC_LEAPFROG, HMC_STEP_SIZE
    log_density = model.posterior_log_density(x)

    def lebm_hmc() -> None:
        hmc(log_density, z, hmc_steps, hmc_eps, leapfrog_n)

    step = time_interleaved(
        {"lebm": lebm_chain, "hmc": lebm_hmc, "bare": bare},
        warmup=warmup,
        repeats=repeats,
        min_block_s=min_block_s,
        device=device,
    )
    ref = Reference(model)  # copies the networks before lebm's Adam steps touch them
    minimal = MinimalLoop(model)
    it = time_interleaved(
        {
            "lebm": lebm_iteration_fn(model, x),
            "ref": lambda: ref.iteration(x),
            "min": lambda: minimal.iteration(x),
        },
        warmup=warmup,
        repeats=repeats,
        min_block_s=min_block_s,
        device=device,
    )

    dev = device.type
    per_step = [t / n_steps for t in step["lebm"][0]]
    # gradient evaluations per hmc call: one at the start, then L per proposal
    per_leapfrog = [t / (1 + hmc_steps * leapfrog_n) for t in step["hmc"][0]]
    rows = [
        Row(size.name, dev, "posterior Langevin step (lebm)", per_step, step["lebm"][1]),
        Row(size.name, dev, "HMC leapfrog step (lebm)", per_leapfrog, step["hmc"][1]),
        Row(size.name, dev, "bare forward+backward", *step["bare"]),
        Row(size.name, dev, "training iteration (lebm)", *it["lebm"]),
        Row(size.name, dev, "training iteration (reference)", *it["ref"]),
        Row(size.name, dev, "training iteration (minimal loop)", *it["min"]),
    ]
    bare_ms = rows[2].median_ms
    rows[0].ratio = f"step / bare = {rows[0].median_ms / bare_ms:.2f}"
    rows[1].ratio = f"leapfrog / bare = {rows[1].median_ms / bare_ms:.2f}"
    rows[4].ratio = f"reference / lebm = {rows[4].median_ms / rows[3].median_ms:.2f}"
    rows[5].ratio = (
        f"reference / minimal = {rows[4].median_ms / rows[5].median_ms:.2f}, "
        f"lebm / minimal = {rows[3].median_ms / rows[5].median_ms:.2f}"
    )
    return rows


# --------------------------------------------------------------------------- peers
def peer_rows(
    size: Size, *, warmup: int, repeats: int, min_block_s: float, steps: dict[str, int]
) -> list[Row]:
    """lebm's Langevin and HMC against TorchEBM's samplers on the same posterior energy,
    chains, steps and step sizes (TorchEBM's ``x - eta grad U + sqrt(2 eta) noise_scale xi``
    with noise_scale 1 is lebm's update; its HMC takes the same leapfrog step and count).

    The TorchEBM energy is what its user writes: ``U(z) = -(f(z) - ||z||^2 / (2 sigma_0^2) +
    log p(x | z))``, differentiated by its ``BaseModel.gradient`` (autograd); lebm runs the
    model's ``posterior_log_density`` as LatentEBM does. Empty when torchebm is not installed
    (``uv sync --group bench``)."""
    try:
        from torchebm.core import BaseModel
        from torchebm.samplers import HamiltonianMonteCarlo, LangevinDynamics
    except ImportError:
        print("torchebm not installed (uv sync --group bench): no TorchEBM rows", flush=True)
        return []
    device = torch.device("cpu")
    model, x = build(size, device, **steps)
    n_steps, s = model.posterior_sampler.n_steps, model.posterior_sampler.step_size
    torch.manual_seed(SEED + 1)
    z = torch.randn(x.shape[0], size.latent_dim) * model.hparams.prior_sigma
    log_joint = log_joint_of(model, x)

    class PosteriorEnergy(BaseModel):
        def forward(self, z: Tensor) -> Tensor:
            return -log_joint(z)

    energy = PosteriorEnergy()
    peer_langevin = LangevinDynamics(energy, step_size=s, noise_scale=1.0, device="cpu")
    peer_hmc = HamiltonianMonteCarlo(
        energy, step_size=HMC_STEP_SIZE, n_leapfrog_steps=HMC_LEAPFROG, device="cpu"
    )
    density = model.posterior_log_density(x)
    fns = {
        "lebm langevin": lambda: langevin(density, z, n_steps, s),
        "torchebm langevin": lambda: peer_langevin.sample(x=z, n_steps=n_steps),
        "lebm hmc": lambda: hmc(density, z, HMC_PROPOSALS, HMC_STEP_SIZE, HMC_LEAPFROG),
        "torchebm hmc": lambda: peer_hmc.sample(x=z, n_steps=HMC_PROPOSALS),
    }
    t = time_interleaved(
        fns, warmup=warmup, repeats=repeats, min_block_s=min_block_s, device=device
    )
    label = f"{size.name} B={x.shape[0]}"
    rows = [
        Row(label, "cpu", f"Langevin chain, {n_steps} steps (lebm)", *t["lebm langevin"]),
        Row(label, "cpu", f"Langevin chain, {n_steps} steps (TorchEBM)", *t["torchebm langevin"]),
        Row(
            label,
            "cpu",
            f"HMC, {HMC_PROPOSALS} x {HMC_LEAPFROG} leapfrog (lebm)",
            *t["lebm hmc"],
        ),
        Row(
            label,
            "cpu",
            f"HMC, {HMC_PROPOSALS} x {HMC_LEAPFROG} leapfrog (TorchEBM)",
            *t["torchebm hmc"],
        ),
    ]
    rows[1].ratio = f"TorchEBM / lebm = {rows[1].median_ms / rows[0].median_ms:.2f}"
    rows[3].ratio = f"TorchEBM / lebm = {rows[3].median_ms / rows[2].median_ms:.2f}"
    return rows


def compile_rows(size: Size, *, repeats: int, steps: dict[str, int]) -> list[Row]:
    """The prior chain with ``Langevin(..., compile=True)`` against the default (eager), and
    the one-off compile time (first call)."""
    model, _ = build(size, torch.device("cpu"), **steps)
    n, s = model.prior_sampler.n_steps, model.prior_sampler.step_size
    eager, compiled = Langevin(n, s), Langevin(n, s, compile=True)
    z = model.initial_latents(size.batch)
    density = model.prior_log_density()
    t0 = time.perf_counter()
    compiled(density, z)
    first = time.perf_counter() - t0
    t = time_interleaved(
        {"eager": lambda: eager(density, z), "compiled": lambda: compiled(density, z)},
        warmup=1,
        repeats=repeats,
        min_block_s=0.0,
        device=torch.device("cpu"),
    )
    label = f"{size.name} B={size.batch}"
    rows = [
        Row(label, "cpu", f"prior chain, {n} steps, eager (default)", *t["eager"]),
        Row(label, "cpu", f"prior chain, {n} steps, compile=True", *t["compiled"]),
        Row(label, "cpu", "compile=True: first call (compiles)", [first], 1),
    ]
    rows[1].ratio = f"compiled / eager = {rows[1].median_ms / rows[0].median_ms:.2f}"
    return rows


# --------------------------------------------------------------------------- report
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header() -> str:
    try:
        load = "load average (1, 5, 15 min) at the start: " + ", ".join(
            f"{v:.2f}" for v in os.getloadavg()
        )
    except (AttributeError, OSError):
        load = "load average unknown"
    lines = [
        f"- torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
        f"(torch.set_num_threads({THREADS}) in every script)",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; {load}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- CUDA: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


def load_warning() -> str | None:
    """A warning when other processes keep the CPU busy: timings are then not meaningful.

    With torch's default thread count (one per core), any competing process oversubscribes the
    cores and OpenMP barriers stall, so small-network rows slow down by orders of magnitude.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = os.cpu_count() or 1
    if load < 0.5 * cores:
        return None
    return (
        f"WARNING: 1-minute load average {load:.1f} on {cores} cores before the run; other "
        "processes compete for the CPU and the timings below are not representative."
    )


def format_table(rows: list[Row]) -> str:
    out = [
        "| size | device | row | ms per call (median) | min-max ms | blocks x calls | ratio |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lo, hi = 1e3 * min(r.seconds), 1e3 * max(r.seconds)
        out.append(
            f"| {r.size} | {r.device} | {r.name} | {r.median_ms:.3f} | {lo:.3f}-{hi:.3f} "
            f"| {len(r.seconds)} x {r.calls} | {r.ratio} |"
        )
    return "\n".join(out)


def run_benchmark(
    argv: list[str] | None,
    description: str,
    title: str,
    results_path: Path,
    rows_fn: Callable[[bool], list[Row]],
) -> str:
    """The command line shared by the benchmark scripts: ``--quick`` (smoke run, no file) and
    ``--output``; prints the machine header and load warning, runs ``rows_fn(quick)``, prints
    the table and writes it (with the header) to ``results_path`` for a full run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run, no file written")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output = args.output if args.output is not None or args.quick else results_path
    torch.set_num_threads(THREADS)
    head = header()  # the load average at the start, written with the table
    print(head, flush=True)
    warning = load_warning()
    if warning:
        print(warning, flush=True)
    start = time.perf_counter()
    table = format_table(rows_fn(args.quick))
    print(f"\n{table}\n\ntotal {time.perf_counter() - start:.1f} s", flush=True)
    if output is not None:
        note = f"\n\n{warning}" if warning else ""
        mode = "quick" if args.quick else "full"
        output.write_text(f"# {title} ({mode} run)\n\n{head}{note}\n\n{table}\n")
        print(f"wrote {output}")
    return table


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: toy size only, 2 blocks, chains shortened to 5 steps",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default: {RESULTS_PATH} for a full run, none with --quick)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add the torch.compile rows (toy prior chain; compiling takes minutes on a CPU)",
    )
    args = parser.parse_args(argv)
    output = args.output if args.output is not None or args.quick else RESULTS_PATH
    torch.set_num_threads(THREADS)

    head = header()  # the load average at the start, written with the table
    print(head, flush=True)
    warning = load_warning()
    if warning:
        print(warning, flush=True)
    start = time.perf_counter()
    for size in (TOY, SVHN):
        rel = check_gradient(size, batch=8 if args.quick else None)
        print(f"gradient check {size.name}: lebm step vs reference, rel err {rel:.2e}", flush=True)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.quick:
        plan = [(TOY, {"warmup": 1, "repeats": 2, "min_block_s": 0.0, "steps": QUICK_STEPS})]
    else:
        plan = [
            (TOY, {"warmup": 2, "repeats": 15, "min_block_s": 0.05, "steps": FULL_STEPS}),
            (SVHN, {"warmup": 1, "repeats": 3, "min_block_s": 0.5, "steps": FULL_STEPS}),
        ]
    rows: list[Row] = []
    for device in devices:
        for size, settings in plan:
            t0 = time.perf_counter()
            rows += bench_size(size, device, **settings)
            print(f"{size.name}/{device.type}: {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    rows += peer_rows(TOY, **plan[0][1])
    print(f"peers: {time.perf_counter() - t0:.1f} s", flush=True)
    if args.compile:
        t0 = time.perf_counter()
        rows += compile_rows(TOY, repeats=3 if args.quick else 7, steps=plan[0][1]["steps"])
        print(f"compile: {time.perf_counter() - t0:.1f} s", flush=True)

    table = format_table(rows)
    print()
    print(table)
    if args.quick:
        print(f"\nquick run: chains shortened to {QUICK_STEPS}; not comparable with a full run")
    print(f"\ntotal {time.perf_counter() - start:.1f} s", flush=True)
    if output is not None:
        mode = f"quick run, chains {QUICK_STEPS}" if args.quick else "full run"
        note = f"\n\n{warning}" if warning else ""
        output.write_text(
            f"# LatentEBM benchmark ({mode})\n\n{head}{note}\n\n{table}\n",
            encoding="utf-8",
        )
        print(f"wrote {output}")
    return table


if __name__ == "__main__":
    main()
