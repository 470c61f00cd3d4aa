"""A study: any list of ``lebm fit`` runs x seeds, with learning-gradient variance and sample
quality tracked over training, the seed project's three plots, a CSV and a markdown summary.

    python -m lebm.experiments.study --preset digits          # the vanilla-vs-TI digits study
    python -m lebm.experiments.study --quick                  # smoke run, about a minute
    python -m lebm.experiments.study --seeds 0 1 2 --epochs 5 \\
        --run "vanilla=-c configs/latent_ebm/moons.yaml" \\
        --run "TI p=3=-c configs/latent_ebm/moons.yaml -c configs/models/ti.yaml \\
               --model.init_args.temperature_power=3"
    make experiment                      # --preset digits;  make experiment EXPERIMENT_ARGS=--quick

A run is ``LABEL=ARGS``: ``ARGS`` are ``lebm fit`` arguments (configs with ``-c`` and any
``--key=value`` overrides). The study adds, for every run and seed: the seed
(``--seed_everything``), ``--trainer.max_epochs``, a run folder
``<out>/runs/<label>/seed<k>``, and a :class:`callbacks.GradientVariance` callback (every
``--variance-every`` training steps; do not compose ``configs/callbacks/grad_variance.yaml`` as
well). Sample quality is whatever the config logs: ``val/fid`` when it has an FIDCallback
(FID_d on digits), else ``val/mmd``. With ``--wandb``, every run also logs to Weights & Biases,
one group per study (``--name``; offline without network).

Writes to ``--out`` (default ``runs/studies/<name>``):

- ``variance_vs_iteration.png``, ``quality_vs_iteration.png``, ``quality_vs_variance.png``
  (one line or point per run and seed; the third plots each validation's quality against the
  variance measured nearest before it); ``temperatures_vs_iteration.png`` for runs with an
  adaptive ladder;
- ``runs.csv`` (one row per run and seed: final quality, mean variance, seconds) and
  ``curves.csv`` (every measurement: label, seed, step, key, value);
- ``summary.md`` (mean ± sd over seeds per label, runs that failed with their error, and the
  study's command line).

A run that fails (a diverged model) is recorded with its error and the values it logged before
it, and the other runs go on. A preset runs at its own budget (``PRESET_BUDGET``; the digits
study: 4 epochs, FID_d every epoch, variance every 15 steps) unless ``--epochs``,
``--variance-every`` or ``--extra`` are given; otherwise 10 epochs, variance every 25 steps.

Runs go to ``--workers`` processes, each with one torch thread and one in-process ``lebm fit``
per run (lightning is imported once per worker).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

VARIANCE_KEY = "grad_var/per_sample/total/variance"
MCMC_VARIANCE_KEY = "grad_var/mcmc/total/variance"
QUALITY_KEYS = ("val/fid", "val/mmd")
# what read_curves keeps from a run's metrics.csv (besides the adaptive ladders and swap rates)
CURVE_KEYS = (
    VARIANCE_KEY,
    MCMC_VARIANCE_KEY,
    "val/fid",
    "val/kid",
    "val/mmd",
    "val/mmd_wide",
    "val/mse",
)

DIGITS = "-c configs/latent_ebm/digits.yaml"
TI = "-c configs/models/ti.yaml"
# The vanilla-vs-TI study on digits (issue 15): every TI run is the vanilla digits config plus
# the power posteriors of configs/models/ti.yaml (N_t = 10), and differs from it only there.
PRESETS: dict[str, list[str]] = {
    "digits": [
        f"vanilla={DIGITS}",
        f"TI p=1={DIGITS} {TI}",
        f"TI p=0.3={DIGITS} {TI} --model.init_args.temperature_power=0.3",
        f"TI adaptive={DIGITS} {TI} --model.init_args.ladder=adaptive",
        f"TI replica exchange={DIGITS} {TI} --model.init_args.swap_every=2",
        f"TI exact={DIGITS} {TI} --model.init_args.generator_objective=exact "
        "--model.init_args.num_chains=2",
        f"TI posterior={DIGITS} {TI} --model.init_args.generator_objective=posterior",
    ],
    # the --quick smoke study: two runs of a few steps on moons
    "quick": [
        "vanilla=-c configs/latent_ebm/moons.yaml",
        "TI adaptive+RE=-c configs/latent_ebm/moons.yaml -c configs/models/ti.yaml "
        "--model.init_args.ladder=adaptive --model.init_args.swap_every=2",
    ],
}
# The budget each preset runs at unless --epochs / --variance-every / --extra say otherwise. The
# digits study: 4 epochs (88 iterations at batch 64), FID_d on 500 samples after every epoch
# (fid_digits.yaml's every 10 epochs would give one point), variance every 15 steps.
PRESET_BUDGET: dict[str, dict] = {
    "digits": {
        "epochs": 4,
        "variance_every": 15,
        "extra": "--trainer.callbacks.every_n_epochs=1",
    },
}
QUICK_ARGS = (
    "--trainer.limit_train_batches=12 --trainer.limit_val_batches=2 "
    "--model.init_args.prior_sampler.n_steps=20 --model.init_args.posterior_sampler.n_steps=10 "
    "--trainer.callbacks=null"
)


@dataclass(frozen=True)
class Run:
    """One training run: a label, its ``lebm fit`` arguments and a seed."""

    label: str
    args: tuple[str, ...]
    seed: int


def parse_run(spec: str) -> tuple[str, list[str]]:
    """``"LABEL=ARGS"`` -> (label, shlex-split args). The label ends at the last ``=`` before
    the first ``-`` of the arguments (so labels like ``TI p=1`` work)."""
    dash = spec.find(" -")
    head = spec if dash < 0 else spec[:dash]
    cut = head.rfind("=")
    if cut <= 0:
        raise ValueError(f"a run is LABEL=ARGS (lebm fit arguments), got {spec!r}")
    args = shlex.split(spec[cut + 1 :])
    if not args:
        raise ValueError(f"run {spec[:cut]!r} has no lebm fit arguments")
    return spec[:cut].strip(), args


def fit_args(run: Run, root: Path, epochs: int, variance_every: int, wandb: str | None) -> list:
    args = [
        "fit",
        *run.args,
        f"--seed_everything={run.seed}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.log_every_n_steps={variance_every}",
        "--trainer.callbacks+=callbacks.GradientVariance",
        f"--trainer.callbacks.every_n_steps={variance_every}",
        "--trainer.callbacks.probe_size=32",
        "--trainer.callbacks.num_redraws=8",
        f"--trainer.callbacks.seed={run.seed}",
    ]
    if wandb:
        args += [
            "--trainer.logger+=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={root}",
            "--trainer.logger+=lightning.pytorch.loggers.WandbLogger",
            f"--trainer.logger.group={wandb}",
            f"--trainer.logger.name={run.label} seed {run.seed}",
            f"--trainer.logger.save_dir={root}",
        ]
    return args


def train_one(run: Run, out: str, epochs: int, variance_every: int, wandb: str | None) -> dict:
    """One ``lebm fit`` in this process; returns the run's row (final values) and curves.

    A run that stops with an error (a diverged model: ``NonFiniteLossError``) does not stop the
    study: its row gets ``failed`` (the error's first line) and the values logged before it."""
    import torch

    torch.set_num_threads(1)
    from lebm.cli import run_cli

    root = Path(out) / "runs" / run.label.replace(" ", "_").replace("/", "_") / f"seed{run.seed}"
    start = time.perf_counter()
    failed = None
    try:
        run_cli(fit_args(run, root, epochs, variance_every, wandb))
    except Exception as error:  # recorded in the tables; the other runs go on
        failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    seconds = time.perf_counter() - start
    metrics = sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not metrics and failed is None:
        raise RuntimeError(f"run {run.label} seed {run.seed}: no metrics.csv under {root}")
    curves = read_curves(metrics[-1]) if metrics else {}
    row = {"label": run.label, "seed": run.seed, "seconds": round(seconds, 1)}
    if failed:
        row["failed"] = failed
    for key, series in curves.items():
        if key in (VARIANCE_KEY, MCMC_VARIANCE_KEY):
            row[f"mean {key}"] = sum(v for _, v in series) / len(series)
        if key.startswith("val/"):
            row[key] = series[-1][1]
    return {"row": row, "curves": curves}


def read_curves(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per key of interest from a CSVLogger file."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv) as f:
        for r in csv.DictReader(f):
            for key, value in r.items():
                ladder = key.startswith(("train/temperature/", "train/swap_rate/"))
                if value and (key in CURVE_KEYS or ladder):
                    out.setdefault(key, []).append((int(r["step"]), float(value)))
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def quality_key(results: list[dict]) -> str:
    return next((k for k in QUALITY_KEYS if all(k in r["curves"] for r in results)), "val/mmd")


def plot(results: list[dict], out: Path) -> None:
    """The seed project's three plots: variance vs iteration, quality vs iteration, quality vs
    variance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lebm.plotting import plot_temperature_ladders

    labels = list(dict.fromkeys(r["row"]["label"] for r in results))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    quality = quality_key(results)

    def lines(ax, key):
        seen = set()
        for r in results:
            series = r["curves"].get(key, [])
            if series:
                label = r["row"]["label"]
                steps, values = zip(*series, strict=True)
                ax.plot(steps, values, color=colors[label], alpha=0.75, marker=".",
                        label=None if label in seen else label)  # fmt: skip
                seen.add(label)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lines(axes[0], VARIANCE_KEY)
    lines(axes[1], MCMC_VARIANCE_KEY)
    axes[0].set_ylabel("learning-gradient variance")
    fig.tight_layout()
    fig.savefig(out / "variance_vs_iteration.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    lines(ax, quality)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_iteration.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    seen = set()
    for r in results:
        variance = r["curves"].get(VARIANCE_KEY, [])
        if not variance:
            continue
        points = []
        for step, value in r["curves"].get(quality, []):
            before = [v for s, v in variance if s <= step] or [variance[0][1]]
            points.append((before[-1], value))
        if points:
            label = r["row"]["label"]
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, color=colors[label], s=18, alpha=0.7,
                       label=None if label in seen else label)  # fmt: skip
            seen.add(label)
    ax.set_xscale("log")
    ax.set_xlabel(f"{VARIANCE_KEY} (latest before the validation)")
    ax.set_ylabel(quality)
    ax.set_title(f"{quality} vs learning-gradient variance", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_variance.png", dpi=110)
    plt.close(fig)

    # the ladders of the first seed of every run whose temperatures move
    ladders: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for r in results:
        label = r["row"]["label"]
        temps = {
            int(k.rsplit("/t", 1)[1]): v
            for k, v in r["curves"].items()
            if k.startswith("train/temperature/")
        }
        if label not in ladders and any(len({x for _, x in v}) > 1 for v in temps.values()):
            ladders[label] = temps
    if ladders:
        plot_temperature_ladders(ladders, out / "temperatures_vs_iteration.png")


def write_tables(results: list[dict], out: Path, command: str, budget: str) -> str:
    rows = [r["row"] for r in results]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "seed", "step", "key", "value"])
        for r in results:
            for key, series in r["curves"].items():
                for step, value in series:
                    writer.writerow([r["row"]["label"], r["row"]["seed"], step, key, value])
    stats = [c for c in columns if c not in ("label", "seed", "failed")]
    lines = [
        f"Study: {budget}. Mean ± sd over seeds (final validation; variance: mean over training).",
        "",
        "| run | seeds | " + " | ".join(stats) + " |",
        "|---|---|" + "---|" * len(stats),
    ]
    for label in dict.fromkeys(row["label"] for row in rows):
        group = [row for row in rows if row["label"] == label]
        cells = []
        for key in stats:
            values = [row[key] for row in group if key in row]
            if values:
                m, sd = mean_sd(values)
                cells.append(f"{m:.4g} ± {sd:.2g}")
            else:
                cells.append("")
        lines.append(f"| {label} | {len(group)} | " + " | ".join(cells) + " |")
    failures = [row for row in rows if row.get("failed")]
    if failures:
        lines += ["", "Failed runs (their values are the last logged before the error):"]
        lines += [f"- {row['label']} seed {row['seed']}: {row['failed']}" for row in failures]
    lines += ["", f"Command: `{command}`", ""]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", default=[], help="LABEL=lebm fit args")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a ready-made list of runs")
    parser.add_argument("--name", default=None, help="study name (folder, W&B group)")
    parser.add_argument("--out", default=None, help="output folder (runs/studies/<name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (or the preset's)")
    parser.add_argument(
        "--variance-every", type=int, default=None, help="training steps; default 25"
    )
    parser.add_argument(
        "--extra", default=None, help="lebm fit args added to every run (default: the preset's)"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (one group)")
    parser.add_argument("--quick", action="store_true", help="smoke study, about a minute")
    args = parser.parse_args(argv)
    apply_budget(args)
    if args.quick:
        args.preset = args.preset or "quick"
        args.seeds, args.epochs, args.variance_every = [0], 1, 4
        args.extra = f"{QUICK_ARGS} {args.extra}"
    specs = list(args.run) + (PRESETS[args.preset] if args.preset else [])
    if not specs:
        parser.error("give runs with --run LABEL=ARGS or a --preset")
    name = args.name or args.preset or "study"
    out = Path(args.out or f"runs/studies/{name}")
    out.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.extra)
    runs = [
        Run(label, (*run_args, *extra), seed)
        for label, run_args in map(parse_run, specs)
        for seed in args.seeds
    ]
    if len({r.label for r in runs}) * len(args.seeds) != len(runs):
        parser.error("run labels must be unique")
    print(f"study {name}: {len(runs)} runs on {args.workers} worker(s) -> {out}", flush=True)
    jobs = (str(out), args.epochs, args.variance_every, name if args.wandb else None)
    start = time.perf_counter()
    results = []
    if args.workers <= 1:
        for run in runs:
            results.append(train_one(run, *jobs))
            report(results[-1])
    else:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_one, run, *jobs) for run in runs]
            for future in futures:
                results.append(future.result())
                report(results[-1])
    plot(results, out)
    command = "python -m lebm.experiments.study " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    budget = (
        f"{args.epochs} epoch(s) per run, seeds {args.seeds}, "
        f"{time.perf_counter() - start:.0f} s on {args.workers} worker(s)"
    )
    print("\n" + write_tables(results, out, command, budget))
    print(f"plots, runs.csv, curves.csv and summary.md in {out}")


def apply_budget(args: argparse.Namespace) -> None:
    """Fill ``epochs``, ``variance_every`` and ``extra`` left unset (None) on the command line:
    the preset's budget (``PRESET_BUDGET``), else 10 epochs, variance every 25 steps, no extra."""
    defaults = {"epochs": 10, "variance_every": 25, "extra": ""}
    defaults.update(PRESET_BUDGET.get(args.preset, {}))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def report(result: dict) -> None:
    row = result["row"]
    values = ", ".join(
        f"{k} {v:.4g}" for k, v in row.items() if k not in ("label", "seed", "seconds", "failed")
    )
    failed = f"; FAILED ({row['failed']})" if row.get("failed") else ""
    print(
        f"  {row['label']} seed {row['seed']}: {row['seconds']:.0f} s; {values}{failed}", flush=True
    )


if __name__ == "__main__":
    main()
