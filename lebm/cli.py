"""The ``lebm`` command: LightningCLI over every model and datamodule, chosen by class path.

    lebm fit     -c configs/latent_ebm/moons.yaml
    lebm test    -c configs/latent_ebm/moons.yaml --ckpt_path <run>/checkpoints/last.ckpt
    lebm predict -c configs/latent_ebm/moons.yaml --ckpt_path <run>/checkpoints/last.ckpt
    lebm compare runs/latent_ebm/moons runs/ddpm/moons      (see lebm.compare)

What lebm adds to a plain LightningCLI:

- the datamodule's ``data_shape`` is linked into the model's ``data_shape`` (type it once);
- a CSVLogger writing to ``<trainer.default_root_dir>/version_N`` when no logger is chosen;
- always-on callbacks: ``checkpoint`` (ModelCheckpoint saving ``last.ckpt`` at the end of
  every training epoch), ``resume`` (ExactResume: random states in every checkpoint, so a run
  resumed with ``--ckpt_path`` ends bit-identical to an uninterrupted one; mid-epoch checkpoints
  refused), ``divergence`` (DivergenceGuard: a non-finite loss or state stops the run with the
  step, the setting to change and the last good checkpoint, which it never overwrites),
  ``prediction_writer`` (SampleWriter, used by ``lebm predict``), ``progress`` (EpochLines:
  one line per validation epoch when no progress bar shows) and ``report`` (RunReport:
  ``<run>/report.html`` at the end of fit and test);
- progress a person can follow: with ``--progress.mode auto`` (default) Lightning's progress
  bar shows when standard output is a terminal, and one line per validation epoch otherwise
  (CI logs, ``make run | tee``); ``bar`` / ``lines`` force one of them;
- quiet logs: Lightning's advertisement tips, jsonargparse's "args and command line" notice
  (raised by lebm's own compose expansion) and a torch deprecation warning raised inside
  Lightning are silenced; warnings about the run itself are kept;
- ``inference_mode=False`` by default, because validation and prediction run MCMC (autograd);
- config fragments: a config may start with ``compose: [other.yaml, ...]`` (paths relative to
  it); ``-c config.yaml`` then reads as ``-c other.yaml ... -c config.yaml``, so a config
  states only what differs from the fragments it builds on (see configs/README.md);
- swapping the datamodule on the command line (``--data=OtherDataModule`` after a config that
  chose another class) resets the config's ``data.init_args`` that the new class also takes to
  the new class's defaults, instead of letting jsonargparse carry them over silently (a
  plugged class would get the config's batch_size); what was reset is printed, and values
  given after the swap (``--data.batch_size=...``) are kept;
- a summary of where the outputs are, printed at the end of each command.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from callbacks.divergence import DivergenceGuard
from callbacks.prediction_writer import SampleWriter
from callbacks.progress import EpochLines, stdout_is_terminal
from callbacks.report import RunReport, final_metrics
from callbacks.resume import ExactResume


class _DropTips(logging.Filter):
    """Drops Lightning's advertisement tips ("💡 Tip: ... try installing ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("💡 Tip")


def quiet_dependency_noise() -> None:
    """Silence messages that are not about the user's run (idempotent).

    Dropped: Lightning's advertisement tips and the FutureWarning torch raises when Lightning
    uses its deprecated ``LeafSpec``. Everything else (Lightning's warnings about the run, such
    as too few batches for the logging interval, and every lebm warning) stays.
    """
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


