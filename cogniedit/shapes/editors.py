"""The editor protocol of the ShapeEdit evaluation, and two reference editors that need no model.

An editor is any object with ``edit(images: uint8 [B, H, W, 3], instructions: list[str], seed: int) ->
uint8 [B, H, W, 3]``. ``IdentityEditor`` returns its input (the floor: ~0 % success, perfect preservation);
``OracleEditor`` returns the exact target render (the ceiling: 100 % success).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from .render import render_scene


class Editor(Protocol):
    def edit(self, images: np.ndarray, instructions: list[str], seed: int) -> np.ndarray: ...


class IdentityEditor:
    def edit(self, images, instructions, seed: int = 0):
        return np.array(images, np.uint8, copy=True)


class OracleEditor:
    """Looks each (source image, instruction) pair up among ``cases`` and returns that case's target render."""

    def __init__(self, cases):
        self._targets = {}
        for case in cases:
            key = self._key(render_scene(case.source, case.world), case.instruction)
            self._targets[key] = render_scene(case.target, case.world)

    @staticmethod
    def _key(image, instruction):
        return hashlib.sha1(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest(), instruction

    def edit(self, images, instructions, seed: int = 0):
        out = []
        for image, instruction in zip(images, instructions):
            key = self._key(image, instruction)
            if key not in self._targets:
                raise KeyError(f"OracleEditor: no case with this source image and instruction {instruction!r}")
            out.append(self._targets[key])
        return np.stack(out)
