"""Exact ShapeEdit rewards from cogniedit.shapes.scorer (no model, no network)."""

from __future__ import annotations

import numpy as np
import torch

from cogniedit.shapes.scorer import reward, score_edit

from .base import check_batch


class ShapeEditReward:
    """Dimensions: ``score`` (the scorer's graded reward in [0, 1]), ``success`` (0/1 exact edit), ``attributes``
    (fraction of the requested colour/position/count changes that are right: the dense-ish part), ``preserved``
    (0/1 nothing unrequested changed)."""

    name = "shapeedit"
    dimensions = ("score", "success", "attributes", "preserved")

    def __call__(self, edited_images, cases):
        images = check_batch(edited_images, cases)
        rows = []
        for img, case in zip(images, cases):
            s = score_edit(img, case)
            checks = [v for v in (s.colour_ok, s.position_ok, s.count_ok) if v is not None]
            rows.append((reward(s), float(s.success), float(np.mean(checks)) if checks else float(s.success),
                         float(s.preserved)))
        values = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
        return {d: values[:, i] for i, d in enumerate(self.dimensions)}
