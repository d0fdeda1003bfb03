"""Atomic file writes for the ShapeEdit files (case JSONL, grids, results): temp file + os.replace."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path, write, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, then move it over ``path`` (no half-written files)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
