"""DDP on CPU (2 processes, gloo) for every model, against one process on the same data.

One launch covers everything: two processes started once (torchrun-style environment:
MASTER_ADDR, RANK, LOCAL_RANK, WORLD_SIZE, so Lightning's ``strategy="ddp"`` runs in the
processes it finds instead of spawning new ones; the same DDPStrategy as ``ddp_spawn``), each
looping over the zoo's tiny models. What is checked (rank 0 writes the results; the test
compares them with runs in this process):

* validation: the same initial weights give the same validation metrics (MMD², SWD, mode
  weights, every model's own metrics) as one process, within float tolerance (rtol 1e-5):
  each rank reads a contiguous block of whole batches and seeds every batch by its
  single-process index, and the metric states are concatenated in rank order;
* ``lebm predict``'s writer: one ``samples.pt`` with the requested count, in request order,
  equal to the single-process file;
* training: the ranks' global random streams differ (MCMC noise per rank) and rank 1's is the
  documented ``rank_seed``; after two DDP steps the ranks' parameters are identical;
* gradients: for a model whose loss is deterministic given the data (EBM, exact score
  matching) the gradient averaged over the two ranks equals the single-process full-batch
  gradient;
* exact resume under DDP: 1 epoch + resume to 2 equals 2 epochs straight (bit-identical
  parameters), and the checkpoint holds both ranks' random states.

What differs by design (not tested for equality): a DDP fit of a model that draws noise
(MCMC chains, diffusion noise, VAE eps) draws different noise on each rank, so its weights
after training differ from a single-process run's.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback

from callbacks import SampleWriter
from callbacks.resume import rank_seed
from datamodules import MoonsDataModule
from lebm.models import EBM
from lebm.nets import EnergyMLP
from lebm.samplers import Langevin
from tests.conftest import checkpointing_trainer, quiet_trainer
from tests.test_resume import MODELS as RESUME_MODELS

WORLD = 2
# the resume tests' tiny models; the EBM with a coarser grid normaliser (val/nll) and 10
# sampling steps (its default sampler runs 500)
MODELS = {
    **RESUME_MODELS,
    "EBM": lambda: EBM(
        energy=partial(EnergyMLP, hidden=8),
        grid_size=60,
        train_sampler=Langevin(3, 0.01),
        sampler=Langevin(10, 0.01),
        buffer_size=64,
    ),
}
# VAEBM trains its VAE, then its energy with the VAE frozen, and a score-matching EBM's loss
# does not depend on the energy's output bias: DDP must be told that a step leaves parameters
# without gradients (plain "ddp" skips the all-reduce of their bucket on the first step and
# raises on the second). The README's Scale section says the same.
STRATEGY = {"VAEBM": "ddp_find_unused_parameters_true"}
UNUSED = "ddp_find_unused_parameters_true"
# 40 val points in batches of 16: rank 0 reads [0, 32) (two batches), rank 1 [32, 40) (one)
DATA = dict(num_samples=200, batch_size=16, val_fraction=0.2, num_predict_samples=10)
PREDICT_BATCH = 4  # 10 requests: rank 0 [0, 8), rank 1 [8, 10)
# train split of exactly WORLD x 8 points: one DDP step of 8 per rank = one full batch of 16
GRAD_DATA = dict(num_samples=20, val_fraction=0.1, test_fraction=0.1)
SM_EBM = partial(EBM, energy=partial(EnergyMLP, hidden=8), objective="score_matching",
                 score_objective="exact")  # fmt: skip


def _data(**overrides) -> MoonsDataModule:
    return MoonsDataModule(**{**DATA, **overrides})


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


class _Record(Callback):
    """The global torch random state at setup (after ExactResume's) and the gradients the
    optimizer is about to apply (after DDP's all-reduce)."""

    def __init__(self) -> None:
        self.rng_at_setup = None
        self.grads = None

    def setup(self, trainer, pl_module, stage):
        self.rng_at_setup = torch.get_rng_state()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.grads is None:
            self.grads = torch.cat([p.grad.flatten() for p in pl_module.parameters()
                                    if p.grad is not None])  # fmt: skip


def _validate(name, root, trainer_args) -> dict:
    L.seed_everything(0, verbose=False)
    model = MODELS[name]()
    trainer = quiet_trainer(root, **trainer_args)
    return {k: float(v) for k, v in trainer.validate(model, _data(), verbose=False)[0].items()}


def _predict(name, root, trainer_args) -> Path:
    L.seed_everything(0, verbose=False)
    model = MODELS[name]()
    writer = SampleWriter(output_dir=str(root), plot=False)
    trainer = quiet_trainer(root, callbacks=[writer], **trainer_args)
    trainer.predict(model, _data(batch_size=PREDICT_BATCH), return_predictions=False)
    return root / "samples.pt"


def _fit(make, root, trainer_args, data, max_epochs=1, ckpt_path=None, **extra):
    L.seed_everything(0, verbose=False)
    model = make()
    record = _Record()
    trainer = checkpointing_trainer(root, [record], max_epochs=max_epochs, **trainer_args, **extra)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, record


def _gather(obj) -> list:
    out = [None] * WORLD
    torch.distributed.all_gather_object(out, obj)
    return out


def _worker(rank: int, port: int, root: str) -> None:
    """One rank: every model's validate / predict / short fit under strategy="ddp"."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(1)
    root = Path(root)
    ddp = dict(accelerator="cpu", devices=WORLD, strategy="ddp")
    results: dict = {"validate": {}, "fit": {}}
    for name in MODELS:
        results["validate"][name] = _validate(name, root / "val" / name, ddp)
        _predict(name, root / "predict" / name, ddp)
        strategy = {**ddp, "strategy": STRATEGY.get(name, "ddp")}
        model, record = _fit(
            MODELS[name], root / "fit" / name, strategy, _data(), limit_train_batches=2
        )
        results["fit"][name] = {
            "params": _gather(_flat(model)),
            "rng_at_setup": _gather(record.rng_at_setup),
        }
    # the averaged gradient of a deterministic loss
    _, record = _fit(SM_EBM, root / "grad", {**ddp, "strategy": UNUSED},
                     _data(batch_size=8, **GRAD_DATA))  # fmt: skip
    results["grad"] = record.grads
    # exact resume of a DDP run: 2 epochs straight vs 1 + 1
    fit = partial(_fit, MODELS["LatentEBM"], trainer_args=ddp, limit_train_batches=2)
    straight, _ = fit(root=root / "straight", data=_data(), max_epochs=2)
    fit(root=root / "first", data=_data(), max_epochs=1)
    resumed, _ = fit(root=root / "resumed", data=_data(), max_epochs=2,
                     ckpt_path=root / "first" / "last.ckpt")  # fmt: skip
    results["resume"] = {"straight": _gather(_flat(straight)), "resumed": _gather(_flat(resumed))}
    if rank == 0:
        torch.save(results, root / "results.pt")


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> tuple[Path, dict]:
    """Launch the two ranks once for the whole module."""
    root = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks start from this process's imports (spawn would import lightning again
    # in each, ~20 s on a 2-core machine); the DDP code path is the same
    mp.start_processes(_worker, args=(port, str(root)), nprocs=WORLD, start_method="fork")
    return root, torch.load(root / "results.pt", weights_only=False)


@pytest.mark.parametrize("name", list(MODELS))
def test_ddp_validation_metrics_equal_one_process(name, ddp_results, tmp_path):
    root, results = ddp_results
    single = _validate(name, tmp_path, {})
    ddp = results["validate"][name]
    assert ddp.keys() == single.keys() and "val/mmd" in single
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", list(MODELS))
def test_ddp_predict_writes_one_file_in_request_order(name, ddp_results, tmp_path):
    root, _ = ddp_results
    ddp = torch.load(root / "predict" / name / "samples.pt", weights_only=True)
    single = torch.load(_predict(name, tmp_path, {}), weights_only=True)
    assert ddp.shape == (DATA["num_predict_samples"], 2) == single.shape
    torch.testing.assert_close(ddp, single, rtol=1e-5, atol=1e-6)
    assert len(torch.unique(ddp, dim=0)) == len(ddp)  # ranks drew different requests
    assert not (root / "predict" / name / "samples_rank1.pt").exists()


@pytest.mark.parametrize("name", list(MODELS))
def test_ddp_ranks_draw_distinct_noise_and_stay_in_sync(name, ddp_results):
    _, results = ddp_results
    fit = results["fit"][name]
    rank0, rank1 = fit["rng_at_setup"]
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank1, torch.manual_seed(rank_seed(0, 1)).get_state())
    assert torch.equal(rank0, torch.manual_seed(0).get_state())  # rank 0: the single stream
    torch.testing.assert_close(fit["params"][0], fit["params"][1], rtol=0, atol=0)


def test_ddp_averaged_gradient_equals_the_full_batch_gradient(ddp_results, tmp_path):
    _, results = ddp_results
    data = MoonsDataModule(**GRAD_DATA, batch_size=16)
    data.setup("fit")
    assert len(data.split("train")) == 2 * 8  # one full batch = both ranks' batches
    _, record = _fit(SM_EBM, tmp_path, {}, data)
    assert results["grad"].abs().max() > 0
    torch.testing.assert_close(results["grad"], record.grads, rtol=1e-5, atol=1e-7)


def test_ddp_resume_is_exact_and_keeps_every_rank_stream(ddp_results):
    root, results = ddp_results
    for straight, resumed in zip(*results["resume"].values(), strict=True):
        assert torch.equal(straight, resumed)
    saved = torch.load(root / "first" / "last.ckpt", weights_only=True)["lebm_resume"]
    states = saved["random_states_per_rank"]
    assert len(states) == WORLD and not torch.equal(states[0]["torch"], states[1]["torch"])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_models_checkpoint_loads_with_weights_only(name, ddp_results):
    """The checkpoints the DDP fits wrote hold plain data: weights_only=True loads them."""
    root, _ = ddp_results
    path = root / "fit" / name / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["_class_path"].rsplit(".", 1)[-1] == name
    assert (
        checkpoint["state_dict"] and len(checkpoint["lebm_resume"]["random_states_per_rank"]) == 2
    )
