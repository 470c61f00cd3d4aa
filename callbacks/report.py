"""One file per run to open: ``<run>/report.html``.

:class:`RunReport` writes it at the end of ``fit`` and of ``test`` (the ``lebm`` CLI adds it to
every run; ``--report.enabled false`` turns it off). It holds, in one self-contained HTML file
(images embedded, so it can be moved or attached to a CI artifact):

* what ran: model and data classes, stage, run folder, checkpoint path;
* the final metrics: for ``fit`` the last validation value of every ``val/*`` scalar and the
  mean ± standard deviation over the last ``last_k`` validations (one epoch's value alone can be
  a lucky draw); for ``test`` the ``test/*`` values;
* the sample picture (``samples.png``; a ``test`` run draws one) and the curves
  (``metrics.png``; a ``test`` run shows those of the run its checkpoint comes from);
* the full config (``config.yaml``, else the model's hyperparameters).
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback

from callbacks._paths import logging_step, run_dir
from callbacks.curves import logged_this_evaluation
from lebm.runs import DEFAULT_LAST_K, FinalValue, final_value, read_metrics_csv

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 0.25em 0.8em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } th { border-bottom: 1px solid #999; }
code, pre { background: #f6f6f6; } pre { padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #ddd; margin-right: 1em; vertical-align: top; }
.muted { color: #666; font-size: 0.9em; }
"""


def _image(path: Path, alt: str, width: int) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" width="{width}" src="data:image/png;base64,{data}">'


def final_metrics(
    run: Path, prefix: str, trainer: L.Trainer, last_k: int = DEFAULT_LAST_K
) -> dict[str, FinalValue]:
    """Final values of the ``prefix`` scalars: from ``<run>/metrics.csv`` when it has them
    (with the spread over the last ``last_k`` evaluations), else the trainer's last values."""
    csv_path = run / "metrics.csv"
    out: dict[str, FinalValue] = {}
    if csv_path.is_file():
        for name, series in read_metrics_csv(csv_path).items():
            if name.startswith(prefix):
                out[name] = final_value(series, last_k)
    if not out:
        for name, value in trainer.callback_metrics.items():
            if name.startswith(prefix) and value.numel() == 1:
                v = float(value)
                out[name] = FinalValue(v, v, 0.0, 1, 1)
    return dict(sorted(out.items()))


