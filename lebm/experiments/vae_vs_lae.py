"""VAE vs Langevin autoencoder: the seed's comparison, reproduced at equal epochs and seeds.

    python -m lebm.experiments.vae_vs_lae                       # digits, 3 seeds, config epochs
    python -m lebm.experiments.vae_vs_lae --data mnist --epochs 20   # where MNIST's files exist

Trains ``configs/vae/<data>.yaml`` and ``configs/lae/<data>.yaml`` (the same decoder,
likelihood, optimizer, data and epochs; the LAE's encoder ends in its sampled layer Phi) for
each seed, tests each run, and writes to ``--out`` (default
``runs/experiments/vae_vs_lae/<data>``):

- ``<model>/seed<k>/``: each run's metrics.csv, samples and checkpoints;
- ``runs.csv``: the final values of every run; ``summary.csv`` and ``summary.md``: mean ± std
  over seeds of reconstruction MSE, the test bounds and FID;
- ``interpolation_seed<k>.png``: decoded straight lines between the latent means of the same
  pairs of test images, one block of rows per model (VAE first); each row starts and ends
  with the two test images themselves.

Which bound each number is (both models, test split, nats per data point unless "/dim"):

- ``test/nll``: minus the importance-weighted bound with K = 100 samples of the model's q
  (VAE: its learned q(z | x); LAE: N(Phi g(x), 0.05^2 I));
- ``test/elbo``: the one-sample ELBO with the same q;
- ``test/elbo_fixed_q``: the one-sample ELBO with q = N(mean(x), 0.05^2 I) for both models
  (the LAE paper's reported bound; per dimension in ``neg_elbo_fixed_q_per_dim``);
- ``fid/prior`` and ``fid/code_gaussian``: FID in the feature space of the config's FID
  callback (digits: lebm's digit classifier, FID_d) between 500 samples and held-out images
  after the last epoch, the samples decoded from z ~ N(0, I) (the model's prior) and from the
  Gaussian fitted to the training codes (``sample_from="code_gaussian"``, ex-post density
  estimation: not the model's prior), whatever the config samples with.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

MODELS = ("vae", "lae")
# final metrics of a run: (column, metric key, sign) -- sign -1 turns a bound into a loss
COLUMNS = (
    ("mse", "test/mse", 1.0),
    ("nll", "test/nll", 1.0),
    ("neg_elbo", "test/elbo", -1.0),
    ("neg_elbo_fixed_q", "test/elbo_fixed_q", -1.0),
    ("bpd", "test/bpd", 1.0),
    ("fid", "fid/prior", 1.0),
    ("fid_code", "fid/code_gaussian", 1.0),
)
# Published numbers to put beside ours (REFERENCE.md section 5): a course reimplementation's
# reconstruction MSE, and the LAE paper's test negative ELBO per dimension (units unconfirmed)
REFERENCE_ROWS = (
    "| seed project (course reimplementation), MNIST | reconstruction MSE | 0.0717 | 0.0718 |",
    "| seed project, CIFAR-10 | reconstruction MSE | 0.0853 | 0.0823 |",
    "| LAE paper (Taniguchi et al. 2022), MNIST, 3 seeds | test -ELBO per dim., fixed q | 1.189 | 1.177 |",
)


def train_and_test(config: Path, seed: int, run_dir: Path, epochs: int | None, extra: list[str]):
    """Fit ``config`` with ``seed`` into ``run_dir``, then test the final model.

    Returns:
        ``(model, datamodule, metrics)`` with the final validation and test metrics as floats.
    """
    from lebm.cli import run_cli

    args = [
        "fit",
        "-c",
        str(config),
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        *([f"--trainer.max_epochs={epochs}"] if epochs else []),
        *extra,
    ]
    cli = run_cli(args)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    (results,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    metrics |= {k: float(v) for k, v in results.items()}
    metrics |= fid_both_ways(cli.trainer, cli.model)
    return cli.model, cli.datamodule, metrics


def fid_both_ways(trainer, model) -> dict[str, float]:
    """``{"fid/prior", "fid/code_gaussian"}`` from the run's FID callback (none: ``{}``), the
    model sampling z from N(0, I) and from its code Gaussian; its own setting is restored."""
    from callbacks import FIDCallback

    fid = next((c for c in trainer.callbacks if isinstance(c, FIDCallback)), None)
    if fid is None:
        return {}
    saved, values = model.sample_from, {}
    model.eval()
    try:
        for mode in ("prior", "code_gaussian"):
            model.sample_from = mode
            values[f"fid/{mode}"] = fid.evaluate(trainer, model)["fid"]
    finally:
        model.sample_from = saved
    return values


def interpolation_grid(models: dict, datamodule, pairs: int, points: int, path: Path) -> None:
    """Rows of decoded latent interpolations between the same test pairs for every model."""
    import torch
    from torchvision.utils import save_image

    from lebm.data import batch_data

    datamodule.setup("test")
    x = torch.cat([batch_data(b) for b in datamodule.test_dataloader()])[: 2 * pairs]
    rows = []
    for model in models.values():
        model.eval()
        x_dev = x.to(model.device)
        path_images = model.interpolate(x_dev[:pairs], x_dev[pairs:], points).cpu()
        # each row: the first test image, the decoded path, the second test image
        rows.append(torch.cat([x[:pairs, None], path_images, x[pairs:, None]], 1).flatten(0, 1))
    grid = torch.nn.functional.interpolate(torch.cat(rows), scale_factor=3, mode="nearest")
    save_image((grid + 1) / 2, path, nrow=points + 2, padding=2, pad_value=1.0)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN when empty."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(runs: list[dict], data_dims: int, data: str, epochs_note: str, out: Path) -> str:
    """Write summary.csv and summary.md; return the markdown."""
    names = [c for c, _, _ in COLUMNS] + ["neg_elbo_fixed_q_per_dim"]
    table = []
    for model in MODELS:
        rows = [r for r in runs if r["model"] == model]
        entry = {"model": model, "seeds": len(rows)}
        for name in names:
            values = [r[name] for r in rows if not math.isnan(r[name])]
            entry[name], entry[f"{name}_std"] = mean_std(values)
        table.append(entry)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)

    def cell(entry: dict, name: str, digits: int) -> str:
        return f"{entry[name]:.{digits}f} ± {entry[f'{name}_std']:.{digits}f}"

    lines = [
        f"VAE vs LAE on {data} ({epochs_note}; mean ± std over {table[0]['seeds']} seeds; D = "
        f"{data_dims}). Bounds in nats per data point on the test split.",
        "",
        "| model | recon. MSE | test NLL (IWAE K=100, own q) | -ELBO (own q) "
        "| -ELBO (q = N(mean, 0.05²)) | same, per dim. | bits/dim (IWAE) | FID, z ~ N(0, I) "
        "| FID, z ~ code Gaussian |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        lines.append(
            f"| {entry['model'].upper()} | {cell(entry, 'mse', 4)} | {cell(entry, 'nll', 1)} "
            f"| {cell(entry, 'neg_elbo', 1)} | {cell(entry, 'neg_elbo_fixed_q', 1)} "
            f"| {cell(entry, 'neg_elbo_fixed_q_per_dim', 3)} | {cell(entry, 'bpd', 3)} "
            f"| {cell(entry, 'fid', 1)} | {cell(entry, 'fid_code', 1)} |"
        )
    lines += ["", "Published numbers (other data sets and networks):", ""]
    lines += ["| source | metric | VAE | LAE |", "|---|---|---|---|", *REFERENCE_ROWS, ""]
    markdown = "\n".join(lines)
    (out / "summary.md").write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits", help="configs/{vae,lae}/<data>.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the configs' epochs")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--configs", type=Path, default=Path(__file__).parents[2] / "configs")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="models to (re)train; rows of the others are kept from --out's runs.csv",
    )
    parser.add_argument("--pairs", type=int, default=6, help="test pairs interpolated")
    parser.add_argument("--points", type=int, default=10, help="points per interpolation")
    parser.add_argument(
        "extra",
        nargs="*",
        help="more CLI overrides for every run (after --), e.g. --trainer.limit_train_batches=2",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("runs/experiments/vae_vs_lae") / args.data
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    if set(args.models) != set(MODELS) and (out / "runs.csv").exists():
        with open(out / "runs.csv", newline="") as f:  # keep the other models' finished runs
            for row in csv.DictReader(f):
                if row["model"] not in args.models:
                    row = {k: v if k == "model" else float(v) for k, v in row.items()}
                    runs.append(row | {"seed": int(row["seed"])})
    for seed in args.seeds:
        models, datamodule = {}, None
        for model_name in args.models:
            config = args.configs / model_name / f"{args.data}.yaml"
            if not config.exists():
                raise FileNotFoundError(
                    f"{config} does not exist: no {model_name} config for --data {args.data}"
                )
            model, datamodule, metrics = train_and_test(
                config, seed, out / model_name / f"seed{seed}", args.epochs, args.extra
            )
            models[model_name] = model
            dims = math.prod(model.data_shape)
            row = {"model": model_name, "seed": seed}
            for name, key, sign in COLUMNS:
                row[name] = sign * metrics.get(key, math.nan)
            row["neg_elbo_fixed_q_per_dim"] = row["neg_elbo_fixed_q"] / dims
            runs.append(row)
            print(
                f"{model_name} seed {seed}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
            )
        if set(models) == set(MODELS):
            interpolation_grid(
                models, datamodule, args.pairs, args.points, out / f"interpolation_seed{seed}.png"
            )
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    epochs_note = f"{args.epochs} epochs" if args.epochs else "the configs' epochs"
    runs.sort(key=lambda r: (MODELS.index(r["model"]), r["seed"]))
    markdown = summarise(runs, dims, args.data, epochs_note, out)
    print(markdown)
    print(f"wrote {out}")
    return markdown


if __name__ == "__main__":
    main()
