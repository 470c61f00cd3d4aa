"""Exact mode masses of a 2-D EBM trained on eight Gaussians.

Normalises exp(f) on the model's own grid (``grid_bounds``, ``grid_size``), gives each grid cell
to the nearest of the eight component centres (in the datamodule's standardised coordinates)
and prints the mass per centre, its total-variation distance from the true 1/8 each, and the
mass within 0.3 (standardised units; the modes are 0.07 wide) of a centre. Unlike
``val/mode_weight_error`` this needs no sampler, so it measures the density, not the chains.

    python docs/results/ebm_mode_masses.py runs/ebm/eight_gaussians_cd/version_0/checkpoints/last.ckpt [...]
"""

import sys

import torch

from datamodules import EightGaussiansDataModule
from lebm.density import grid_points
from lebm.models import EBM


def mode_masses(path: str) -> tuple[torch.Tensor, float]:
    model = EBM.load_from_checkpoint(path, map_location="cpu").eval()
    data = EightGaussiansDataModule(num_samples=10000, batch_size=128, standardize=True)
    data.setup("fit")
    points, _ = grid_points(2, model.hparams.grid_bounds, model.hparams.grid_size)
    with torch.no_grad():
        weights = torch.softmax(model.log_density(points), 0)
    centres = (torch.as_tensor(data.centers).float() - data.mean.float()) / data.std.float()
    distance = torch.cdist(points, centres)
    masses = torch.zeros(8).index_add_(0, distance.argmin(1), weights)
    near = (weights * (distance.min(1).values < 0.3)).sum().item()
    return masses, near


if __name__ == "__main__":
    for path in sys.argv[1:]:
        masses, near = mode_masses(path)
        tv = 0.5 * (masses - 1 / 8).abs().sum().item()
        print(
            f"{path}\n  masses {[round(m, 3) for m in masses.tolist()]}  TV {tv:.3f}  "
            f"within 0.3 of a centre {near:.3f}"
        )
