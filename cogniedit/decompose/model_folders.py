"""Which model folders transformers_vlm may read: only folders inside the allowed roots.

A workflow names a folder; it must not be able to make the pack read files elsewhere on the server
(`../../..`, `/etc`, a home folder). The roots are ComfyUI's LLM model folders plus what the user
allows in their configuration. Symlinks are resolved before the check, and every file inside the chosen
folder must also resolve inside a root, so a link cannot pull outside weights in either. A root that is
itself a link (models/LLM -> /data/llm) is the user's choice and is honoured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

MAX_FOLDER_ENTRIES = 10_000


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _real_roots(roots: Iterable) -> list[Path]:
    return [Path(os.path.realpath(root)) for root in roots if str(root).strip()]


def _check_contents(folder: Path, roots: list[Path]) -> None:
    seen = 0
    for current, dirs, files in os.walk(folder):  # links are not followed, but each one is checked
        for entry in dirs + files:
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise ValueError(f"model folder {folder} holds more than {MAX_FOLDER_ENTRIES:,} files; "
                                 "point at the model's own folder")
            target = Path(os.path.realpath(os.path.join(current, entry)))
            if not any(_inside(target, root) for root in roots):
                raise ValueError(f"model folder {folder}: {os.path.join(current, entry)} links to {target}, outside "
                                 "the allowed model folders; copy the file in, or allow its folder in the CogniEdit "
                                 "configuration (\"model_folders\", docs/security.md)")


def resolve_model_folder(name: str, roots: Iterable) -> Path:
    """The real path of model folder `name` (a name or relative path under a root, or an absolute path
    inside one), searched in the order of `roots`. ValueError, naming the fix, for anything else."""
    roots = list(roots)
    real_roots = _real_roots(roots)
    shown = ", ".join(str(root) for root in roots) or "none"
    if not isinstance(name, str) or not name.strip():
        raise ValueError("transformers_vlm needs 'model': the name of a model folder in models/LLM")
    if not real_roots:
        raise ValueError("no model folders are allowed for transformers_vlm; put models in models/LLM")
    name = name.strip()
    candidates = [Path(name)] if os.path.isabs(name) else [Path(root) / name for root in roots]
    outside = None
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if not any(_inside(real, root) for root in real_roots):
            outside = outside or real
            continue
        if real.is_dir():
            _check_contents(real, real_roots)
            return real
    if outside is not None:
        raise ValueError(f"model folder {name!r} resolves to {outside}, outside the allowed model folders ({shown}); "
                         "move it into models/LLM, or allow its folder in the CogniEdit configuration "
                         "(\"model_folders\", docs/security.md)")
    raise ValueError(f"no model folder {name!r} in the allowed model folders ({shown}); put the model's folder "
                     "(with its config.json) in models/LLM and give its name")


def check_model_folder(folder: str | os.PathLike, roots: Iterable) -> None:
    """Re-check just before loading: the folder and everything in it still lies inside the roots."""
    real_roots = _real_roots(roots)
    real = Path(os.path.realpath(folder))
    if not any(_inside(real, root) for root in real_roots):
        raise ValueError(f"model folder {folder} is outside the allowed model folders")
    _check_contents(real, real_roots)
