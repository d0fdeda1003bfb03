"""The example workflows' source image, put into ComfyUI's input folder when the pack loads, so their Load Image
nodes find it on first open. An existing file of that name is never replaced (it may be the user's own)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..cogniedit.atomic_io import atomic_save

EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "example_workflows" / "cogniedit_example.png"
log = logging.getLogger("cogniedit")


def install_example_image(input_dir: str | Path) -> Path | None:
    """Copy the shipped image into ``input_dir`` unless a file of its name is there; the written path, or None."""
    target = Path(input_dir) / EXAMPLE_IMAGE.name
    if target.exists():
        return None
    try:
        return atomic_save(target, lambda tmp: shutil.copyfile(EXAMPLE_IMAGE, tmp))
    except OSError as error:  # a read-only input folder must not stop the pack from loading
        log.warning("CogniEdit: could not copy the example image to %s (%s); the examples' Load Image will ask "
                    "for %s: upload it from the pack's example_workflows/ folder", target, error, EXAMPLE_IMAGE.name)
        return None