class LebmSaveConfig(SaveConfigCallback):
    """Writes ``config.yaml`` to the run folder and logs the full config to W&B loggers."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        quiet_dependency_noise()  # again in every process ddp_spawn starts
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(
                    {"lebm_config": self.config.clone().as_dict()}, allow_val_change=True
                )


def _class_name(config, key: str) -> str | None:
    """Short class name of the ``class_path`` under ``key`` of a parsed config, if any."""
    node = config.get(key)
    path = getattr(node, "class_path", None) or (
        node.get("class_path") if isinstance(node, dict) else None
    )
    return path.rsplit(".", 1)[-1] if path else None


def composed_files(path: str | Path, chain: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` preceded by the fragments its ``compose`` list names, depth first."""
    path = Path(path).resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ValueError(f"config fragments include each other in a cycle: {cycle}")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return [path]  # not ours to report: jsonargparse names the problem
    compose = content.get("compose") if isinstance(content, dict) else None
    if compose is None:
        return [path]
    if isinstance(compose, str):
        compose = [compose]
    files: list[Path] = []
    for entry in compose:
        fragment = path.parent / entry
        if not fragment.is_file():
            raise FileNotFoundError(
                f"{path} composes {entry!r}, but {fragment.resolve()} does not exist; compose "
                "paths are relative to the config that names them"
            )
        files += composed_files(fragment, (*chain, path))
    return [*files, path]


