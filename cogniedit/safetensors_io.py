"""Atomic safetensors writes, shared by every weights file CogniEdit produces (editor, LoRA, focus)."""

from __future__ import annotations

from pathlib import Path

from .atomic_io import atomic_save


def save_safetensors_atomic(path, tensors: dict, metadata: dict) -> Path:
    """Write ``tensors`` with string ``metadata`` atomically and readable by all (``cogniedit.atomic_io``), so a
    crash never leaves half a file and a ComfyUI running as another user can load it."""
    from safetensors.torch import save_file

    return atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
