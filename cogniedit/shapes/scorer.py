"""Exact ShapeEdit scorer: read a (possibly imperfect) edited image back into a Scene and check the edit.

``parse_image``: foreground = pixels far (in Lab) from the background; objects = connected components above a
minimum area, grouped by the grid cell of their centroid; colour = nearest palette entry to the median Lab of
the component's core pixels; shape = the world shape whose outline, centred on the component's centroid,
overlaps its half-maximum mask best (IoU); a rendered shape matches its own outline exactly.

``score_edit`` compares at the attribute level (cell, shape, colour; size is ignored), so any pixel-level
drawing that lands on the right attributes passes. Added objects may sit in any cell that is free after the
other operations. Preservation is measured in pixels outside the cells the edit may change.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from .cases import EditCase, apply_fixed_ops
from .metrics import similarity_outside_edit
from .palette import srgb_to_lab
from .render import inside, render_scene, shape_mask
from .scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig

PSNR_CAP = 100.0  # aggregate means count an exact match (inf dB) as this


def parse_image(img: np.ndarray, world: WorldConfig = DEFAULT_WORLD, bg_threshold: float = 25.0,
                min_area_frac: float = 0.15) -> Scene:
    """The scene an image shows. ``bg_threshold``: Lab distance from the background above which a pixel is
    foreground; ``min_area_frac``: components smaller than this fraction of an object's box are specks."""
    from scipy import ndimage

    img = _as_uint8(img, world)
    lab = srgb_to_lab(img)
    bg_dist = np.linalg.norm(lab - srgb_to_lab(np.array(world.background, np.uint8)), axis=-1)
    labels, n = ndimage.label(bg_dist > bg_threshold)
    if n == 0:
        return Scene(())
    index = np.arange(1, n + 1)
    ones = np.ones_like(bg_dist)
    areas = ndimage.sum_labels(ones, labels, index)
    centroids = ndimage.center_of_mass(ones, labels, index)
    min_area = min_area_frac * world.object_size ** 2
    by_cell: dict[tuple[int, int], list[int]] = {}
    for lab_id, area, (cy, cx) in zip(index, areas, centroids):
        if area < min_area:
            continue
        cell = (min(int(cy // world.cell), world.grid - 1), min(int(cx // world.cell), world.grid - 1))
        by_cell.setdefault(cell, []).append(int(lab_id))
    palette = srgb_to_lab(np.array([rgb for _, rgb in world.colours], np.uint8))
    objs = []
    for (row, col), ids in by_cell.items():
        pixels = np.isin(labels, ids)  # one object per cell: fragments of a broken-up object are merged
        d = bg_dist[pixels]
        core = d >= np.percentile(d, 50)  # blurred rims carry mixed colours; the core carries the colour
        median = np.median(lab[pixels][core], axis=0)
        colour = world.colour_names[int(np.argmin(np.linalg.norm(palette - median, axis=-1)))]
        # half-maximum mask: a symmetric blur moves edges inward and outward equally, so the outline survives
        body = pixels & (bg_dist >= 0.5 * np.median(d[core]))
        shape, size = _classify_shape(body, world)
        objs.append(ShapeObject(row, col, shape, colour, size))
    return Scene(tuple(objs))


def _as_uint8(img, world: WorldConfig) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[:2] != (world.image_size, world.image_size):
        raise ValueError(f"expected an image [{world.image_size}, {world.image_size}, 3] (uint8, or float in 0..1), "
                         f"got {img.dtype} {tuple(img.shape)}")
    if img.dtype == np.uint8:
        return img
    scale = 255.0 if np.issubdtype(img.dtype, np.floating) and img.max(initial=0) <= 1.0 else 1.0
    return np.clip(np.asarray(img, np.float64) * scale, 0, 255).round().astype(np.uint8)


def _classify_shape(body: np.ndarray, world: WorldConfig) -> tuple[str, int]:
    """The world shape whose outline, placed with the same centroid, overlaps ``body`` best (IoU), and the
    size of ``body``'s bounding box. A rendered shape overlaps its own template exactly (IoU 1)."""
    ys, xs = np.nonzero(body)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5  # centroid in continuous pixel coordinates
    grid_v, grid_u = np.mgrid[0:body.shape[0], 0:body.shape[1]] + 0.5
    best, best_iou = world.shapes[0], -1.0
    area = float(body.sum())
    for shape in world.shapes:
        tcy, tcx, fill = _template_stats(shape, world.object_size)
        # scale the outline to the body's area, so an editor drawing a bit larger or smaller still matches
        scale = np.sqrt(area / (fill * world.object_size ** 2))
        if abs(scale - 1) < 0.02:
            scale = 1.0
        oy, ox = cy - tcy * scale, cx - tcx * scale
        # snap to whole pixels when close: rendered objects sit on integer offsets
        oy, ox = (round(oy) if abs(oy - round(oy)) < 0.25 else oy), (round(ox) if abs(ox - round(ox)) < 0.25 else ox)
        template = inside(shape, grid_u - ox, grid_v - oy, world.object_size * scale)
        iou = (template & body).sum() / float((template | body).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    size = int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    return best, size


def _template_stats(shape: str, size: int) -> tuple[float, float, float]:
    """Centroid (y, x) of the rendered outline in its box, and its fill ratio."""
    mask = shape_mask(shape, size)
    ys, xs = np.nonzero(mask)
    return ys.mean() + 0.5, xs.mean() + 0.5, float(mask.mean())


def _attrs(obj: ShapeObject | None):
    return None if obj is None else (obj.shape, obj.colour)


@dataclass(frozen=True)
class EditScore:
    """Per-case result. ``*_ok`` is None when the instruction requests no change of that kind."""

    case_id: str
    kind: str
    success: bool          # every requested change right AND nothing else changed (attribute level)
    colour_ok: bool | None
    position_ok: bool | None
    count_ok: bool | None
    preserved: bool        # the objects the edit must not change are unchanged, and nothing unrequested appeared
    psnr: float            # dB, pixels outside the touched cells vs the source (inf: identical; nan: no such pixel)
    ssim: float
    parsed: str            # the scene read from the edited image, JSON

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("psnr", "ssim"):
            d[k] = None if math.isnan(d[k]) else ("inf" if math.isinf(d[k]) else d[k])
        return d


def untouched_mask(touched, world: WorldConfig = DEFAULT_WORLD) -> np.ndarray:
    """``[H, W]`` bool: pixels outside the touched cells."""
    mask = np.ones((world.image_size, world.image_size), bool)
    for r, c in touched:
        mask[r * world.cell:(r + 1) * world.cell, c * world.cell:(c + 1) * world.cell] = False
    return mask


def preservation(edited: np.ndarray, case: EditCase) -> tuple[float, float]:
    """(PSNR, SSIM) of ``edited`` vs the source render outside the touched cells. Touched cells are pasted from
    the source first, so what the edit may change there does not leak into SSIM windows at their borders."""
    world = case.world
    return similarity_outside_edit(_as_uint8(edited, world), render_scene(case.source, world),
                                   untouched_mask(case.touched, world))


def score_edit(edited_img: np.ndarray, case: EditCase, **parse_options) -> EditScore:
    """Judge one edited image against ``case`` (see the module docstring and docs/shapeedit.md)."""
    world = case.world
    got = {o.cell: o for o in parse_image(edited_img, world, **parse_options).objects}
    fixed = apply_fixed_ops(case.source, case.ops, world)
    expected = {o.cell: o for o in fixed.objects}
    additions = Counter()
    for op in case.ops:
        if op.kind == "add":
            additions[(op.shape, op.colour)] += op.count
    free_for_adds = set(fixed.free_cells(world)) if additions else set()
    extras = Counter(_attrs(o) for cell, o in got.items() if cell not in expected)
    extras_in_bad_cells = any(cell not in expected and cell not in free_for_adds for cell in got)
    # whole-scene exact match at attribute level, the added objects in any free cells
    success = (all(_attrs(got.get(cell)) == _attrs(o) for cell, o in expected.items())
               and extras == additions and not extras_in_bad_cells)

    def count_of(attrs):
        return sum(1 for o in got.values() if _attrs(o) == attrs)

    def is_added(cell):  # an object in a freed cell may be one of the requested additions
        o = got.get(cell)
        return o is not None and cell in free_for_adds and additions[_attrs(o)] > 0

    expected_counts = Counter(_attrs(o) for o in expected.values()) + additions
    colour, position, count = [], [], []
    op_cells = set()
    for op in case.ops:
        if op.kind == "recolour":
            op_cells.add(op.cell)
            colour.append(_attrs(got.get(op.cell)) == _attrs(expected[op.cell]))
        elif op.kind == "move":
            op_cells.update((op.cell, op.to_cell))
            position.append(_attrs(got.get(op.to_cell)) == _attrs(expected[op.to_cell])
                            and (got.get(op.cell) is None or is_added(op.cell)))
        elif op.kind == "remove":
            op_cells.add(op.cell)
            gone = _attrs(case.source.at(op.cell))
            count.append((got.get(op.cell) is None or is_added(op.cell)) and count_of(gone) == expected_counts[gone])
        elif op.kind == "add":
            attrs = (op.shape, op.colour)
            overwrote = any(_attrs(o) == attrs and cell in expected and _attrs(expected[cell]) != attrs
                            for cell, o in got.items())  # drawn over an object that had to stay
            count.append(count_of(attrs) == expected_counts[attrs] and not overwrote)
    # unrequested changes: an object outside the op cells differs, or something appeared that was not asked for
    # (a leftover in a move's or remove's own cell is a failed request, counted there, not an unrequested change)
    keep_same = all(_attrs(got.get(cell)) == _attrs(o) for cell, o in expected.items() if cell not in op_cells)
    outside = {cell: o for cell, o in got.items() if cell not in expected and cell not in op_cells}
    surplus = Counter(_attrs(o) for o in outside.values()) - additions
    preserved = keep_same and not surplus and all(cell in free_for_adds for cell in outside)
    p, s = preservation(edited_img, case)
    return EditScore(case.case_id, case.kind, bool(success), all(colour) if colour else None,
                     all(position) if position else None, all(count) if count else None, bool(preserved), p, s,
                     Scene(tuple(got.values())).to_json())


REWARD_WEIGHTS = {"success": 0.4, "requested": 0.3, "preserved": 0.2, "ssim": 0.1}


def reward(score: EditScore, weights: dict | None = None) -> float:
    """A graded scalar in [0, 1] for RL (1 exactly when the edit is fully right and nothing else moved):
    weighted sum of ``success``, the fraction of requested kinds that are right, ``preserved``, and SSIM outside
    the touched cells (1 when every cell is touched). Partial credit keeps GRPO groups from being all-zero
    while an editor is weak."""
    w = {**REWARD_WEIGHTS, **(weights or {})}
    checks = [v for v in (score.colour_ok, score.position_ok, score.count_ok) if v is not None]
    requested = float(np.mean(checks)) if checks else float(score.success)
    ssim_term = 1.0 if math.isnan(score.ssim) else min(max(score.ssim, 0.0), 1.0)
    total = (w["success"] * score.success + w["requested"] * requested + w["preserved"] * score.preserved
             + w["ssim"] * ssim_term)
    return float(total / sum(w.values()))


def _summary(scores) -> dict:
    def rate(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    def mean(values):
        values = [min(v, PSNR_CAP) for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else None

    return {
        "n": len(scores),
        "success": rate([s.success for s in scores]),
        "colour_acc": rate([s.colour_ok for s in scores]),
        "position_acc": rate([s.position_ok for s in scores]),
        "count_acc": rate([s.count_ok for s in scores]),
        "preserved": rate([s.preserved for s in scores]),
        "psnr": mean([s.psnr for s in scores]),
        "ssim": mean([s.ssim for s in scores]),
        "reward": rate([reward(s) for s in scores]),
    }


def aggregate(scores) -> dict:
    """Overall and per-kind rates: success, per-attribute accuracy over the cases that request it, attribute
    preservation, mean PSNR (inf counted as PSNR_CAP dB) and SSIM outside the touched cells."""
    scores = list(scores)
    out = _summary(scores)
    out["per_kind"] = {k: _summary([s for s in scores if s.kind == k]) for k in sorted({s.kind for s in scores})}
    return out
