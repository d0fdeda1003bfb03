"""The small ShapeEdit editor: a narrow Qwen-Image-Edit DiT on an exact pixel-patch latent (docs/shapeedit-editor.md)."""

from __future__ import annotations

import logging

from .config import EditorConfig
from .latent import image_to_latent, latent_to_image
from .model import ShapeEditor, new_editor
from .weights import DEFAULT_PATH, EditorWeightsError, load_editor, save_editor

log = logging.getLogger(__name__)

# Options the evaluation command may pass that this editor does not implement itself (the lead wires them).
_IGNORED_OPTIONS = ("decompose", "focus", "lora", "decomposer", "focus_weights", "lora_path")


class DefaultEditor:
    """``edit(images, instructions, seed)`` with fixed sampling settings, around a loaded ShapeEditor."""

    def __init__(self, model: ShapeEditor, steps: int = 12, shift: float = 1.0):
        self.model = model
        self.steps = steps
        self.shift = shift

    def edit(self, images, instructions, seed: int = 0, **kwargs):
        kwargs.setdefault("steps", self.steps)
        kwargs.setdefault("shift", self.shift)
        return self.model.edit(images, list(instructions), seed=seed, **kwargs)

    def __getattr__(self, name):  # expose transformer, encode_text, velocity, ... of the model
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


def load_default_editor(path=None, steps: int = 12, shift: float = 1.0, device: str = "cpu", **options):
    """The shipped editor (or ``path``). Unknown options (decompose, focus, lora, ...) are accepted and ignored
    with a logged note until they are wired."""
    for key, value in options.items():
        if value not in (None, False, 0, "", "off"):
            where = "not wired into the ShapeEdit editor yet" if key in _IGNORED_OPTIONS else "unknown"
            log.warning("load_default_editor: option %s=%r is %s; ignored", key, value, where)
    return DefaultEditor(load_editor(path, device=device), steps=int(steps), shift=float(shift))


__all__ = [
    "ShapeEditor", "EditorConfig", "DefaultEditor", "load_default_editor", "load_editor", "save_editor",
    "new_editor", "image_to_latent", "latent_to_image", "EditorWeightsError", "DEFAULT_PATH",
]
