"""Training data for real editors: a JSONL file of edit records on the user's own images.

One JSON object per line::

    {"image": "photos/cups.png", "instruction": "make the left cup red", "mask": "masks/cups.png", "id": "cups"}

``image`` (required) and ``mask`` (optional: white = where the edit may change pixels; the preservation reward
compares the rest) are paths relative to the JSONL file's folder. ``id`` defaults to the line number.

Sizes: with buckets (``data.buckets``, default) each image goes to the size of about ``data.resolution`` squared
pixels whose aspect ratio (1:2 to 2:1, both sides multiples of 16) is nearest its own, centre-cropped only by the
rounding; a batch is drawn from one bucket, so its latent grids agree. Without buckets every image is
centre-cropped to a square of ``data.resolution``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class RecordError(ValueError):
    """The records file or one of its images is unusable; the message names the line and the fix."""


@dataclass(frozen=True)
class ImageRecord:
    case_id: str
    instruction: str
    source_image: np.ndarray          # uint8 [H, W, 3], H x W its bucket's size
    edit_mask: np.ndarray | None      # bool [H, W], True where the edit may change pixels
    image_path: str

    def to_dict(self) -> dict:
        """What a reward server receives as ``case`` (the pixels travel separately)."""
        return {"id": self.case_id, "instruction": self.instruction, "image": self.image_path,
                "has_mask": self.edit_mask is not None}


def bucket_sizes(resolution: int, multiple: int, max_aspect: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of ``multiple``, of about ``resolution**2`` pixels, aspect within
    ``1/max_aspect .. max_aspect``; the square is always one of them."""
    area, sizes = resolution * resolution, {(resolution, resolution)}
    for height in range(multiple, 2 * resolution + 1, multiple):
        width = max(multiple, round(area / height / multiple) * multiple)
        if 1 / max_aspect <= width / height <= max_aspect:
            sizes.update({(width, height), (height, width)})  # portrait and landscape alike
    return sorted(sizes)


def nearest_bucket(width: int, height: int, sizes) -> tuple[int, int]:
    """The size whose aspect ratio is nearest (in log ratio) to ``width / height``."""
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - math.log(width / height)), -s[0] * s[1]))


def fit_to(image, size: tuple[int, int], resample):
    """Centre crop to the aspect ratio of ``size`` (width, height), then resize to it (PIL in, PIL out)."""
    w, h = image.size
    target = size[0] / size[1]
    cw, ch = (round(h * target), h) if w / h > target else (w, round(w / target))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch)).resize(size, resample)


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


def read_records(path, resolution: int, multiple: int = 16, buckets: bool = True) -> list[ImageRecord]:
    """All records of a JSONL file, images loaded and resized (to their aspect bucket, or to a square);
    ``multiple``: what the sides must divide by."""
    from PIL import Image

    path = Path(path)
    if resolution <= 0 or resolution % multiple:
        raise RecordError(f"data.resolution={resolution} must be a positive multiple of {multiple} "
                          f"(VAE downsampling x 2x2 patches)")
    if not path.is_file():
        raise RecordError(f"data.records: {path} not found; point it at a JSONL file of image edit records")
    sizes = bucket_sizes(resolution, multiple) if buckets else [(resolution, resolution)]
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
        image = _open(path.parent / row["image"], where).convert("RGB")
        size = nearest_bucket(*image.size, sizes)
        image = fit_to(image, size, Image.LANCZOS)
        mask = None
        if row.get("mask"):
            grey = fit_to(_open(path.parent / row["mask"], where).convert("L"), size, Image.NEAREST)
            mask = np.asarray(grey) > 127
        records.append(ImageRecord(case_id, row["instruction"].strip(), np.asarray(image, np.uint8), mask,
                                   row["image"]))
    if not records:
        raise RecordError(f"data.records: {path} holds no records")
    return records


def group_by_size(records) -> dict[tuple[int, int], list[int]]:
    """Record indices per image size (height, width), sizes in sorted order (a batch is drawn from one)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(tuple(record.source_image.shape[:2]), []).append(i)
    return dict(sorted(groups.items()))


def sheet_tile(records, minimum: int = 96) -> int:
    """Tile size of a sample sheet of these records: their tallest image, at least ``minimum`` pixels."""
    return max(minimum, max(r.source_image.shape[0] for r in records))
