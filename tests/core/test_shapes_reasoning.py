"""Reasoning cases: every instruction, read against its scene, gives exactly the case's ops (a unique answer).

The reader below is written from the wording documented in docs/shapeedit.md (regular expressions only, no
code from cogniedit.shapes.reasoning, refer or cases): it resolves cells, relations, "only", odd colours,
superlatives, exclusions, colour/shape transfer and counts taken from the scene, and fails on any reference
that names no object or several.
"""

import re

import pytest

from cogniedit.shapes.cases import apply_fixed_ops, generate_cases
from cogniedit.shapes.palette import COLOUR_NAMES

SHAPES = ("circle", "square", "triangle")
NUMBERS = {"a": 1, "one": 1, "1": 1, "a single": 1, "just one": 1, "two": 2, "2": 2, "a pair of": 2,
           "three": 3, "3": 3}
NUM = "|".join(sorted(map(re.escape, NUMBERS), key=len, reverse=True))
CELL_NAMES = {"top left corner": (0, 0), "top middle": (0, 1), "top right corner": (0, 2),
              "middle left": (1, 0), "centre": (1, 1), "middle right": (1, 2),
              "bottom left corner": (2, 0), "bottom middle": (2, 1), "bottom right corner": (2, 2)}
DIRECTIONS = {(0, -1): ["to the left", "left", "one cell to the left", "one step to the left", "1 cell left",
                        "a cell to the left", "leftwards", "by one cell to the left", "one space to the left"],
              (0, 1): ["to the right", "right", "one cell to the right", "one step to the right", "1 cell right",
                       "a cell to the right", "rightwards", "by one cell to the right", "one space to the right"],
              (-1, 0): ["up", "upwards", "one cell up", "up one cell", "one step up", "1 cell up", "up by one cell",
                        "one space up"],
              (1, 0): ["down", "downwards", "one cell down", "down one cell", "one step down", "1 cell down",
                       "down by one cell", "one space down"]}
STEP = {words: step for step, names in DIRECTIONS.items() for words in names}
DIR = "|".join(sorted(map(re.escape, STEP), key=len, reverse=True))
RECOLOUR = r"(?:make|turn|paint|colour|color|recolour|dye)"
MOVE = r"(?:move|shift|slide|push|nudge)"
REMOVE = r"(?:remove|delete|erase|get rid of|take away|eliminate|take out)"
ADD = r"(?:add|draw|insert|include|create)"
NOUN = r"(?:object|shape|thing)s?"
JOINERS = re.compile(r"\. After that, |\. Next, |\. Then | and afterwards | and then | and also |, then |; |, | and ")
# key whose minimum is the extreme object
EXTREME = {"left": lambda o: o.col, "right": lambda o: -o.col, "top": lambda o: o.row, "bottom": lambda o: -o.row}
SUPERLATIVE_WORDS = {"leftmost": "left", "rightmost": "right", "topmost": "top", "highest": "top",
                     "bottommost": "bottom", "lowest": "bottom"}
RELATIONS = {"left of": "left", "to the left of": "left", "on the left of": "left", "right of": "right",
             "to the right of": "right", "on the right of": "right", "above": "top", "over": "top",
             "below": "bottom", "beneath": "bottom", "under": "bottom"}
REL = "|".join(sorted(map(re.escape, RELATIONS), key=len, reverse=True))
TEMPLATE_REF = re.compile(r"the (?:(left|right|top|bottom) )?(?:(\w+) )?(circle|square|triangle)(?: in the (.+))?")


def extremes(group, side):
    if not group:
        return []
    best = min(EXTREME[side](o) for o in group)
    return [o for o in group if EXTREME[side](o) == best]


def on_side(anchor, side, objects):
    """Objects on ``side`` of anchor: (in its row or column, anywhere in that half of the grid)."""
    key = EXTREME[side]
    anywhere = [o for o in objects if key(o) < key(anchor)]
    line = [o for o in anywhere if (o.row == anchor.row if side in ("left", "right") else o.col == anchor.col)]
    return line, anywhere


