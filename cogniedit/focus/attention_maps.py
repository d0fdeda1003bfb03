"""Per-phrase attention maps: where the image tokens attend to each focus phrase, over the image, with and without
focus, averaged over chosen blocks and sampling steps; and a sheet that shows them.

For an image query token i and a phrase with text tokens F (weights ``w_j``), the map value is
``sum_{j in F} w_j p_ij`` (mean over heads): the share of that token's attention that goes to the phrase. "Without
focus" is the same call's attention without the focus bias (same queries and keys), "with focus" the attention the
model really used; so the pair shows what the bias does where, and "without" at strength 0 is the base model's.

The recorder is fed by an attention adapter (``diffusers_adapter.FocusAttnProcessor``, ``state.maps``; ComfyUI's
attention override, ``override.make_attention_override(maps=...)``); nothing here knows a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..image_grid import save_png
from .bias import FocusSchedule, block_active, focus_weights, parse_blocks, row_attention_mass


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


def phrase_entries(found, anchor: str = "start") -> tuple[list[str], list]:
    """Per focus phrase of one prompt (``FocusSpans``; first occurrence order), its token positions as the focus core
    takes them (``bias.focus_weights`` entries), for a text whose length is known only when the model runs:
    ``anchor`` "end": negative offsets from the end of the text (Qwen-Image(-Edit), whatever precedes the prompt);
    "spans": a ``FocusSpans`` of that phrase (ComfyUI's repeated copies of a short conditioning count too);
    "start": plain positions."""
    if anchor not in ("start", "end", "spans"):
        raise ValueError(f"phrase anchor must be start, end or spans, got {anchor!r}")
    names = list(dict.fromkeys(s.phrase for s in found.spans))
    entries = []
    for name in names:
        own = type(found)([s for s in found.spans if s.phrase == name], text_len=found.text_len)
        entries.append(own.from_end() if anchor == "end" else own if anchor == "spans" else own.positions)
    return names, entries


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

    ``weights``/``phrases``: from ``phrase_weights``; ``grid``: the noisy image's token grid (rows, cols). Where the
    text length is known only at run time (ComfyUI), give ``weights=None`` and ``entries``: per sample, one
    ``phrase_entries`` entry per phrase; ``weights_for`` builds the weights for each text length."""

    weights: torch.Tensor | None
    phrases: list[list[str]]
    grid: tuple[int, int]
    blocks: str | list = "all"
    steps: FocusSchedule = field(default_factory=FocusSchedule)
    entries: list | None = None
    _sums: list = field(default_factory=lambda: [None, None])
    _calls: int = 0
    _seen: dict = field(default_factory=lambda: {"blocks": set(), "steps": set()})
    _built: dict = field(default_factory=dict)

    def __post_init__(self):
        self.blocks = parse_blocks(self.blocks) if isinstance(self.blocks, str) else self.blocks
        if self.weights is None and self.entries is None:
            raise ValueError("attention maps: give the phrase weights or their entries")

    def wants(self, block_index: int, total_blocks: int | None, sigma, sample_sigmas,
              block_type: str | None = "double") -> bool:
        in_blocks = block_active(block_index, self.blocks, block_type, total_blocks)
        return in_blocks and self.steps.active(sigma, sample_sigmas)

    def weights_for(self, text_len: int, device=None) -> torch.Tensor:
        """``[B, P, text_len]`` phrase weights for a text of ``text_len`` tokens (cached per length)."""
        if self.entries is None:
            return self.weights.to(device)
        key = (text_len, str(device))
        if key not in self._built:
            n = max([len(e) for e in self.entries] + [1])
            weights = torch.zeros(len(self.entries), n, text_len, device=device)
            for b, sample in enumerate(self.entries):
                if sample:
                    weights[b, :len(sample)] = focus_weights(sample, text_len, device=device)
            self._built[key] = weights
        return self._built[key]

    def record(self, q, k, text_len: int, image_rows: tuple[int, int], base_mask, focus_mask, block_index: int,
               sigma=None, sample_sigmas=None, scale: float | None = None, samples: Sequence[bool] | None = None):
        """Maps of one attention call: ``q``/``k`` ``[B, H, L, D]``, the noisy-image query rows ``image_rows``,
        the mask without focus and with it (None: focus off in this call, both maps equal). ``scale``: value mode
        (the attention is unchanged; the phrase's values count ``scale`` times, so its map is scaled). ``samples``:
        the batch entries to record, averaged into the recorder's one sample (ComfyUI: the cond entries)."""
        weights = self.weights_for(text_len, q.device)
        base = row_attention_mass(q, k, weights, text_len, image_rows, base_mask)
        if focus_mask is None:
            focused = base
        elif scale is not None:
            focused = base * scale
        else:
            focused = row_attention_mass(q, k, weights, text_len, image_rows, focus_mask)
        if samples is not None and base.shape[0] != weights.shape[0]:
            keep = torch.tensor(list(samples), device=base.device)
            base, focused = (m[keep].mean(0, keepdim=True) for m in (base, focused))
        progress = FocusSchedule.progress(sigma, sample_sigmas)
        step = None if progress is None or sample_sigmas is None or len(sample_sigmas) < 2 \
            else round(progress * (len(sample_sigmas) - 1))
        self.add(block_index, step, base, focused)

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
        if block_index is not None:
            self._seen["blocks"].add(int(block_index))
        if step is not None:
            self._seen["steps"].add(int(step))

    def result(self) -> PhraseMaps:
        if not self._calls:
            raise ValueError("attention maps: no attention call matched the chosen blocks and steps")
        base, focused = (s / self._calls for s in self._sums)
        return PhraseMaps(self.phrases, base, focused, self._calls, sorted(self._seen["blocks"]),
                          sorted(self._seen["steps"]))


@dataclass(frozen=True)
class ProbeSteps:
    """A short sampling run that draws the maps of steps ``[start, end)`` of a ``steps``-step schedule: it runs only
    the first ``run_steps`` steps (nothing after ``end`` is needed), so every step-fraction schedule of the full run
    is rescaled onto the shortened one (``rescale``: same steps gated as in the full run)."""

    steps: int
    start: float
    end: float

    def __post_init__(self):
        if self.steps < 1 or not (0.0 <= self.start < self.end <= 1.0):
            raise ValueError(f"attention maps: need steps >= 1 and 0 <= start < end <= 1, got steps={self.steps}, "
                             f"start={self.start}, end={self.end}; e.g. steps 10, start 0, end 0.5")
        if math.ceil(self.start * self.steps) >= self.run_steps:
            raise ValueError(f"attention maps: steps {self.start:g}-{self.end:g} of a {self.steps}-step run hold no "
                             "step; widen the range or raise steps")

    @property
    def run_steps(self) -> int:
        return max(1, math.ceil(self.end * self.steps - 1e-9))

    def rescale(self, schedule: FocusSchedule) -> FocusSchedule:
        factor = self.steps / self.run_steps
        return FocusSchedule(min(schedule.start_percent * factor, 1.0), min(schedule.end_percent * factor, 1.0))

    @property
    def maps_schedule(self) -> FocusSchedule:
        return self.rescale(FocusSchedule(self.start, self.end))


# ------------------------------------------------------------------------------------------------ rendering
# a dark-to-bright ramp (black, purple, orange, yellow): readable on screen and in grey print
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def heat(values: np.ndarray, vmax: float) -> np.ndarray:
    """uint8 ``[..., 3]`` colours of ``values / vmax`` on the ramp (0 = black, vmax = pale yellow)."""
    t = np.clip(np.asarray(values, np.float64) / max(vmax, 1e-12), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(t).astype(int).clip(max=len(_RAMP) - 2)
    frac = (t - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def _tile(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size, Image.NEAREST))


def cell_size(grid: tuple[int, int], tile: int) -> tuple[int, int]:
    """(width, height) of a map cell: the token grid's aspect inside a ``tile`` square."""
    rows, cols = grid
    scale = tile / max(rows, cols)
    return max(1, round(cols * scale)), max(1, round(rows * scale))


def _label(text: str, width: int) -> str:
    return text[: max(width // 6, 4)]


def render_phrase_maps(maps: PhraseMaps, images: Sequence[np.ndarray] | None = None, tile: int = 96,
                       overlay: float = 0.35) -> np.ndarray:
    """uint8 ``[H, W, 3]`` sheet: one row per (sample, phrase): the source image (when given; else the phrase's
    name), the map without focus and the map with focus, both on one colour scale (that row's largest value), so
    brighter = more attention; ``overlay`` blends the source under the maps. Labels: the phrase and each map's mean
    attention share. Cells keep the token grid's aspect."""
    from PIL import Image, ImageDraw

    base, focused = maps.base.numpy(), maps.focused.numpy()
    width, height = cell_size(tuple(base.shape[2:]), tile)
    label_h = 14
    rows = []
    for b, names in enumerate(maps.phrases):
        source = None if images is None else _tile(np.asarray(images[b], np.uint8)[..., :3], (width, height))
        for p, name in enumerate(names):
            vmax = float(max(base[b, p].max(), focused[b, p].max()))
            blank = np.full((height, width, 3), 255, np.uint8)
            cells = [(blank if source is None else source, name)]
            for label, values in (("without", base[b, p]), ("with focus", focused[b, p])):
                cell = _tile(heat(values, vmax), (width, height)).astype(np.float64)
                if source is not None:
                    cell = (1 - overlay) * cell + overlay * source
                cells.append((cell.round().astype(np.uint8), f"{label} {values.mean():.3f}"))
            row = []
            for cell, text in cells:
                canvas = Image.new("RGB", (width, height + label_h), (255, 255, 255))
                canvas.paste(Image.fromarray(cell), (0, label_h))
                ImageDraw.Draw(canvas).text((2, 1), _label(text, width), fill=(0, 0, 0))
                row.append(np.asarray(canvas))
            rows.append(np.concatenate(row, axis=1))
    if not rows:
        raise ValueError("attention maps: no phrase to draw")
    return np.concatenate(rows, axis=0)


def save_phrase_maps(path, maps: PhraseMaps, images: Sequence[np.ndarray] | None = None, tile: int = 96) -> None:
    """The ``render_phrase_maps`` sheet as a PNG, written atomically."""
    save_png(path, render_phrase_maps(maps, images, tile))


def message_image(text: str, width: int = 320) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a white card with ``text`` (wrapped), e.g. what to connect to get the maps."""
    import textwrap

    from PIL import Image, ImageDraw

    lines = textwrap.wrap(text, max(width // 6 - 2, 8)) or [""]
    card = Image.new("RGB", (width, 12 * len(lines) + 10), (255, 255, 255))
    draw = ImageDraw.Draw(card)
    for i, line in enumerate(lines):
        draw.text((5, 5 + 12 * i), line, fill=(0, 0, 0))
    return np.asarray(card)


__all__ = ["AttentionMapRecorder", "PhraseMaps", "ProbeSteps", "heat", "message_image", "phrase_entries",
           "phrase_weights", "render_phrase_maps", "save_phrase_maps"]
