"""Safetensors files: atomic writes for every weights file CogniEdit produces (editor, LoRA, focus), and a safe
read that turns a file which is not safetensors, cut short or damaged into one line naming the file, the problem
and the fix (safetensors' own errors say "header too large" and name no file)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from .atomic_io import atomic_save

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


class SafetensorsFileError(ValueError):
    """A file that cannot be read as safetensors; the message is one line: file, problem, fix."""


def save_safetensors_atomic(path, tensors: dict, metadata: dict) -> Path:
    """Write ``tensors`` with string ``metadata`` atomically and readable by all (``cogniedit.atomic_io``), so a
    crash never leaves half a file and a ComfyUI running as another user can load it."""
    from safetensors.torch import save_file

    return atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _fail(what: str, path: Path, problem: str) -> SafetensorsFileError:
    return SafetensorsFileError(f"{what} {path.name!r} {problem}")


def read_safetensors_metadata(path, what: str = "file") -> dict:
    """The string metadata of a safetensors file after checking its layout: header length, JSON header, and that
    the tensors' byte ranges cover the file exactly. Reads only the header. ``what`` names the file's role in the
    message ("LoRA", "focus weights")."""
    path = Path(path)
    if not path.is_file():
        raise _fail(what, path, "does not exist; put the file in its model folder and refresh the node list")
    size = path.stat().st_size
    not_safetensors = ("is not a safetensors file (its first bytes are no safetensors header: another format "
                       "renamed, e.g. a pickled .ckpt/.pt, or random data); convert it to .safetensors or download "
                       "the .safetensors version")
    cut_short = "is truncated ({} of {} bytes): the download or copy was cut short; download or copy it again"
    if size < 8:
        raise _fail(what, path, cut_short.format(size, "at least 8"))
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES or header_len < 2:
            raise _fail(what, path, not_safetensors)
        if 8 + header_len > size:
            raise _fail(what, path, cut_short.format(size, f"{8 + header_len}+"))
        raw = f.read(header_len)
    if not raw.lstrip().startswith(b"{"):
        raise _fail(what, path, not_safetensors)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
        metadata = header.get("__metadata__") or {}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError):
        raise _fail(what, path, "has a damaged header (not the JSON tensor table safetensors writes); export or "
                    "download it again") from None
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise _fail(what, path, cut_short.format(size, expected))
    if size > expected:
        raise _fail(what, path, f"has {size - expected} bytes after its tensors (damaged, or two files joined); "
                    "export or download it again")
    return {str(k): str(v) for k, v in metadata.items()}


def read_safetensors(path, what: str = "file", device: str = "cpu") -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a safetensors file, checked as ``read_safetensors_metadata``; any error
    safetensors still finds (a tensor whose size does not match its dtype and shape) is one line too."""
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    metadata = read_safetensors_metadata(path, what)
    try:
        tensors = load_file(os.fspath(path), device=device)
    except SafetensorError as exc:
        raise unreadable(what, path, exc) from None
    return tensors, metadata


def unreadable(what: str, path, exc: Exception) -> SafetensorsFileError:
    """The one-line error for a file the header check passed but the reader still refused (e.g. a tensor whose
    byte range does not match its dtype and shape); for readers that load the file themselves (ComfyUI's)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _fail(what, Path(path), f"is not a valid safetensors file ({reason}); export or download it again")
