"""The reward plugin interface: ``reward(edited_images uint8 [N, H, W, 3], cases) -> {dimension: tensor [N]}``.

``cases`` are ShapeEdit ``EditCase`` objects (instruction, source scene, expected result) for the embedded world,
or any objects with ``instruction`` and ``source_image`` for other data. Dimensions are floats (higher is
better); the trainer prefixes them with the plugin name (``shapeedit.score``) and weights them from the config.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch


class Reward(Protocol):
    name: str
    dimensions: tuple[str, ...]

    def __call__(self, edited_images: np.ndarray, cases: Sequence) -> dict[str, torch.Tensor]:
        ...


def source_image(case) -> np.ndarray:
    """The unedited image of a case (rendered for ShapeEdit cases)."""
    if hasattr(case, "source_image"):
        return np.asarray(case.source_image, np.uint8)
    from cogniedit.shapes.render import render_scene

    return render_scene(case.source, case.world)


def check_batch(edited_images, cases) -> np.ndarray:
    images = np.asarray(edited_images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"rewards take uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    if len(cases) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(cases)} cases")
    return images
