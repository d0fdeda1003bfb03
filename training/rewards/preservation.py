"""Preservation: SSIM and PSNR of the edited image against the source, outside what the edit may change.

ShapeEdit cases: outside the grid cells the edit touches (the scorer's ``preservation``). Image records
(training.image_records): outside the record's mask (white = may change); without a mask, over the whole image, so
the reward then favours small edits: give masks, or keep its weight low.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cogniedit.shapes.metrics import similarity_outside_edit
from cogniedit.shapes.scorer import PSNR_CAP, preservation

from .base import check_batch


def record_preservation(edited: np.ndarray, record) -> tuple[float, float]:
    """(PSNR, SSIM) outside ``record.edit_mask``, measured as the ShapeEdit scorer measures outside its cells."""
    source = np.asarray(record.source_image, np.uint8)
    if edited.shape != source.shape:
        raise ValueError(f"edited image {edited.shape} vs source {source.shape}: edit at the record's own size")
    keep = None if record.edit_mask is None else ~np.asarray(record.edit_mask, bool)
    return similarity_outside_edit(edited, source, keep)


class PreservationReward:
    """Dimensions ``ssim`` and ``psnr`` (scaled to [0, 1] as ``min(psnr, cap) / cap``, cap = the scorer's PSNR_CAP);
    a case whose edit may touch every pixel (nothing to compare) scores 1."""

    name = "preservation"
    dimensions = ("ssim", "psnr")

    def __call__(self, edited_images, cases):
        images = check_batch(edited_images, cases)
        rows = []
        for img, case in zip(images, cases):
            p, s = record_preservation(img, case) if hasattr(case, "source_image") else preservation(img, case)
            rows.append((1.0 if math.isnan(s) else s, 1.0 if math.isnan(p) else min(p, PSNR_CAP) / PSNR_CAP))
        values = torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)
        return {"ssim": values[:, 0], "psnr": values[:, 1]}
