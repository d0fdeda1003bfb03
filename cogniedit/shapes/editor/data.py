"""Training pairs for the editor from the ShapeEdit world: (source render, target render, instruction)."""

from __future__ import annotations

from typing import Callable

import numpy as np

PairFn = Callable[[int, int], tuple[np.ndarray, np.ndarray, list[str]]]


def world_pairs(n: int, seed: int, kinds=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` generated edit cases rendered: ``(sources [n,48,48,3], targets [n,48,48,3], instructions)``."""
    from ..cases import generate_cases
    from ..render import render_scene

    cases = generate_cases(n, seed, kinds=kinds)
    sources = np.stack([render_scene(c.source) for c in cases])
    targets = np.stack([render_scene(c.target) for c in cases])
    return sources, targets, [c.instruction for c in cases]


def world_instructions(n: int = 4000, seed: int = 10_000) -> list[str]:
    """Instructions of ``n`` generated cases (for the text vocabulary), plus the world's own words."""
    from ..cases import generate_cases

    texts = [c.instruction for c in generate_cases(n, seed)]
    # every colour/shape/cell/number word, also the ones a sample might miss (with and without a leading space)
    from ..cases import DIRECTIONS, NUMBER_WORDS
    from ..palette import COLOUR_NAMES, SHAPES
    from ..refer import POSITION_WORDS, cell_name

    words = [*COLOUR_NAMES, *SHAPES, *(s + "s" for s in SHAPES), *NUMBER_WORDS.values(), *DIRECTIONS,
             *POSITION_WORDS, *(cell_name((r, c)) for r in range(3) for c in range(3))]
    return texts + words + [" " + w for w in words]
