"""Atomic safetensors writes, shared by every weights file CogniEdit produces (editor, LoRA, focus)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def save_safetensors_atomic(path, tensors: dict, metadata: dict) -> Path:
    """Write ``tensors`` with string ``metadata`` to a temp file beside ``path``, then ``os.replace`` it in.

    A crash leaves either the old file or the new one, never half a file. The file is made world-readable
    (mkstemp creates 0600), so a ComfyUI running as another user can load it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
