"""W&B logging offline: no network, no key; the run's transaction log holds the metrics."""

import struct
import time

from wandb.proto import wandb_internal_pb2 as pb

from tests.conftest import CONFIGS, FAST

TI = str(CONFIGS / "latent_ebm_ti" / "moons.yaml")
WANDB = str(CONFIGS / "logger" / "wandb.yaml")


def read_records(path):
    """Records of a W&B ``.wandb`` transaction log: a LevelDB-style log (32 KiB blocks after a
    7-byte header; each chunk is crc32, length, type, data; types 1 full, 2/3/4 first/mid/last)."""
    raw = path.read_bytes()
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + data)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending += data


def _summarise(records):
    """(history keys, config keys, run record) of a transaction log's records."""
    keys, config, run = set(), set(), None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "config":
            config |= {item.key or "/".join(item.nested_key) for item in record.config.update}
        elif kind == "run":
            run = record.run
    return keys, config, run


def test_offline_wandb_run_holds_metrics_group_tags_and_config(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = run_cli(
        [
            "fit",
            "-c",
            TI,
            "-c",
            WANDB,
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
            "--model.init_args.num_temperatures=3",
            "--trainer.callbacks=[]",
        ]
    )
    assert (tmp_path / "version_0" / "metrics.csv").exists()  # CSV stays the first logger
    assert cli.trainer.loggers[1].__class__.__name__ == "WandbLogger"
    cli.trainer.loggers[1].experiment.finish()  # flush (a process exit does this for the CLI)
    logs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    expected = {"train/loss_ebm", "train/log_px_ti", "val/mmd"}
    # W&B's service process writes the log asynchronously: once seen failing (no history
    # records yet) after finish() in a full-suite run, so re-read for up to 30 s
    deadline = time.monotonic() + 30
    while True:
        keys, config, run = _summarise(read_records(logs[0]))
        if expected <= keys or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected <= keys
    assert run.run_group == "ThermoLatentEBM"
    assert {"data=MoonsDataModule", "p=1.0"} <= set(run.tags)
    assert {"lebm_config", "num_temperatures"} <= config
