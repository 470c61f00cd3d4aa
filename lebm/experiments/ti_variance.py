"""Vanilla vs thermodynamic-integration latent EBM: learning-gradient variance and sample quality.

    python -m lebm.experiments.ti_variance                # default: about 20 min on 2 CPU cores
    python -m lebm.experiments.ti_variance --quick        # smoke run (~2 min)

(``make experiment`` now runs the general study, :mod:`lebm.experiments.study`, on digits.)

Trains LatentEBM and ThermoLatentEBM (one run per ladder power p) for several seeds on an
embedded dataset, all with the same model, data, prior sampler and optimizer settings, so
the runs differ only in the posterior part. During training the GradientVariance callback
measures the learning-gradient variance (per-sample and MCMC-redraw) on a fixed probe batch,
and FIDCallback / the model's validation measure sample quality (FID between point clouds
with identity features, MMD², SWD). Writes to ``--out`` (default ``runs/experiments/ti_variance``):

- ``runs/<model>/seed<k>/``: each run's metrics.csv, samples and checkpoints;
- ``variance_vs_iteration.png``, ``quality_vs_iteration.png``, ``quality_vs_variance.png``;
- ``runs.csv`` (final values of every run) and ``summary.csv`` (mean ± std over seeds).

Runs go to ``--workers`` processes (one torch thread each).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

VARIANCE_KEY = "grad_var/per_sample/total/variance"
MCMC_VARIANCE_KEY = "grad_var/mcmc/total/variance"
QUALITY_KEYS = ("val/fid", "val/mmd", "val/swd")


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    label: str
    power: float | None  # None: vanilla LatentEBM
    seed: int


# Shared by every run: the moons settings of configs/latent_ebm/moons.yaml. The samplers are
# given by class path, as in the config (the model builds them; torch is imported in workers).
MODEL_ARGS = dict(
    latent_dim=2,
    likelihood_sigma=0.1,
    prior_sampler={
        "class_path": "lebm.samplers.Langevin",
        "init_args": {"n_steps": 100, "step_size": 0.05},
    },
    posterior_sampler={
        "class_path": "lebm.samplers.Langevin",
        "init_args": {"n_steps": 20, "step_size": 0.005},
    },
    energy_lr=5e-4,
    generator_lr=5e-4,
    lr_decay=0.85,
)


def train_one(
    run: Run,
    out: str,
    epochs: int,
    num_samples: int,
    every_n_steps: int,
    num_temperatures: int,
    dataset: str,
) -> dict:
    """Train one run in this process and return its final metrics (rank 0, CPU)."""
    import torch

    torch.set_num_threads(1)
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    import datamodules
    from callbacks import FIDCallback, GradientVariance, SamplePlotter
    from lebm.models import LatentEBM, ThermoLatentEBM

    L.seed_everything(run.seed, verbose=False)
    data = getattr(datamodules, dataset)(
        num_samples=num_samples, batch_size=128, standardize=True, seed=run.seed
    )
    if run.power is None:
        model = LatentEBM(data_shape=data.data_shape, **MODEL_ARGS)
    else:
        model = ThermoLatentEBM(
            data_shape=data.data_shape,
            num_temperatures=num_temperatures,
            temperature_power=run.power,
            **MODEL_ARGS,
        )
    variance = GradientVariance(
        every_n_steps=every_n_steps, probe_size=64, num_redraws=8, seed=run.seed
    )
    root = Path(out) / "runs" / run.label / f"seed{run.seed}"
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        inference_mode=False,
        logger=CSVLogger(root, name="", version=""),
        log_every_n_steps=every_n_steps,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            variance,
            FIDCallback(num_samples=1000),  # identity features (the default)
            SamplePlotter(every_n_epochs=epochs),
        ],
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    history = variance.history
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {
        "label": run.label,
        "power": run.power,
        "seed": run.seed,
        "seconds": seconds,
        "metrics_csv": str(root / "metrics.csv"),
        "mean_variance": sum(h[VARIANCE_KEY] for _, h in history) / max(len(history), 1),
        "mean_mcmc_variance": sum(h[MCMC_VARIANCE_KEY] for _, h in history) / max(len(history), 1),
        **final,
    }


def read_curve(metrics_csv: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric from a CSVLogger file."""
    with open(metrics_csv) as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = (
        math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    )
    return m, sd


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({r["label"] for r in results}, key=lambda s: (s != "vanilla", s))
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    quality = next((k for k in QUALITY_KEYS if all(k in r for r in results)), "val/mmd")

    for name, keys, ylabel in [
        (
            "variance_vs_iteration.png",
            [VARIANCE_KEY, MCMC_VARIANCE_KEY],
            "learning-gradient variance (mean per coordinate)",
        ),
        ("quality_vs_iteration.png", [quality, "val/mmd"], "sample quality"),
    ]:
        fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            for r in results:
                curve = read_curve(r["metrics_csv"], key)
                if curve:
                    steps, values = zip(*curve, strict=True)
                    ax.plot(
                        steps,
                        values,
                        color=colors[r["label"]],
                        alpha=0.7,
                        label=r["label"] if r["seed"] == min(x["seed"] for x in results) else None,
                    )
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_title(key)
            ax.grid(alpha=0.3)
            ax.legend()
        axes[0][0].set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label in labels:
        rs = [r for r in results if r["label"] == label]
        ax.scatter(
            [r["mean_variance"] for r in rs],
            [r[quality] for r in rs],
            color=colors[label],
            label=label,
            s=40,
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean per-sample gradient variance over training")
    ax.set_ylabel(f"final {quality}")
    ax.set_title(f"{quality} vs learning-gradient variance (one point per seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_vs_variance.png", dpi=110)
    plt.close(fig)


def write_tables(results: list[dict], out: Path) -> list[dict]:
    columns = [
        "label",
        "power",
        "seed",
        "seconds",
        "mean_variance",
        "mean_mcmc_variance",
        *[k for k in ("val/fid", "val/kid", "val/mmd", "val/swd") if k in results[0]],
    ]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    summary = []
    for label in sorted({r["label"] for r in results}, key=lambda s: (s != "vanilla", s)):
        rs = [r for r in results if r["label"] == label]
        row = {"model": label, "seeds": len(rs)}
        for key in columns[3:]:
            m, sd = mean_std([r[key] for r in rs])
            row[key] = f"{m:.4g} ± {sd:.2g}"
        summary.append(row)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/experiments/ti_variance")
    parser.add_argument("--powers", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--num-temperatures", type=int, default=10)
    parser.add_argument("--every-n-steps", type=int, default=20)
    parser.add_argument("--dataset", default="MoonsDataModule")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 powers, 1 short epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.powers, args.seeds, args.epochs, args.num_samples = [0.3, 3.0], [0], 2, 1000
        args.every_n_steps = 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Run("vanilla", None, s) for s in args.seeds]
    runs += [Run(f"TI p={p:g}", p, s) for p in args.powers for s in args.seeds]
    print(f"{len(runs)} runs on {args.workers} workers -> {out}", flush=True)
    jobs = (
        str(out),
        args.epochs,
        args.num_samples,
        args.every_n_steps,
        args.num_temperatures,
        args.dataset,
    )
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_one, run, *jobs) for run in runs]
        results = []
        for run, future in zip(runs, futures, strict=True):
            results.append(future.result())
            r = results[-1]
            print(
                f"  {run.label:<10} seed {run.seed}: {r['seconds']:.0f} s, "
                f"variance {r['mean_variance']:.3g}, val/mmd {r.get('val/mmd', float('nan')):.4f}",
                flush=True,
            )
    plot(results, out)
    summary = write_tables(results, out)
    print("\nmean ± std over seeds:")
    for row in summary:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print(f"\nplots and tables in {out}")


if __name__ == "__main__":
    main()
