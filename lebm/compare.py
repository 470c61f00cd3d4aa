"""``lebm compare RUN_DIR...``: several runs' metrics in one figure and one table, offline.

    lebm compare runs/latent_ebm/moons runs/ddpm/moons
    lebm compare runs/*/moons --metrics val/mmd val/swd --x epoch --out runs/compare/moons

Each RUN_DIR is a run folder (``<default_root_dir>/version_N``, holding ``metrics.csv``) or a
``default_root_dir`` (its newest ``version_N`` is taken). Writes to ``--out``
(default ``runs/compare``):

* ``compare.png``: one panel per metric, one line per run, against the step or the epoch;
* ``compare.csv`` and ``compare.md``: each run's final value of each metric, with the mean ±
  sample standard deviation over its last ``--last-k`` evaluations (also printed).

This is the W&B-style run comparison without a dashboard (CI, no network); W&B stays the
online option (``-c configs/logger/wandb.yaml``).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
from pathlib import Path

from lebm.runs import (
    DEFAULT_LAST_K,
    final_value,
    find_run_folder,
    read_metrics_csv,
    run_label,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lebm compare",
        description="Overlay the same metrics of several runs in one figure and tabulate their "
        "final values (mean ± sd over the last evaluations).",
    )
    parser.add_argument("runs", nargs="+", help="run folders (version_N) or default_root_dirs")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["val/*"],
        help="metric names or glob patterns (default: val/*); only metrics some run logged",
    )
    parser.add_argument("--x", choices=["step", "epoch"], default="step", help="x axis")
    parser.add_argument("--last-k", type=int, default=DEFAULT_LAST_K, help="spread window")
    parser.add_argument("--out", default="runs/compare", help="output folder")
    return parser


def compare(
    runs: list[str | Path],
    metrics: list[str] | None = None,
    x: str = "step",
    last_k: int = DEFAULT_LAST_K,
    out: str | Path = "runs/compare",
) -> dict[str, Path]:
    """Write the comparison figure and tables; returns their paths (``figure``, ``csv``, ``md``).

    Raises:
        FileNotFoundError: a RUN_DIR without ``metrics.csv``.
        ValueError: no run logged any of ``metrics``.
    """
    from lebm.plotting import plot_run_comparison

    patterns = metrics or ["val/*"]
    folders = [find_run_folder(r) for r in runs]
    labels = [run_label(f) for f in folders]
    if len(set(labels)) < len(labels):  # same model and data twice: use the paths
        labels = [str(f) for f in folders]
    data = [read_metrics_csv(f / "metrics.csv", x) for f in folders]
    names: list[str] = []
    for pattern in patterns:
        for run_series in data:
            for name in sorted(run_series):
                if name not in names and fnmatch.fnmatch(name, pattern):
                    names.append(name)
    if not names:
        logged = sorted({n for run_series in data for n in run_series})
        raise ValueError(f"no run logged a metric matching {patterns}; logged: {logged}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "compare.png"
    plot_run_comparison(
        {
            name: {label: d[name] for label, d in zip(labels, data, strict=True) if name in d}
            for name in names
        },
        figure,
        xlabel="epoch" if x == "epoch" else "iteration",
    )

    header = ["run", "folder", *[f"{n} {c}" for n in names for c in ("last", "mean", "std")]]
    rows, md = [], []
    md.append("| run | " + " | ".join(names) + " |")
    md.append("|---|" + "---|" * len(names))
    for label, folder, run_series in zip(labels, folders, data, strict=True):
        row: list[str] = [label, str(folder)]
        cells = []
        for name in names:
            if name not in run_series:
                row += ["", "", ""]
                cells.append("—")
                continue
            fv = final_value(run_series[name], last_k)
            row += [f"{fv.last:.6g}", f"{fv.mean:.6g}", f"{fv.std:.6g}"]
            cells.append(fv.text())
        rows.append(row)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    table_csv, table_md = out / "compare.csv", out / "compare.md"
    with open(table_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    note = (
        f"\nFinal values: mean ± sample sd over each run's last {last_k} evaluations "
        "(one value when a run has one); figure: compare.png\n"
    )
    table_md.write_text("\n".join(md) + "\n" + note)
    return {"figure": figure, "csv": table_csv, "md": table_md}


def main(argv: list[str] | None = None) -> int:
    """``lebm compare``: returns the exit code (2 on a usage error, 1 on a bad run folder)."""
    args = _parser().parse_args(argv)
    if args.last_k < 1:
        _parser().error(f"--last-k must be >= 1, got {args.last_k}")
    try:
        paths = compare(args.runs, args.metrics, args.x, args.last_k, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"lebm compare: {err}")
        return 1
    print(paths["md"].read_text(), end="")
    print(f"lebm compare: wrote {paths['figure']}, {paths['csv']}, {paths['md']}")
    return 0