def objects_named(ref: str, scene) -> list:
    objs = list(scene.objects)
    if m := re.fullmatch(rf"the {NOUN} in the (.+)", ref):
        return [o for o in objs if o.cell == CELL_NAMES[m[1]]]
    if m := re.fullmatch(rf"the {NOUN} ({REL}) (the .+)", ref):
        anchor = one(m[2], scene)
        line, anywhere = on_side(anchor, RELATIONS[m[1]], objs)
        return line if set(line) == set(anywhere) else anywhere + line
    if m := re.fullmatch(rf"the (?:only|single) (\w+) {NOUN}", ref):
        return [o for o in objs if o.colour == m[1]]
    if m := re.fullmatch(r"the (?:only|lone) (circle|square|triangle)", ref):
        return [o for o in objs if o.shape == m[1]]
    if ref in ("the object whose colour appears only once", "the shape with a colour no other shape has"):
        return [o for o in objs if sum(p.colour == o.colour for p in objs) == 1]
    if m := re.fullmatch(r"the (leftmost|rightmost|topmost|bottommost|highest|lowest|left|right|top|bottom) (\w+)",
                         ref):  # a bare position word is the same extreme ("the top object")
        group = [o for o in objs if m[2] not in SHAPES or o.shape == m[2]]
        return extremes(group, SUPERLATIVE_WORDS.get(m[1], m[1]))
    if m := re.fullmatch(r"the (\w+) furthest to the (left|right)", ref):
        group = [o for o in objs if m[1] not in SHAPES or o.shape == m[1]]
        return extremes(group, m[2])
    m = TEMPLATE_REF.fullmatch(ref)
    assert m, f"not a reference: {ref!r}"
    position, colour, shape, cell = m.groups()
    assert colour is None or colour in COLOUR_NAMES, ref
    group = [o for o in objs if o.shape == shape and colour in (None, o.colour)]
    if cell:
        group = [o for o in group if o.cell == CELL_NAMES[cell]]
    return extremes(group, position) if position else group


def one(ref, scene):
    found = objects_named(ref, scene)
    assert len(found) == 1, f"{ref!r} names {len(found)} objects in {scene}"
    return found[0]


def group_named(phrase, scene):
    """'every square except the red one', 'all squares but the red one', 'all the red objects', 'each red thing'."""
    if m := re.fullmatch(r"(?:every (\w+) except|all (\w+)s but) the (\w+) one", phrase):
        shape, keep = m[1] or m[2], m[3]
        group = [o for o in scene.objects if o.shape == shape]
        assert sum(o.colour == keep for o in group) == 1, f"{phrase!r}: 'the {keep} one' is not one object"
        return [o for o in group if o.colour != keep]
    if m := re.fullmatch(rf"(?:all the (\w+) objects|each (\w+) {NOUN})", phrase):
        return [o for o in scene.objects if o.colour == (m[1] or m[2])]
    return None


GROUP = r"(?:every \w+ except the \w+ one|all \w+s but the \w+ one|all the \w+ objects|each \w+ (?:object|shape|thing))"


def count_of(group: str, scene) -> int:
    """'circles', 'red objects' (plural) or 'circle', 'red object' (singular)."""
    words = group.split()
    if words[-1].rstrip("s") in SHAPES:
        return sum(o.shape == words[-1].rstrip("s") for o in scene.objects)
    return sum(o.colour == words[0] for o in scene.objects)