class RunReport(Callback):
    """Write ``<run>/report.html`` at the end of ``fit`` and ``test`` (rank 0).

    Args:
        enabled: write the report.
        last_k: the spread of each final validation value is over this many last validations.
        num_samples: points drawn for the sample picture of a ``test`` run (low-dimensional
            data; image models draw 64).
    """

    def __init__(
        self, enabled: bool = True, last_k: int = DEFAULT_LAST_K, num_samples: int = 1000
    ) -> None:
        if last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {last_k}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.enabled = enabled
        self.last_k = last_k
        self.num_samples = num_samples
        self.last_path: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        run = run_dir(trainer)  # every rank: log_dir is a collective under DDP
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:  # flush buffered rows into metrics.csv
            logger.save()
        run.mkdir(parents=True, exist_ok=True)
        checkpoint = ""
        if stage == "fit":
            checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        else:
            checkpoint = str(trainer.ckpt_path or "")
        fresh = logged_this_evaluation(trainer) if stage == "test" else {}
        path = run / "report.html"
        path.write_text(self.render(trainer, pl_module, stage, run, checkpoint, fresh))
        self.last_path = path

    def _test_samples(self, trainer: L.Trainer, pl_module: L.LightningModule, run: Path) -> Path:
        """Draw the sample picture for a test run (no validation plotted one)."""
        from callbacks.samples import SamplePlotter

        path = run / "samples.png"
        SamplePlotter(num_samples=self.num_samples).plot(trainer, pl_module, path)
        return path

    def render(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        run: Path,
        checkpoint: str,
        fresh: dict[str, float],
    ) -> str:
        """The report's HTML."""
        model = type(pl_module).__name__
        data = type(trainer.datamodule).__name__ if trainer.datamodule is not None else "—"
        esc = html.escape
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>lebm {esc(stage)}: {esc(model)} on {esc(data)}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>lebm {esc(stage)}: {esc(model)} on {esc(data)}</h1>",
            "<table>",
            f"<tr><td>run folder</td><td><code>{esc(str(run))}</code></td></tr>",
            f"<tr><td>checkpoint</td><td><code>{esc(checkpoint or '—')}</code></td></tr>",
            f"<tr><td>epochs, iterations</td><td>{trainer.current_epoch}, "
            f"{logging_step(trainer)}</td></tr>",
            f"<tr><td>written</td><td>{esc(when)}</td></tr>",
            "</table>",
        ]

        # ------------------------------------------------------------ metrics
        prefix = "val/" if stage == "fit" else "test/"
        finals = final_metrics(run, prefix, trainer, self.last_k)
        if stage == "test":  # this run's own evaluation, if the CSV holds older rows
            for name, value in fresh.items():
                if name.startswith(prefix):
                    finals[name] = FinalValue(value, value, 0.0, 1, 1)
        parts.append("<h2>Final metrics</h2>")
        if finals:
            if stage == "fit":
                parts.append(
                    f"<p class='muted'>last: the last validation; mean ± sd: over the last "
                    f"{self.last_k} validations (sample standard deviation), a fairer figure "
                    "than one epoch's value.</p>"
                )
            parts.append(
                "<table><tr><th>metric</th><th>last</th><th>mean ± sd</th><th>validations</th></tr>"
            )
            for name, fv in finals.items():
                spread = f"{fv.mean:.4g} ± {fv.std:.2g} (last {fv.k})" if fv.k > 1 else "—"
                parts.append(
                    f"<tr><td><code>{esc(name)}</code></td><td>{fv.last:.4g}</td>"
                    f"<td>{esc(spread)}</td><td>{fv.count}</td></tr>"
                )
            parts.append("</table>")
        else:
            parts.append(f"<p>No <code>{prefix}*</code> metric was logged.</p>")

        # ------------------------------------------------------------ pictures
        samples = run / "samples.png"
        if not samples.exists() and stage == "test":
            try:
                samples = self._test_samples(trainer, pl_module, run)
            except Exception as err:  # the report must not fail a finished run
                parts.append(f"<p>Could not draw samples: {esc(repr(err))}</p>")
        curves = run / "metrics.png"
        curves_note = ""
        if not curves.exists() and checkpoint:
            trained = Path(checkpoint).resolve().parent.parent  # <run>/checkpoints/x.ckpt
            if (trained / "metrics.png").exists():
                curves = trained / "metrics.png"
                curves_note = f" (of the training run {trained})"
        pictures = []
        if samples.exists():
            pictures.append(("Samples", samples, 420))
        if curves.exists():
            pictures.append((f"Curves{curves_note}", curves, 640))
        if pictures:
            parts.append("<h2>" + " and ".join(esc(t) for t, _, _ in pictures) + "</h2><p>")
            parts += [_image(p, t, w) for t, p, w in pictures]
            parts.append("</p>")

        # ------------------------------------------------------------ config
        config_path = run / "config.yaml"
        if config_path.exists():
            config_text, source = config_path.read_text(), str(config_path)
        else:
            try:
                config_text = yaml.safe_dump(dict(pl_module.hparams), sort_keys=False)
            except yaml.YAMLError:
                config_text = repr(dict(pl_module.hparams))
            source = "the model's hyperparameters (no config.yaml in the run folder)"
        parts.append(f"<h2>Config</h2><p class='muted'>{esc(source)}</p>")
        parts.append(f"<pre>{esc(config_text)}</pre>")
        parts.append("</body></html>\n")
        return "\n".join(parts)
