"""Read an instruction in the ShapeEdit template grammar back into ops on a scene.

What a decomposer's answer means: ``read_template("make the left red circle blue and add two squares", scene)``
gives the ``EditOp`` tuple it asks for, or raises ValueError when the text is not in the grammar or a
reference names no object or several. Clauses are joined by " and " or ", " (docs/shapeedit.md, "Edit cases").
"""

from __future__ import annotations

import re

from .cases import DIRECTIONS, EditOp
from .refer import resolve
from .scene import DEFAULT_WORLD, Scene, WorldConfig

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_WHERE = {"to the left": "left", "to the right": "right", "up": "up", "down": "down"}


def _one(ref: str, scene: Scene, world: WorldConfig):
    found = resolve(ref, scene, world)
    if len(found) != 1:
        raise ValueError(f"{ref!r} names {len(found)} objects of the scene, not one")
    return found[0]


def read_clause(clause: str, scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> EditOp:
    text = clause.strip()
    colours, shapes = "|".join(world.colour_names), "|".join(world.shapes)
    if m := re.fullmatch(rf"(?:make|turn) (the .+) ({colours})", text):
        return EditOp("recolour", _one(m[1], scene, world).cell, colour=m[2])
    if m := re.fullmatch(r"move (the .+?) (to the left|to the right|up|down)", text):
        obj = _one(m[1], scene, world)
        dr, dc = DIRECTIONS[_WHERE[m[2]]]
        return EditOp("move", obj.cell, to_cell=(obj.row + dr, obj.col + dc))
    if m := re.fullmatch(r"remove (the .+)", text):
        return EditOp("remove", _one(m[1], scene, world).cell)
    if m := re.fullmatch(rf"add ({'|'.join(_NUMBERS)}) ({colours}) ({shapes})s?", text):
        return EditOp("add", shape=m[3], colour=m[2], count=_NUMBERS[m[1]])
    raise ValueError(f"{clause!r} is not a template clause (make/turn, move, remove, add; docs/shapeedit.md)")


def read_template(instruction: str, scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> tuple[EditOp, ...]:
    """The ops ``instruction`` asks for on ``scene`` (ValueError when it is not in the grammar or ambiguous)."""
    return tuple(read_clause(part, scene, world) for part in re.split(r", | and ", instruction.strip()))
