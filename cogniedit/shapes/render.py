"""Deterministic, alias-free rendering of ShapeEdit scenes (hard pixel-centre tests, so the scorer is exact)."""

from __future__ import annotations

import numpy as np

from .scene import DEFAULT_WORLD, Scene, WorldConfig


def inside(shape: str, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Whether points (u = x, v = y, in pixels from the top-left of the object's box) lie in ``shape``."""
    if shape == "square":
        return (u >= 0) & (u < size) & (v >= 0) & (v < size)
    if shape == "circle":
        r = size / 2
        return (u - r) ** 2 + (v - r) ** 2 <= r * r
    if shape == "triangle":  # apex up, base along the bottom edge
        return (v >= 0) & (v < size) & (np.abs(u - size / 2) <= v / 2)
    raise ValueError(f"unknown shape {shape!r}; known: circle, square, triangle")


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask; a pixel is inside when its centre is (no anti-aliasing, so the scorer
    can be exact). Fill ratios: square 1, circle ~0.78, triangle 0.5."""
    c = np.arange(size) + 0.5
    v, u = np.meshgrid(c, c, indexing="ij")
    return inside(shape, u, v, size)


def render_scene(scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> np.ndarray:
    """``uint8 [H, W, 3]`` image of ``scene``; each object centred in its cell."""
    size = world.image_size
    img = np.empty((size, size, 3), np.uint8)
    img[:] = world.background
    colours = world.colour_map
    for obj in scene.objects:
        if obj.colour not in colours:
            raise ValueError(f"unknown colour {obj.colour!r}; known: {', '.join(colours)}")
        s = obj.size
        top = obj.row * world.cell + (world.cell - s) // 2
        left = obj.col * world.cell + (world.cell - s) // 2
        img[top:top + s, left:left + s][shape_mask(obj.shape, s)] = colours[obj.colour]
    return img


def render_scene_tensor(scene: Scene, world: WorldConfig = DEFAULT_WORLD):
    """ComfyUI IMAGE: ``torch.float32 [1, H, W, 3]`` in 0..1."""
    import torch

    return torch.from_numpy(render_scene(scene, world).astype(np.float32) / 255.0)[None]
