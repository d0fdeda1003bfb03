"""Per-phrase attention maps: where the image tokens attend to each focus phrase, over the image, with and without
focus, averaged over chosen blocks and sampling steps; and a sheet that shows them.

For an image query token i and a phrase with text tokens F (weights ``w_j``), the map value is
``sum_{j in F} w_j p_ij`` (mean over heads): the share of that token's attention that goes to the phrase. "Without
focus" is the same call's attention without the focus bias (same queries and keys), "with focus" the attention the
model really used; so the pair shows what the bias does where, and "without" at strength 0 is the base model's.

The recorder is fed by an attention adapter (``diffusers_adapter.FocusAttnProcessor``, ``state.maps``); nothing here
knows a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .bias import FocusSchedule, block_active, parse_blocks


def phrase_weights(spans_per_sample, text_len: int) -> tuple[torch.Tensor, list[list[str]]]:
    """``[B, P, text_len]`` (1 on each phrase's tokens) and the phrase names per sample, from ``FocusSpans``
    (``spans.phrase_spans``); P is the most phrases any sample has (missing rows are zero, names absent). Every
    occurrence of a phrase counts toward its one map."""
    names = [list(dict.fromkeys(s.phrase for s in spans.spans)) for spans in spans_per_sample]
    weights = torch.zeros(len(names), max([len(n) for n in names] + [1]), text_len)
    for b, spans in enumerate(spans_per_sample):
        for span in spans.spans:
            weights[b, names[b].index(span.phrase), span.start:min(span.end, text_len)] = 1.0
    return weights, names


@dataclass
class PhraseMaps:
    """Mean maps ``[B, P, rows, cols]`` without (``base``) and with (``focused``) focus over ``calls`` attention calls
    (``blocks`` x ``steps`` seen)."""

    phrases: list[list[str]]
    base: torch.Tensor
    focused: torch.Tensor
    calls: int
    blocks: list[int]
    steps: list[int]

    def mass(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over the image of each map ``[B, P]``: (without, with) focus."""
        return self.base.mean(dim=(2, 3)), self.focused.mean(dim=(2, 3))


@dataclass
class AttentionMapRecorder:
    """Collects per-phrase maps from the attention calls of the chosen ``blocks`` (``bias.block_active`` spec) while
    sampling progress is in ``steps`` (a ``FocusSchedule``: ``FocusSchedule(0, 0.3)`` = the first 30 % of steps).

    ``weights``/``phrases``: from ``phrase_weights``; ``grid``: the noisy image's token grid (rows, cols)."""

    weights: torch.Tensor
    phrases: list[list[str]]
    grid: tuple[int, int]
    blocks: str | list = "all"
    steps: FocusSchedule = field(default_factory=FocusSchedule)
    _sums: list = field(default_factory=lambda: [None, None])
    _calls: int = 0
    _seen: dict = field(default_factory=lambda: {"blocks": set(), "steps": set()})

    def __post_init__(self):
        self.blocks = parse_blocks(self.blocks) if isinstance(self.blocks, str) else self.blocks

    def wants(self, block_index: int, total_blocks: int | None, sigma, sample_sigmas) -> bool:
        in_blocks = block_active(block_index, self.blocks, "double", total_blocks)
        return in_blocks and self.steps.active(sigma, sample_sigmas)

    def add(self, block_index: int, step: int | None, base_rows: torch.Tensor, focused_rows: torch.Tensor) -> None:
        """One call's ``[B, P, rows * cols]`` masses of the noisy-image query rows (``bias.row_attention_mass``)."""
        rows, cols = self.grid
        if base_rows.shape[-1] != rows * cols:
            raise ValueError(f"attention maps: {base_rows.shape[-1]} image query rows do not fill the {rows}x{cols} "
                             "token grid; pass the noisy image's token grid")
        for i, rows_mass in enumerate((base_rows, focused_rows)):
            value = rows_mass.detach().float().cpu().reshape(*rows_mass.shape[:2], rows, cols)
            self._sums[i] = value if self._sums[i] is None else self._sums[i] + value
        self._calls += 1
        self._seen["blocks"].add(int(block_index))
        if step is not None:
            self._seen["steps"].add(int(step))

    def result(self) -> PhraseMaps:
        if not self._calls:
            raise ValueError("attention maps: no attention call matched the chosen blocks and steps")
        base, focused = (s / self._calls for s in self._sums)
        return PhraseMaps(self.phrases, base, focused, self._calls, sorted(self._seen["blocks"]),
                          sorted(self._seen["steps"]))


# ------------------------------------------------------------------------------------------------ rendering
# a dark-to-bright ramp (black, purple, orange, yellow): readable on screen and in grey print
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def heat(values: np.ndarray, vmax: float) -> np.ndarray:
    """uint8 ``[..., 3]`` colours of ``values / vmax`` on the ramp (0 = black, vmax = pale yellow)."""
    t = np.clip(np.asarray(values, np.float64) / max(vmax, 1e-12), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(t).astype(int).clip(max=len(_RAMP) - 2)
    frac = (t - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.NEAREST))


def render_phrase_maps(maps: PhraseMaps, images: Sequence[np.ndarray] | None = None, tile: int = 96,
                       overlay: float = 0.35) -> np.ndarray:
    """uint8 ``[H, W, 3]`` sheet: one row per (sample, phrase): the source image (when given), the map without
    focus and the map with focus, both on one colour scale (that row's largest value), so brighter = more attention;
    ``overlay`` blends the source under the maps. Labels: the phrase and each map's mean attention share."""
    from PIL import Image, ImageDraw

    base, focused = maps.base.numpy(), maps.focused.numpy()
    label_h = 14
    rows = []
    for b, names in enumerate(maps.phrases):
        source = None if images is None else _tile(np.asarray(images[b], np.uint8), tile)
        for p, name in enumerate(names):
            vmax = float(max(base[b, p].max(), focused[b, p].max()))
            cells = [] if source is None else [(source, name)]
            for label, values in (("without", base[b, p]), ("with focus", focused[b, p])):
                cell = _tile(heat(values, vmax), tile).astype(np.float64)
                if source is not None:
                    cell = (1 - overlay) * cell + overlay * source
                cells.append((cell.round().astype(np.uint8), f"{label} {values.mean():.3f}"))
            row = []
            for cell, text in cells:
                canvas = Image.new("RGB", (tile, tile + label_h), (255, 255, 255))
                canvas.paste(Image.fromarray(cell), (0, label_h))
                ImageDraw.Draw(canvas).text((2, 1), text[: tile // 6], fill=(0, 0, 0))
                row.append(np.asarray(canvas))
            rows.append(np.concatenate(row, axis=1))
    if not rows:
        raise ValueError("attention maps: no phrase to draw")
    return np.concatenate(rows, axis=0)


__all__ = ["AttentionMapRecorder", "PhraseMaps", "phrase_weights", "render_phrase_maps", "heat"]
