"""Figures: image grids map [-1, 1] to black..white and tile in a square grid."""

import numpy as np
import pytest
import torch
from PIL import Image

from lebm.plotting import is_image_batch, save_image_grid


def test_image_grid_layout_and_value_mapping(tmp_path):
    images = torch.full((10, 1, 8, 8), -1.0)
    images[0] = 1.0  # first tile white
    images[1] = 5.0  # out of range: clamped to white
    grid = save_image_grid(images, tmp_path / "grid.png", min_tile=1)
    # ceil(sqrt(10)) = 4 tiles per row, 3 rows, 1-pixel white padding around every tile
    assert grid.shape == (3, 3 * 9 + 1, 4 * 9 + 1)
    png = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    assert png.shape == (28, 37)
    assert png[1:9, 1:9].min() == 255 and png[1:9, 10:18].min() == 255  # tiles 0 and 1
    assert png[1:9, 19:27].max() == 0  # tile 2 is -1 -> black
    assert png[0, :].min() == 255  # padding


def test_rgb_grid_and_bad_shapes(tmp_path):
    grid = save_image_grid(torch.zeros(4, 3, 16, 16), tmp_path / "rgb.png", nrow=4)
    # 16-px images are enlarged 4x (min_tile=64) so small digits stay visible
    assert grid.shape == (3, 66, 4 * 65 + 1)
    assert torch.allclose(grid[:, 1:65, 1:65], torch.tensor(0.5))  # 0 -> mid grey
    assert is_image_batch(torch.zeros(2, 1, 4, 4)) and not is_image_batch(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"needs images \(N, 1\|3, H, W\), got \(5, 2\)"):
        save_image_grid(torch.zeros(5, 2), tmp_path / "bad.png")
