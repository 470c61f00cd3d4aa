"""Checkpoint compatibility: a checkpoint must come from the model class and configuration of
the run that loads it.

:class:`lebm.models.base.GenerativeModel` calls :func:`check_checkpoint_matches` in
``on_load_checkpoint``, before Lightning loads the weights, so ``lebm test / predict / fit
--ckpt_path`` with the config of another model, or of the same model with other network sizes,
fails with a message naming both classes and the settings that differ, instead of Lightning's
list of missing and unexpected keys.
"""

from __future__ import annotations

import lightning as L


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint was written by another model class or another configuration."""


def _model_class_path(model: L.LightningModule) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def check_checkpoint_matches(checkpoint: dict, model: L.LightningModule, path: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` (a loaded Lightning
    checkpoint) was written by ``model``'s class with tensors of the same names and shapes.
    The message names both classes, the hyperparameters that differ and a few differing
    tensors."""
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_class = hparams.get("_class_path")
    current_class = _model_class_path(model)
    if saved_class is not None and saved_class.rsplit(".", 1)[-1] != type(model).__name__:
        raise CheckpointMismatchError(
            f"{path} holds a {saved_class} checkpoint, but this run built a {current_class}. "
            f"Use the config the checkpoint was trained with (its config.yaml in the run folder) "
            f"or a checkpoint of {type(model).__name__}."
        )
    saved = checkpoint.get("state_dict")
    if saved is None:
        return
    current = model.state_dict()
    differing = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(current[k].shape)}"
        for k in saved.keys() & current.keys()
        if hasattr(saved[k], "shape") and saved[k].shape != current[k].shape
    ]
    differing += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - current.keys())]
    differing += [f"{k}: only in the model" for k in sorted(current.keys() - saved.keys())]
    if not differing:
        return
    model_hparams = dict(getattr(model, "hparams", {}))
    settings = [
        f"{k}: checkpoint {hparams[k]!r} vs run {model_hparams[k]!r}"
        for k in sorted(hparams.keys() & model_hparams.keys())
        if not k.startswith("_") and hparams[k] != model_hparams[k]
    ]
    raise CheckpointMismatchError(
        f"{path} was written by {saved_class or 'a model'} with another configuration than "
        f"this run's {current_class}. Settings that differ: "
        f"{'; '.join(settings) or 'none recorded'}. Tensors that differ ({len(differing)}): "
        f"{'; '.join(differing[:5])}{' ...' if len(differing) > 5 else ''}. Use the config the "
        "checkpoint was trained with (config.yaml in its run folder)."
    )
