"""Referring expressions for ShapeEdit objects: the shortest unambiguous phrase, and its exact inverse.

Grammar: ``the [left|right|top|bottom] [<colour>] <shape> [in the <cell name>]``. A position word means
"the strict extreme among the objects that share the colour and shape", so "the left red circle" is
unambiguous whenever it is generated. ``resolve`` is written independently of ``describe`` so tests can check
that every generated phrase picks out exactly one object.
"""

from __future__ import annotations

import numpy as np

from .scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig

POSITION_WORDS = ("left", "right", "top", "bottom")


def cell_name(cell, world: WorldConfig = DEFAULT_WORLD) -> str:
    """'top left corner', 'centre', ... on a 3x3 grid; 'row R column C' (1-based) on other grids."""
    r, c = cell
    if world.grid == 3:
        rows, cols = ("top", "middle", "bottom"), ("left", "middle", "right")
        if (r, c) == (1, 1):
            return "centre"
        if r != 1 and c != 1:
            return f"{rows[r]} {cols[c]} corner"
        return f"{rows[r]} {cols[c]}" if r != 1 else f"middle {cols[c]}"
    return f"row {r + 1} column {c + 1}"


def _extreme(obj: ShapeObject, group, word: str) -> bool:
    others = [o for o in group if o != obj]
    key = {"left": lambda o: o.col, "right": lambda o: -o.col, "top": lambda o: o.row, "bottom": lambda o: -o.row}[word]
    return all(key(obj) < key(o) for o in others)


def describe(obj: ShapeObject, scene: Scene, rng: np.random.Generator | None = None,
             world: WorldConfig = DEFAULT_WORLD, extra=()) -> str | None:
    """A phrase naming ``obj`` unambiguously in ``scene``. With ``rng``, a shape-only reference is sometimes
    spelled with its colour too (both are unambiguous); without, the shortest form is returned.

    ``extra``: (shape, colour) pairs of objects that will ALSO be there at cells not known yet (the added
    objects of a compound edit); the phrase must stay unambiguous whatever their cells, else None."""
    if (obj.shape, obj.colour) in set(extra):
        return None
    same_shape = [o for o in scene.objects if o.shape == obj.shape]
    twins = [o for o in same_shape if o.colour == obj.colour]
    if len(same_shape) == 1 and obj.shape not in {s for s, _ in extra}:
        if rng is not None and rng.random() < 0.5:
            return f"the {obj.colour} {obj.shape}"
        return f"the {obj.shape}"
    if len(twins) == 1:
        return f"the {obj.colour} {obj.shape}"
    words = [w for w in POSITION_WORDS if _extreme(obj, twins, w)]
    if words:
        word = words[int(rng.integers(len(words)))] if rng is not None else words[0]
        return f"the {word} {obj.colour} {obj.shape}"
    return f"the {obj.colour} {obj.shape} in the {cell_name(obj.cell, world)}"


def resolve(phrase: str, scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> list[ShapeObject]:
    """Every object of ``scene`` that ``phrase`` (the grammar above) can denote."""
    text = phrase.strip().lower()
    if text.startswith("the "):
        text = text[4:]
    where = None
    if " in the " in text:
        text, where = text.split(" in the ", 1)
    words = text.split()
    if not words or words[-1] not in world.shapes:
        raise ValueError(f"cannot read the reference {phrase!r}: it must end with a shape ({', '.join(world.shapes)})")
    shape, rest = words[-1], words[:-1]
    colour = rest.pop() if rest and rest[-1] in world.colour_names else None
    pos = rest.pop() if rest and rest[-1] in POSITION_WORDS else None
    if rest:
        raise ValueError(f"cannot read the reference {phrase!r}: unexpected words {rest}")
    group = [o for o in scene.objects if o.shape == shape and (colour is None or o.colour == colour)]
    if where is not None:
        group = [o for o in group if cell_name(o.cell, world) == where.strip()]
    if pos is not None:
        group = [o for o in group if _extreme(o, group, pos)]
    return group
