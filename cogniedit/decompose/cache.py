"""Decomposition cache: the same image, instruction, backend and settings give the same answer,
and a model call costs seconds, so results are kept in memory (LRU) and optionally on disk.

Keys hash the uint8 pixels together with the shape (two images with the same bytes but different
shapes must not collide). Disk entries are one JSON file per key, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..atomic_io import atomic_write
from .types import DIRECTIVES_VERSION, Decomposition


def image_hash(image: np.ndarray | None) -> str:
    if image is None:
        return "no-image"
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def folder_fingerprint(folder) -> list:
    """Names, sizes and mtimes of a model folder's files: a retrained folder gets new cache keys."""
    folder = Path(folder)
    return [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in sorted(folder.iterdir()) if f.is_file()]


def cache_key(image: np.ndarray | None, instruction: str, backend_identity: dict, settings_identity: dict) -> str:
    payload = json.dumps(
        {"v": DIRECTIVES_VERSION, "image": image_hash(image), "instruction": instruction,
         "backend": backend_identity, "settings": settings_identity},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class DecompositionCache:
    """In-memory LRU of `max_entries`, backed by `directory` (JSON files) when one is given."""

    def __init__(self, max_entries: int = 256, directory: str | os.PathLike | None = None):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.directory = Path(directory) if directory is not None else None
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> Decomposition | None:
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
        if data is None:
            data = self._read_disk(key)
            if data is not None:
                self._remember(key, data)
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        return Decomposition.from_dict(data)  # a fresh object each time: callers may mutate it

    def put(self, key: str, result: Decomposition) -> None:
        data = result.to_dict()
        self._remember(key, data)
        if self.directory is not None:
            self._write_disk(key, data)

    def __len__(self) -> int:
        return len(self._memory)

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()

    def _remember(self, key: str, data: dict) -> None:
        with self._lock:
            self._memory[key] = data
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _read_disk(self, key: str) -> dict | None:
        if self.directory is None:
            return None
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            Decomposition.from_dict(data)  # validate: a damaged or foreign file is a miss, not an error
            return data
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_disk(self, key: str, data: dict) -> None:
        atomic_write(self._path(key), lambda handle: json.dump(data, handle, ensure_ascii=False, sort_keys=True))