def read_clause(clause: str, scene) -> list[tuple]:
    if m := re.fullmatch(rf"{RECOLOUR} (.+) the same colour as (.+)", clause) or \
            re.fullmatch(r"give (.+) the colour of (.+)", clause) or \
            re.fullmatch(r"(.+) should take the colour of (.+)", clause):
        return [("recolour", one(m[1], scene).cell, one(m[2], scene).colour)]
    if m := re.fullmatch(rf"{RECOLOUR} ({GROUP}) (\w+)", clause):
        return [("recolour", o.cell, m[2]) for o in group_named(m[1], scene)]
    if m := re.fullmatch(rf"{REMOVE} ({GROUP})", clause):
        return [("remove", o.cell) for o in group_named(m[1], scene)]
    if m := re.fullmatch(r"double the number of (\w+) (\w+)s", clause):
        n = sum(o.colour == m[1] and o.shape == m[2] for o in scene.objects)
        return [("add", m[2], m[1], n)]
    if m := re.fullmatch(rf"{ADD} as many (\w+) (\w+)s as there are (.+)", clause) or \
            re.fullmatch(rf"{ADD} one (\w+) (\w+) for every (.+)", clause):
        return [("add", m[2], m[1], count_of(m[3], scene))]
    if m := re.fullmatch(rf"{ADD} ({NUM}) (\w+?)s? (?:of the same colour as|in the colour of) (.+)", clause):
        return [("add", m[2], one(m[3], scene).colour, NUMBERS[m[1]])]
    if m := re.fullmatch(rf"{ADD} ({NUM}) (\w+) {NOUN} (?:of the same shape as|shaped like) (.+)", clause):
        return [("add", one(m[3], scene).shape, m[2], NUMBERS[m[1]])]
    if m := re.fullmatch(rf"{MOVE} (.+?) ({DIR})", clause):
        obj, (dr, dc) = one(m[1], scene), STEP[m[2]]
        return [("move", obj.cell, (obj.row + dr, obj.col + dc))]
    if m := re.fullmatch(rf"{RECOLOUR} (.+) (\w+)", clause):
        assert m[2] in COLOUR_NAMES, clause
        return [("recolour", one(m[1], scene).cell, m[2])]
    if m := re.fullmatch(rf"{REMOVE} (.+)", clause):
        return [("remove", one(m[1], scene).cell)]
    raise AssertionError(f"not a reasoning clause: {clause!r}")


def read(instruction: str, scene) -> list[tuple]:
    clauses = JOINERS.split(instruction)
    ops = [op for clause in clauses for op in read_clause(clause[:1].lower() + clause[1:], scene)]
    return ops


def as_tuple(op) -> tuple:
    return {"recolour": ("recolour", op.cell, op.colour), "move": ("move", op.cell, op.to_cell),
            "remove": ("remove", op.cell), "add": ("add", op.shape, op.colour, op.count)}[op.kind]


@pytest.mark.parametrize("seed,split", [(0, "train"), (1, "eval"), (20261129, "eval"), (77, "train")])
def test_every_reasoning_instruction_reads_back_to_its_ops(seed, split):
    for case in generate_cases(300, seed=seed, phrasing="reasoning", split=split):
        want = [as_tuple(op) for op in case.ops]
        assert read(case.instruction, case.source) == want, case.to_dict()
        clauses = JOINERS.split(case.instruction)
        if len(clauses) == 2 and case.ops[0].kind != "add":  # read in turn: the second clause on the edited scene
            first = read_clause(clauses[0][:1].lower() + clauses[0][1:], case.source)
            after = apply_fixed_ops(case.source, case.ops[:len(first)], case.world)
            assert first + read_clause(clauses[1], after) == want, case.to_dict()


@pytest.mark.parametrize("phrasing", ["reasoning", "paraphrase"])
def test_explicit_instruction_is_template_grammar_for_the_same_ops(phrasing):
    from test_shapes_instructions import interpret  # the template grammar's own independent reader

    for case in generate_cases(300, seed=8, phrasing=phrasing, split="eval"):
        assert interpret(case.explicit_instruction, case.source) == [as_tuple(op) for op in case.ops], case.to_dict()


def test_reasoning_covers_every_kind_of_reading_off_the_scene():
    texts = " | ".join(c.instruction for c in generate_cases(600, seed=5, phrasing="reasoning", split="eval")
                       + generate_cases(600, seed=5, phrasing="reasoning", split="train"))
    for needle in ("the same colour as", "as many", "for every", "double the number", " in the ", " left of ",
                   "above", "the only", "the lone", "appears only once", "leftmost", "highest", "except the",
                   "but the", "all the", "of the same shape as", "shaped like"):
        assert needle in texts, needle


def test_the_reader_rejects_an_ambiguous_reasoning_reference():
    from cogniedit.shapes.scene import Scene, ShapeObject

    case = next(c for c in generate_cases(300, seed=6, phrasing="reasoning", split="train")
                if re.search(r"the only (?!circle|square|triangle)\w+ ", c.instruction) and c.kind == "colour")
    colour = re.search(r"the only (\w+) ", case.instruction)[1]
    free = case.source.free_cells(case.world)[0]
    crowded = Scene(case.source.objects + (ShapeObject(free[0], free[1], "circle", colour),))  # a second one
    read(case.instruction, case.source)
    with pytest.raises(AssertionError, match="names 2 objects"):
        read(case.instruction, crowded)
