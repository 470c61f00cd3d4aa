"""Stop a diverging run with a message that says where, what to change and where to resume.

:class:`DivergenceGuard` watches a fit and turns divergence into one clear error:

* a non-finite training loss is caught before its backward pass (``on_before_backward``, also
  reached by ``manual_backward``), so no optimizer step ever applies it;
* non-finite parameters after a step (a finite loss with an overflowing gradient) are caught at
  the end of the batch (``check_parameters``);
* an error raised by a sampler (:class:`lebm.samplers.base.SamplerDivergenceError`) or a model
  (any ``FloatingPointError``, e.g. the EBM's ``EnergyDivergenceError``) keeps its type and its
  own text, and gains the same context;
* a checkpoint is never written from a non-finite state (``on_save_checkpoint`` raises before
  the file is written), so ``last.ckpt`` stays the last good state.

The context names the training step (epoch, batch, global step), the settings to change (the
model's sampler step sizes, its learning rates and ``grad_clip``, as the config
keys ``model.init_args....``) and the last good checkpoint with the ``--ckpt_path`` to resume
from after changing them. There is no automatic roll-back: a run that diverged once usually
needs a smaller step size for the rest of training, and that is a choice to make and record in
the config, not one to hide inside a run.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """The training loss, or the parameters after a step, stopped being finite."""


def parameters_finite(module: torch.nn.Module) -> bool:
    """Whether every floating parameter and buffer of ``module`` is finite (one host sync)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    worst = torch.stack(
        [t.detach().abs().amax() if t.numel() else t.new_zeros(()) for t in tensors]
    )
    return bool(torch.isfinite(worst).all())


def _sampler_keys(hparams) -> list[str]:
    """``model.init_args.<sampler>.init_args.step_size=<value>`` for every sampler in the hparams."""
    keys = []
    for name, value in hparams.items():
        init = value.get("init_args") if isinstance(value, dict) else None
        if isinstance(init, dict) and "step_size" in init:
            keys.append(f"model.init_args.{name}.init_args.step_size={init['step_size']}")
    return keys


def _optimizer_advice(hparams) -> list[str]:
    """ "lower --<lr>=<value>" for every learning rate, and the gradient clip: "set" it when
    the run has none, else "lower" it."""
    advice = [
        f"lower --model.init_args.{k}={v}"
        for k, v in hparams.items()
        if k == "lr" or k.endswith("_lr")
    ]
    if "grad_clip" in hparams:
        clip = hparams["grad_clip"]
        advice.append(
            "set --model.init_args.grad_clip (a gradient-norm clip, e.g. 1.0; now off)"
            if clip is None
            else f"lower --model.init_args.grad_clip={clip}"
        )
    return advice


def _sampler_in_traceback(exception: BaseException, hparams) -> str | None:
    """The model's sampler argument whose chains raised, read from the model method in the
    traceback (``sample_prior`` -> ``prior_sampler``, ``posterior`` -> ``posterior_sampler``)."""
    tb, names = exception.__traceback__, []
    while tb is not None:
        if "/lebm/models/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    for function in reversed(names):
        for candidate in ("posterior", "prior"):
            if candidate in function and f"{candidate}_sampler" in hparams:
                return f"{candidate}_sampler"
    return None


class DivergenceGuard(Callback):
    """Stops the fit at the first non-finite loss or state, with a message naming the step, the
    settings to change and the last good checkpoint (see the module docstring).

    Args:
        check_parameters: after every training batch, check that the parameters and buffers
            are finite (one reduction per tensor and one host sync per batch).
    """

    def __init__(self, check_parameters: bool = True) -> None:
        self.check_parameters = check_parameters

    # ----------------------------------------------------------------- checks
    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"The training loss is {loss.detach().float().mean().item()} (no optimizer step "
                "was taken with it)."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.check_parameters and not parameters_finite(pl_module):
            raise NonFiniteLossError(
                "The model's parameters or buffers became non-finite in the last optimizer step "
                "(the loss was finite: an overflowing gradient or state update)."
            )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        if not parameters_finite(pl_module):
            raise NonFiniteLossError(
                "Refusing to write a checkpoint: the model's parameters or buffers are non-finite."
            )

    # ----------------------------------------------------------------- the message
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, FloatingPointError) or getattr(exception, "_lebm_context", 0):
            return
        context = self.context(trainer, pl_module, exception)
        exception.args = (f"{exception.args[0] if exception.args else ''}\n{context}",)
        exception._lebm_context = True  # type: ignore[attr-defined]

    def context(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> str:
        """Where it happened, what to change, and the checkpoint to resume from."""
        loop = trainer.fit_loop
        stage = "validation" if trainer.validating or trainer.sanity_checking else "training"
        where = (
            f"Stopped during {stage} at epoch {trainer.current_epoch}, batch "
            f"{loop.epoch_loop.batch_idx}, global step {trainer.global_step}."
        )
        hparams = dict(pl_module.hparams)
        sampler = _sampler_in_traceback(exception, hparams)
        samplers = _sampler_keys({sampler: hparams[sampler]} if sampler else hparams)
        if sampler:
            where += f" The {sampler} chains diverged."
        if samplers and not isinstance(exception, NonFiniteLossError):
            settings = "lower " + " or ".join(f"--{k}" for k in samplers)
        else:
            settings = "; ".join(_optimizer_advice(hparams) + [f"lower --{k}" for k in samplers])
        settings = settings or "lower the learning rate or the sampler step size"
        last = self.last_good_checkpoint(trainer)
        resume = (
            f"Last good checkpoint (never overwritten by a non-finite state): {last}; after the "
            f"change, resume with --ckpt_path {last}."
            if last
            else "No checkpoint was written before this point (the first is written at the end "
            "of the first training epoch)."
        )
        return f"{where} Settings to change: {settings}. {resume}"

    @staticmethod
    def last_good_checkpoint(trainer: L.Trainer) -> str | None:
        """The newest checkpoint this run wrote, else the one it resumed from, if on disk."""
        callback = trainer.checkpoint_callback
        for path in (
            getattr(callback, "last_model_path", ""),
            getattr(callback, "best_model_path", ""),
            trainer.ckpt_path,
        ):
            if path and Path(path).exists():
                return str(path)
        return None
