"""Training data for real editors: a JSONL file of edit records on the user's own images.

One JSON object per line::

    {"image": "photos/cups.png", "instruction": "make the left cup red", "mask": "masks/cups.png", "id": "cups"}

``image`` (required) and ``mask`` (optional: white = where the edit may change pixels; the preservation reward
compares the rest) are paths relative to the JSONL file's folder. ``id`` defaults to the line number. Images are
centre-cropped to a square and resized to ``data.resolution`` (one size per run: every batch shares its latent grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class RecordError(ValueError):
    """The records file or one of its images is unusable; the message names the line and the fix."""


@dataclass(frozen=True)
class ImageRecord:
    case_id: str
    instruction: str
    source_image: np.ndarray          # uint8 [R, R, 3]
    edit_mask: np.ndarray | None      # bool [R, R], True where the edit may change pixels
    image_path: str

    def to_dict(self) -> dict:
        """What a reward server receives as ``case`` (the pixels travel separately)."""
        return {"id": self.case_id, "instruction": self.instruction, "image": self.image_path,
                "has_mask": self.edit_mask is not None}


def square_resize(image, resolution: int, resample):
    """Centre crop to a square, then resize to ``resolution`` (a PIL image in, a PIL image out)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((resolution, resolution), resample)


def _open(path: Path, where: str):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise RecordError(f"{where}: image {path} not found (paths are relative to the records file's folder)")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise RecordError(f"{where}: {path} is not a readable image ({exc})") from exc


def read_records(path, resolution: int, multiple: int = 16) -> list[ImageRecord]:
    """All records of a JSONL file, images loaded and resized; ``multiple``: what the resolution must divide by."""
    from PIL import Image

    path = Path(path)
    if resolution <= 0 or resolution % multiple:
        raise RecordError(f"data.resolution={resolution} must be a positive multiple of {multiple} "
                          f"(VAE downsampling x 2x2 patches)")
    if not path.is_file():
        raise RecordError(f"data.records: {path} not found; point it at a JSONL file of image edit records")
    records, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) \
                or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise RecordError(f'{where}: each line needs "image" (a path) and "instruction" (non-empty text)')
        case_id = str(row.get("id", number))
        if case_id in seen:
            raise RecordError(f"{where}: id {case_id!r} appears twice; ids name cache entries and must be unique")
        seen.add(case_id)
        image = square_resize(_open(path.parent / row["image"], where).convert("RGB"), resolution, Image.LANCZOS)
        mask = None
        if row.get("mask"):
            grey = square_resize(_open(path.parent / row["mask"], where).convert("L"), resolution, Image.NEAREST)
            mask = np.asarray(grey) > 127
        records.append(ImageRecord(case_id, row["instruction"].strip(), np.asarray(image, np.uint8), mask,
                                   row["image"]))
    if not records:
        raise RecordError(f"data.records: {path} holds no records")
    return records
