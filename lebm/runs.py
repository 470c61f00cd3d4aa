"""Reading finished run folders: metric series from ``metrics.csv``, final values with their
spread, and a short label from ``config.yaml``. Shared by the run report
(:class:`callbacks.RunReport`) and ``lebm compare``.

A run folder is what the ``lebm`` CLI writes, ``<trainer.default_root_dir>/version_N``:
``metrics.csv`` (CSVLogger, one row per logging event, a column per metric plus ``epoch`` and
``step``), ``config.yaml``, ``samples.png``, ``metrics.png``, ``checkpoints/``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

Series = list[tuple[int, float]]
"""(step, value) pairs in logging order."""

DEFAULT_LAST_K = 5
"""How many of the last evaluations the spread of a final value is taken over."""


def read_metrics_csv(path: str | Path, x: str = "step") -> dict[str, Series]:
    """Every metric column of a CSVLogger ``metrics.csv`` as (x, value) pairs, x the ``step``
    (default) or ``epoch`` column; empty cells skipped (a row holds one logging event)."""
    if x not in ("step", "epoch"):
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    series: dict[str, Series] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get(x) or 0))
            for name, cell in row.items():
                if name in ("epoch", "step") or cell in (None, ""):
                    continue
                series.setdefault(name, []).append((step, float(cell)))
    return series


@dataclass(frozen=True)
class FinalValue:
    """The final value of a metric and its spread over the last ``k`` evaluations.

    ``mean`` and ``std`` (sample standard deviation, 0 for k = 1) are over the last ``k``
    values; ``count`` is the number of evaluations in the whole run.
    """

    last: float
    mean: float
    std: float
    k: int
    count: int

    def text(self) -> str:
        """``0.0231 ± 0.0021 (last 5 of 20)`` or, for one evaluation, ``0.0231``."""
        if self.k < 2:
            return f"{self.last:.4g}"
        return f"{self.mean:.4g} ± {self.std:.2g} (last {self.k} of {self.count})"


def final_value(series: Series, last_k: int = DEFAULT_LAST_K) -> FinalValue:
    """Last value, and mean ± sample std of the last ``last_k`` values, of a series."""
    if not series:
        raise ValueError("an empty series has no final value")
    values = [v for _, v in series[-last_k:]]
    k = len(values)
    mean = sum(values) / k
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) if k > 1 else 0.0
    return FinalValue(series[-1][1], mean, std, k, len(series))


def find_run_folder(path: str | Path) -> Path:
    """``path`` if it holds ``metrics.csv``, else its newest ``version_N`` sub-folder that does
    (so ``runs/latent_ebm/moons`` names its latest run).

    Raises:
        FileNotFoundError: naming the path, when neither holds a ``metrics.csv``.
    """
    path = Path(path)
    if (path / "metrics.csv").is_file():
        return path
    versions = [p for p in path.glob("version_*") if p.is_dir() and (p / "metrics.csv").is_file()]
    if versions:

        def number(p: Path) -> int:
            match = re.fullmatch(r"version_(\d+)", p.name)
            return int(match.group(1)) if match else -1

        return max(versions, key=number)
    raise FileNotFoundError(
        f"{path} is not a run folder: it holds no metrics.csv, nor does any version_N folder "
        "in it (pass <trainer.default_root_dir>/version_N, or the default_root_dir itself)"
    )


def run_label(folder: str | Path) -> str:
    """``Model on Data (version_N)`` from the run's ``config.yaml``, else the folder name."""
    folder = Path(folder)
    config_path = folder / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}

    def short(key: str) -> str | None:
        node = config.get(key) if isinstance(config, dict) else None
        path = node.get("class_path") if isinstance(node, dict) else None
        return path.rsplit(".", 1)[-1] if path else None

    model, data = short("model"), short("data")
    if model is None:
        return str(folder)
    parent = folder.parent.name if folder.name.startswith("version_") else ""
    where = f"{parent}/{folder.name}" if parent else folder.name
    return f"{model} on {data or 'data'} ({where})"
