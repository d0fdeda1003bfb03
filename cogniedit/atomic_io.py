"""Atomic file writes (temp file beside the target + ``os.replace``): a crash leaves the old file or the new one,
never half a file. Files are made readable by all (``mkstemp`` creates 0600), so a ComfyUI or a web server running
as another user can read them. Used for case files, grids, results, decomposition caches and weights files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

READABLE = 0o644


def atomic_write(path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, then move it over ``path``."""
    def save(tmp):
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)

    atomic_save(path, save)


def atomic_save(path, save) -> Path:
    """``save(temp_path)`` writes the file by name (libraries that take a path, e.g. safetensors), then it is moved
    over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.chmod(tmp, READABLE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
