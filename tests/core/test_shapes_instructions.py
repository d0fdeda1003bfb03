"""Generated instructions say exactly what the stored ops do.

An interpreter written here from the documented grammar alone (regular expressions, no code from
cogniedit.shapes.refer or cases) turns each instruction back into ops on the SOURCE scene; it must give the
case's ops, so the colour word, the direction, the count and the object named all agree with the target.
"""

import re

import pytest

from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.palette import COLOUR_NAMES

NUMBERS = {"a": 1, "one": 1, "two": 2, "three": 3}
CELL_NAMES = {"top left corner": (0, 0), "top middle": (0, 1), "top right corner": (0, 2),
              "middle left": (1, 0), "centre": (1, 1), "middle right": (1, 2),
              "bottom left corner": (2, 0), "bottom middle": (2, 1), "bottom right corner": (2, 2)}
STEPS = {"to the left": (0, -1), "to the right": (0, 1), "up": (-1, 0), "down": (1, 0)}
# position word -> key whose unique minimum is the object meant
EXTREMES = {"left": lambda o: o.col, "right": lambda o: -o.col, "top": lambda o: o.row, "bottom": lambda o: -o.row}
REFERENCE = re.compile(r"the (?:(left|right|top|bottom) )?(?:(\w+) )?(circle|square|triangle)(?: in the (.+))?")


def denoted_cell(reference: str, scene) -> tuple[int, int]:
    """The cell of the one object ``reference`` names; fails when it names none or several."""
    match = REFERENCE.fullmatch(reference)
    assert match, f"not in the grammar: {reference!r}"
    position, colour, shape, cell_name = match.groups()
    assert colour is None or colour in COLOUR_NAMES, reference
    group = [o for o in scene.objects if o.shape == shape and colour in (None, o.colour)]
    if cell_name:
        group = [o for o in group if o.cell == CELL_NAMES[cell_name]]
    if position and group:
        best = min(EXTREMES[position](o) for o in group)
        group = [o for o in group if EXTREMES[position](o) == best]
    assert len(group) == 1, f"{reference!r} names {len(group)} objects of {scene}"
    return group[0].cell


def interpret(instruction: str, scene) -> list[tuple]:
    ops = []
    for part in re.split(r", | and ", instruction):
        if m := re.fullmatch(r"(?:make|turn) (.+) (\w+)", part):
            ops.append(("recolour", denoted_cell(m[1], scene), m[2]))
        elif m := re.fullmatch(r"move (.+?) (to the left|to the right|up|down)", part):
            (r, c), (dr, dc) = denoted_cell(m[1], scene), STEPS[m[2]]
            ops.append(("move", (r, c), (r + dr, c + dc)))
        elif m := re.fullmatch(r"remove (.+)", part):
            ops.append(("remove", denoted_cell(m[1], scene)))
        elif m := re.fullmatch(r"add (a|one|two|three) (\w+) (circle|square|triangle)s?", part):
            plural = part.endswith("s")
            assert plural == (NUMBERS[m[1]] > 1), f"number agreement: {part!r}"
            ops.append(("add", m[3], m[2], NUMBERS[m[1]]))
        else:
            raise AssertionError(f"not in the grammar: {part!r}")
    return ops


def as_tuple(op) -> tuple:
    return {"recolour": ("recolour", op.cell, op.colour), "move": ("move", op.cell, op.to_cell),
            "remove": ("remove", op.cell), "add": ("add", op.shape, op.colour, op.count)}[op.kind]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_instruction_reads_back_to_its_ops(seed):
    for case in generate_cases(400, seed=seed):
        assert interpret(case.instruction, case.source) == [as_tuple(op) for op in case.ops], case.to_dict()


def test_interpreter_catches_an_ambiguous_or_wrong_instruction():
    case = next(c for c in generate_cases(50, seed=3) if c.kind == "colour")
    wrong = case.instruction.rsplit(" ", 1)[0] + " " + next(
        c for c in COLOUR_NAMES if c not in (case.ops[0].colour, case.source.at(case.ops[0].cell).colour))
    assert interpret(wrong, case.source) != [as_tuple(op) for op in case.ops]
    twins = next(c for c in generate_cases(200, seed=3)
                 if c.kind == "colour" and any(w in c.instruction.split() for w in EXTREMES))
    bare = re.sub(r" (left|right|top|bottom) ", " ", twins.instruction, count=1)  # drop the position word
    with pytest.raises(AssertionError, match="names 2 objects|names 3 objects"):
        interpret(bare, twins.source)
