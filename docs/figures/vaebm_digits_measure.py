"""Digits measurements behind the README's VAEBM section: FID_d of the stage-1 VAE alone
(``sample_vae``) and of VAEBM (``sample``) from one checkpoint of
``configs/vaebm/digits.yaml``, and their sample grids side by side.

FID_d / KID_d in the feature space of lebm's shipped digit classifier
(:class:`lebm.features.DigitFeatures`), 500 samples against the 180 val digits (what the
config's ``FIDCallback`` logs as ``val/fid``) and against the 180 test digits, for three
sampling seeds. The figure (64 samples each, seed 0) goes to
``docs/figures/vaebm_digits_samples.png``.

    OMP_NUM_THREADS=1 python docs/figures/vaebm_digits_measure.py runs/vaebm/digits/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from datamodules import DigitsDataModule
from lebm.features import DigitFeatures
from lebm.metrics import FeatureDistances
from lebm.models import VAEBM

FIGURE = Path(__file__).with_name("vaebm_digits_samples.png")


def fid(features: DigitFeatures, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    metric = FeatureDistances(kid_subset_size=100)
    metric.update(features(real), real=True)
    metric.update(features(fake), real=False)
    return {k: float(v) for k, v in metric.compute().items()}


def grid_figure(vae_x: torch.Tensor, vaebm_x: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, x, title in ((axes[0], vae_x, "VAE alone"), (axes[1], vaebm_x, "VAEBM")):
        grid = make_grid((x.clamp(-1, 1) + 1) / 2, nrow=8, padding=1, pad_value=1.0)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(path: str) -> None:
    torch.manual_seed(0)
    model = VAEBM.load_from_checkpoint(path, map_location="cpu").eval()
    data = DigitsDataModule(image_size=16)
    features = DigitFeatures().setup()
    print(f"sampler: {model.sampler}")
    print("model      seed  FID_d(val)  KID_d(val)  FID_d(test)")
    for seed in (0, 1, 2):
        for name, draw in (("VAE alone", model.sample_vae), ("VAEBM", model.sample)):
            x = draw(500, torch.Generator().manual_seed(seed))
            val, test = fid(features, data.split("val"), x), fid(features, data.split("test"), x)
            print(
                f"{name:<10} {seed:>4}  {val['fid']:>10.1f}  {val['kid']:>10.2f}  {test['fid']:>11.1f}"
            )
    real = fid(features, data.split("val"), data.split("test"))
    print(f"test vs val (real vs real): FID_d {real['fid']:.1f}")
    g = torch.Generator().manual_seed(0)
    grid_figure(model.sample_vae(64, g), model.sample(64, torch.Generator().manual_seed(0)), FIGURE)
    print(f"wrote {FIGURE}")


if __name__ == "__main__":
    main(sys.argv[1])
