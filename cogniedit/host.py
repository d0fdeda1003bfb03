"""Find a ComfyUI checkout to run against, in one place.

Order: the ``COMFYUI_PATH`` environment variable, then the ComfyUI root above
``custom_nodes/`` when this pack is installed there, then comfy-cli's default
workspace ``~/comfy/ComfyUI``. Only reads the file system: never imports ComfyUI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
COMFY_CLI_DEFAULT = Path("~/comfy/ComfyUI")


def is_comfyui_root(path: Path) -> bool:
    """A ComfyUI root holds ``main.py`` beside the ``comfy`` package (a namespace package: no __init__)."""
    return (path / "main.py").is_file() and (path / "comfy" / "model_management.py").is_file()


@dataclass(frozen=True)
class HostLookup:
    root: Path | None
    reason: str  # where it was found, or why nothing was


def find_comfyui(pack_dir: Path = PACK_DIR, environ: dict | None = None) -> HostLookup:
    env = os.environ if environ is None else environ
    tried = []
    explicit = env.get("COMFYUI_PATH")
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if is_comfyui_root(path):
            return HostLookup(path, f"COMFYUI_PATH={path}")
        # An explicit setting that is wrong is an error worth naming, not a silent fallback.
        return HostLookup(None, f"COMFYUI_PATH={explicit} is not a ComfyUI root (no main.py + comfy/)")
    tried.append("COMFYUI_PATH (unset)")

    parent = pack_dir.resolve().parent
    if parent.name == "custom_nodes" and is_comfyui_root(parent.parent):
        return HostLookup(parent.parent, f"installed in {parent}")
    tried.append(f"{parent} (not a custom_nodes/ folder of ComfyUI)")

    default = Path(env.get("HOME", "~")) / "comfy" / "ComfyUI" if "HOME" in env else COMFY_CLI_DEFAULT.expanduser()
    if is_comfyui_root(default):
        return HostLookup(default.resolve(), f"comfy-cli workspace {default}")
    tried.append(f"{default} (absent)")
    return HostLookup(None, "no ComfyUI found; set COMFYUI_PATH to a ComfyUI checkout. Tried: " + "; ".join(tried))