def expand_compose(args: list[str]) -> list[str]:
    """Replace each ``-c FILE`` / ``--config FILE`` / ``--config=FILE`` whose YAML has a
    ``compose`` list by one ``-c`` per fragment (recursively) followed by ``-c FILE``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg, value = args[i], None
        if arg in ("-c", "--config") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if Path(value).is_file():
            for path in composed_files(value):
                out += ["-c", str(path)]
        else:  # a YAML string, or a missing file jsonargparse will report
            out += ["-c", value]
    return out


_CLASS_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def _data_switch(args: list[str]) -> tuple[int, int, str] | None:
    """``(first, last, class)`` of the last command-line datamodule swap (``--data=X``,
    ``--data X``, ``--data.class_path=X``): the argument positions it spans and the class."""
    found = None
    i = 0
    while i < len(args):
        arg = args[i]
        for flag in ("--data", "--data.class_path"):
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
                if _CLASS_NAME.match(value) and not Path(value).is_file():
                    found = (i, i, value)
            elif arg == flag and i + 1 < len(args):
                value = args[i + 1]
                if _CLASS_NAME.match(value) and not Path(value).is_file():
                    found = (i, i + 1, value)
        i += 1
    return found


def _config_data(args: list[str], before: int) -> tuple[str | None, dict]:
    """Class path and merged init_args of ``data`` in the ``-c`` files before position ``before``
    (later files update earlier ones, as jsonargparse merges them)."""
    class_path, init_args = None, {}
    for i, arg in enumerate(args[:before]):
        if arg not in ("-c", "--config") or i + 1 >= len(args) or not Path(args[i + 1]).is_file():
            continue
        try:
            content = yaml.safe_load(Path(args[i + 1]).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        node = content.get("data") if isinstance(content, dict) else None
        if isinstance(node, dict) and "class_path" in node:
            class_path = node["class_path"]
            init_args.update(node.get("init_args") or {})
    return class_path, init_args


def _resolve_datamodule(name: str):
    """The class named by a class path or a bare name (looked up in ``datamodules``)."""
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module or "datamodules"), attr)
    except (ImportError, AttributeError):
        return None


def _init_defaults(cls) -> dict[str, object]:
    """Every ``__init__`` argument of ``cls`` and of the parents its ``**kwargs`` reach (up the
    MRO while each ``__init__`` forwards ``**kwargs``), with its default (``inspect.Parameter.empty`` when required)."""
    params: dict[str, object] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            forwards |= p.kind is p.VAR_KEYWORD
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in params:
                continue
            params[p.name] = p.default
        if not forwards:  # the parents' arguments are not reachable from the command line
            break
    return params


def reset_swapped_data_args(args: list[str]) -> tuple[list[str], str | None]:
    """After a ``--data=X`` swap, reset the config's ``data.init_args`` that X also takes to X's
    defaults (jsonargparse would carry them over). Returns the new arguments and a note saying
    what was reset (None when nothing was)."""
    switch = _data_switch(args)
    if switch is None:
        return args, None
    first, last, new = switch
    old, carried = _config_data(args, first)
    if old is None or old.rsplit(".", 1)[-1] == new.rsplit(".", 1)[-1] or not carried:
        return args, None
    cls = _resolve_datamodule(new)
    if cls is None:
        return args, None
    defaults = _init_defaults(cls)
    later = " ".join(args[last + 1 :])
    reset, kept = [], []
    for name, value in carried.items():
        if name not in defaults or re.search(rf"--data\.(init_args\.)?{name}\b", later):
            continue
        default = defaults[name]
        try:
            encoded = json.dumps(default)
        except TypeError:
            encoded = None
        if default is inspect.Parameter.empty or encoded is None:
            kept.append(f"{name}={value!r}")
            continue
        if default != value:
            reset.append((name, value, default, encoded))
    if not reset and not kept:
        return args, None
    extra = [f"--data.init_args.{name}={encoded}" for name, _, _, encoded in reset]
    short = new.rsplit(".", 1)[-1]
    parts = [f"{n} {v!r} -> {d!r}" for n, v, d, _ in reset]
    note = (
        f"lebm: --data swapped {old.rsplit('.', 1)[-1]} for {short}; the config's data "
        f"arguments were set for {old.rsplit('.', 1)[-1]}, so these now take {short}'s "
        f"defaults: {', '.join(parts) or 'none'}"
    )
    if kept:
        note += f"; kept (no default to reset to): {', '.join(kept)}"
    note += ". Pass --data.<name>=<value> after --data to choose them."
    return [*args[: last + 1], *extra, *args[last + 1 :]], note


class LebmCLI(LightningCLI):
    """LightningCLI with lebm's links, defaults and output summary."""

    def before_instantiate_classes(self) -> None:
        """Group W&B runs by model and tag them with the dataset (and TI power) if unset."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        config["compose"] = None  # already expanded; the saved config.yaml stands alone
        loggers = config.trainer.get("logger")
        loggers = loggers if isinstance(loggers, list) else [loggers]
        model, data = _class_name(config, "model"), _class_name(config, "data")
        for logger in loggers:
            if not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
                continue
            args = logger.init_args
            if args.get("save_dir") in (None, "."):
                args["save_dir"] = config.trainer.get("default_root_dir") or "."
            if args.get("group") is None:
                args["group"] = model
            tags = list(args.get("tags") or [])
            tags.append(f"data={data}")
            power = config.model.init_args.get("temperature_power")
            if power is not None:
                tags.append(f"p={power}")
            args["tags"] = tags

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--compose",
            type=list[str] | None,
            default=None,
            help="Config fragments this config builds on (read by lebm before parsing; "
            "paths relative to the config file).",
        )
        parser.link_arguments(
            "data.data_shape", "model.init_args.data_shape", apply_on="instantiate"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # at the end of every training epoch (not after a validation that may come mid-epoch or
        # every n epochs): the points an exact resume starts from (callbacks.resume)
        parser.set_defaults(
            {"checkpoint.save_last": True, "checkpoint.save_on_train_epoch_end": True}
        )
        parser.add_lightning_class_args(ExactResume, "resume")
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        parser.add_lightning_class_args(SampleWriter, "prediction_writer")
        parser.add_lightning_class_args(EpochLines, "progress")
        parser.add_lightning_class_args(RunReport, "report")

    def instantiate_classes(self) -> None:
        """Builds datamodule, model and trainer; a datamodule must say its ``data_shape``."""
        super().instantiate_classes()
        if self.datamodule is not None and not hasattr(self.datamodule, "data_shape"):
            raise AttributeError(
                f"{type(self.datamodule).__name__} has no attribute data_shape. lebm links the "
                "datamodule's data_shape into the model, so a datamodule must expose the shape "
                "of one data point before setup, e.g. `self.data_shape = (1, 28, 28)` in "
                "__init__ (see 'Plugging in your own data' in the README)."
            )

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Always log CSV to the run folder (first, so it names ``trainer.log_dir``); show the
        progress bar only where a person watches a terminal (see ``--progress.mode``)."""
        config = self._get(self.config_init, "trainer", default={})
        progress = self._get(self.config_init, "progress", default=None)
        mode = getattr(progress, "mode", "auto")
        if "enable_progress_bar" not in kwargs and config.get("enable_progress_bar") is not False:
            if mode == "lines" or (mode == "auto" and not stdout_is_terminal()):
                kwargs["enable_progress_bar"] = False
        logger = config.get("logger")
        if logger is not False and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            if logger in (None, True):
                loggers = []
            else:
                loggers = list(logger) if isinstance(logger, list) else [logger]
            if not any(isinstance(lg, CSVLogger) for lg in loggers):
                loggers.insert(0, CSVLogger(save_dir=root, name=""))
            kwargs["logger"] = loggers
        trainer = super().instantiate_trainer(**kwargs)
        if isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
            # ddp_spawn: fix the CSV version here, so the spawned ranks and this process (which
            # prints the summary afterwards) name the same run folder
            for logger in trainer.loggers:
                if isinstance(logger, CSVLogger):
                    logger.version  # noqa: B018 (computed once, then cached and pickled)
        # ExactResume first: it puts the random states back before any other epoch-start hook
        resume = [c for c in trainer.callbacks if isinstance(c, ExactResume)]
        trainer.callbacks = resume + [c for c in trainer.callbacks if c not in resume]
        return trainer

    def _summary(self, stage: str) -> None:
        trainer = self.trainer
        run = Path(trainer.log_dir or trainer.default_root_dir)  # every rank: a collective
        if not trainer.is_global_zero:
            return
        lines = [f"\nlebm {stage} finished. Run folder: {run}"]
        candidates = {
            "report": run / "report.html",
            "metrics": run / "metrics.csv",
            "samples": run / "samples.png",
            "curves": run / "metrics.png",
            "config": run / "config.yaml",
        }
        for label, path in candidates.items():
            if path.exists():
                lines.append(f"  {label:<11} {path}")
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if ckpt:
            lines.append(f"  {'checkpoint':<11} {ckpt}")
        writer = next((c for c in trainer.callbacks if isinstance(c, SampleWriter)), None)
        if stage == "predict" and writer is not None:
            # under ddp_spawn the ranks wrote the file; this process only knows where
            folder = Path(writer.output_dir) if writer.output_dir else run / "predictions"
            path = writer.last_path or folder / "samples.pt"
            if Path(path).exists():
                lines.append(f"  {'predictions':<11} {path}")
        prefix = {"fit": "val/", "validate": "val/", "test": "test/"}.get(stage)
        if prefix == "val/" and stage == "fit":
            report = next((c for c in trainer.callbacks if isinstance(c, RunReport)), None)
            last_k = report.last_k if report is not None else 5
            finals = final_metrics(run, prefix, trainer, last_k)
            width = max([11, *(len(name) for name in finals)])
            for name, value in finals.items():
                spread = f"   mean ± sd of the last {value.k}: {value.mean:.5f} ± {value.std:.5f}"
                lines.append(
                    f"  {name:<{width}} {value.last:.5f}" + (spread if value.k > 1 else "")
                )
        elif prefix:
            for name, value in sorted(trainer.callback_metrics.items()):
                if name.startswith(prefix) and value.numel() == 1:
                    lines.append(f"  {name:<11} {value.item():.5f}")
        print("\n".join(lines), flush=True)

    def after_fit(self) -> None:
        self._summary("fit")

    def after_validate(self) -> None:
        self._summary("validate")

    def after_test(self) -> None:
        self._summary("test")

    def after_predict(self) -> None:
        self._summary("predict")


def run_cli(args: list[str] | None = None, run: bool = True) -> LebmCLI | int:
    """Build (and by default run) the CLI; ``args`` lets tests and scripts call it in-process.

    ``compare`` is lebm's own subcommand (:mod:`lebm.compare`); it returns an exit code.
    """
    quiet_dependency_noise()
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] == "compare":
        from lebm.compare import main as compare_main

        return compare_main(args[1:])
    args = expand_compose(args)
    args, note = reset_swapped_data_args(args)
    if note:
        print(note, file=sys.stderr, flush=True)
    argv = sys.argv
    sys.argv = argv[:1]  # LightningCLI warns when given args while sys.argv also has some
    try:
        return LebmCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={"inference_mode": False},
            save_config_callback=LebmSaveConfig,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv = argv


def main() -> None:
    """Entry point of the ``lebm`` console script and ``python -m lebm``."""
    result = run_cli()
    if isinstance(result, int) and result:
        sys.exit(result)


if __name__ == "__main__":
    main()
