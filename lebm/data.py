"""What lebm models accept as a batch, in one place.

A datamodule plugged into any lebm model yields either a plain tensor (B, *data_shape) or a
tuple / list whose first item is that tensor (torchvision style ``(images, labels)``; the rest
is ignored). :func:`batch_data` takes either and returns the tensor.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def batch_data(batch: Any) -> Tensor:
    """The data tensor of a batch: ``batch`` itself, or ``batch[0]`` for a tuple / list.

    Raises:
        TypeError: naming the type received and the two accepted forms.
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"expected a batch that is a tensor (B, *data_shape) or a tuple/list whose first item "
        f"is one (e.g. (images, labels)), got {type(batch).__name__}; make the datamodule's "
        f"dataloaders yield one of these"
    )
