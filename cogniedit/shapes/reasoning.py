"""ShapeEdit ``reasoning`` phrasing: what to change, or into what, must be read off the scene.

Clauses: recolour with a colour taken from another object ("make the circle the same colour as the square"),
counts taken from the scene ("add as many red triangles as there are circles"), references by cell ("the
object in the centre"), by relation ("the shape left of the blue square"), by uniqueness ("the only red
object", "the object whose colour appears only once"), superlatives ("the leftmost shape") and exclusion
("every square except the red one"). Each clause carries a function that computes its ops from a scene; a
case is kept only when that answer is unique on the source and, for two clauses, the same whichever clause is
read first and wherever added objects land. Semantics (docs/shapeedit.md): "left of X" = in X's row, left of it,
and the only object left of X anywhere; superlatives are strict extremes; a cell name is a 3x3 cell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cases import DIRECTIONS, KINDS, EditCase, EditOp, apply_fixed_ops, apply_ops, touched_cells
from .phrasing import (ADD_VERBS, MOVE_VERBS, PARAPHRASE, RECOLOUR_VERBS, REMOVE_VERBS, Pool, Wording,
                       direction_of)
from .refer import cell_name, describe, resolve
from .scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig, random_scene

NOUNS: Pool = (("object", "shape"), ("thing",))
SUPERLATIVE: dict[str, Pool] = {
    "left": (("the leftmost {x}",), ("the {x} furthest to the left",)),
    "right": (("the rightmost {x}",), ("the {x} furthest to the right",)),
    "top": (("the topmost {x}",), ("the highest {x}",)),
    "bottom": (("the bottommost {x}",), ("the lowest {x}",)),
}
RELATION: dict[str, Pool] = {  # "the shape {relation} the blue square": the shape is on that side of it
    "left": (("left of", "to the left of"), ("on the left of",)),
    "right": (("right of", "to the right of"), ("on the right of",)),
    "top": (("above",), ("over",)),
    "bottom": (("below",), ("beneath", "under")),
}
ONLY: Pool = (("the only {c} {noun}",), ("the single {c} {noun}",))
ONLY_SHAPE: Pool = (("the only {s}",), ("the lone {s}",))
ODD_COLOUR: Pool = (("the object whose colour appears only once",), ("the shape with a colour no other shape has",))
TRANSFER: Pool = (("{verb} {ref} the same colour as {donor}", "give {ref} the colour of {donor}"),
                  ("{ref} should take the colour of {donor}",))
EVERY_BUT: Pool = (("every {s} except the {c0} one",), ("all {s}s but the {c0} one",))
ALL_OF_COLOUR: Pool = (("all the {c0} objects",), ("each {c0} {noun}",))
AS_MANY: Pool = (("{verb} as many {things} as there are {group}",), ("{verb} one {thing} for every {one}",))
DOUBLE: Pool = (("double the number of {things}",), ())
SAME_COLOUR_ADD: Pool = (("{verb} {n} {shape} of the same colour as {donor}",), ("{verb} {n} {shape} in the colour of {donor}",))
SAME_SHAPE_ADD: Pool = (("{verb} {n} {colour} {noun} of the same shape as {donor}",),
                        ("{verb} {n} {colour} {noun} shaped like {donor}",))

_SIDE = {"left": (lambda o: o.col, 0), "right": (lambda o: -o.col, 0), "top": (lambda o: o.row, 1),
         "bottom": (lambda o: -o.row, 1)}
MAX_ADD = 3


@dataclass(frozen=True)
class Ref:
    """A phrase naming one object, and what it names in any scene."""

    text: str
    denote: Callable[[Scene], list]


@dataclass(frozen=True)
class Clause:
    text: str
    ops_in: Callable[[Scene], tuple | None]  # the clause's ops read off a scene; None when not unique


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


# ----------------------------------------------------------------------------- references

def _template_ref(obj, scene, rng, world) -> Ref | None:
    text = describe(obj, scene, rng, world)
    return None if text is None else Ref(text, lambda s, t=text: resolve(t, s, world))


def _cell_ref(obj, scene, words, world) -> Ref:
    cell = obj.cell
    text = words.fill("the {noun} in the {cell}", noun=NOUNS, cell=cell_name(cell, world))
    return Ref(text, lambda s: [o for o in s.objects if o.cell == cell])


def _side_of(anchor, side, scene, line_only):
    key, axis = _SIDE[side]
    out = [o for o in scene.objects if key(o) < key(anchor)]
    if line_only:
        out = [o for o in out if (o.row == anchor.row if axis == 0 else o.col == anchor.col)]
    return out


def _relation_ref(obj, scene, words, world, rng) -> Ref | None:
    options = []
    for anchor in scene.objects:
        if anchor == obj:
            continue
        for side in _SIDE:
            if _side_of(anchor, side, scene, True) == [obj] == _side_of(anchor, side, scene, False):
                options.append((anchor, side))
    if not options:
        return None
    anchor, side = options[int(rng.integers(len(options)))]
    anchor_text = describe(anchor, scene, None, world)
    text = words.fill("the {noun} {relation} {anchor}", noun=NOUNS, relation=RELATION[side], anchor=anchor_text)

    def denote(s):
        anchors = resolve(anchor_text, s, world)
        if len(anchors) != 1:
            return []
        line, anywhere = _side_of(anchors[0], side, s, True), _side_of(anchors[0], side, s, False)
        return line if line == anywhere else line + [o for o in anywhere if o not in line]
    return Ref(text, denote)


def _only_ref(obj, scene, words, world, rng) -> Ref | None:
    options = []
    if len(scene.objects) >= 2 and [o for o in scene.objects if o.colour == obj.colour] == [obj]:
        options.append("colour")
    shapes = {o.shape for o in scene.objects}
    if len(shapes) >= 2 and [o for o in scene.objects if o.shape == obj.shape] == [obj]:
        options.append("shape")
    if not options:
        return None
    if options[int(rng.integers(len(options)))] == "colour":
        colour = obj.colour
        text = words.fill(words.pick(ONLY), c=colour, noun=NOUNS)
        return Ref(text, lambda s: [o for o in s.objects if o.colour == colour])
    shape = obj.shape
    return Ref(words.pick(ONLY_SHAPE).format(s=shape), lambda s: [o for o in s.objects if o.shape == shape])


def _odd_colour_members(scene):
    counts = {}
    for o in scene.objects:
        counts[o.colour] = counts.get(o.colour, 0) + 1
    return [o for o in scene.objects if counts[o.colour] == 1]


def _odd_ref(obj, scene, words, world, rng) -> Ref | None:
    if len(scene.objects) < 3 or _odd_colour_members(scene) != [obj]:
        return None
    return Ref(words.pick(ODD_COLOUR), _odd_colour_members)


def _extreme_members(scene, side, shape):
    key, _ = _SIDE[side]
    group = [o for o in scene.objects if shape is None or o.shape == shape]
    if not group:
        return []
    best = min(key(o) for o in group)
    return [o for o in group if key(o) == best]


def _superlative_ref(obj, scene, words, world, rng) -> Ref | None:
    options = []
    for side in _SIDE:
        if len(scene.objects) >= 2 and _extreme_members(scene, side, None) == [obj]:
            options.append((side, None))
        if sum(o.shape == obj.shape for o in scene.objects) >= 2 and _extreme_members(scene, side, obj.shape) == [obj]:
            options.append((side, obj.shape))
    if not options:
        return None
    side, shape = options[int(rng.integers(len(options)))]
    text = words.fill(words.pick(SUPERLATIVE[side]), x=shape or NOUNS)
    return Ref(text, lambda s: _extreme_members(s, side, shape))


_REASONING_REFS = (_relation_ref, _only_ref, _odd_ref, _superlative_ref)


def reasoning_ref(obj, scene, words, world, rng) -> Ref | None:
    """A reference to ``obj`` that needs the scene: by cell, relation, uniqueness or superlative."""
    makers = [m for m in _REASONING_REFS]
    for i in rng.permutation(len(makers) + 1):
        if int(i) == len(makers):
            ref = _cell_ref(obj, scene, words, world)
        else:
            ref = makers[int(i)](obj, scene, words, world, rng)
        if ref is not None and ref.denote(scene) == [obj]:
            return ref
    return None


def _any_ref(obj, scene, words, world, rng) -> Ref | None:
    """A reasoning reference, or sometimes a plain one (for the donor of an attribute)."""
    if rng.random() < 0.5:
        ref = _template_ref(obj, scene, rng, world)
        if ref is not None and ref.denote(scene) == [obj]:
            return ref
    return reasoning_ref(obj, scene, words, world, rng)


def _single(ref: Ref, scene):
    found = ref.denote(scene)
    return found[0] if len(found) == 1 else None


# ----------------------------------------------------------------------------- clauses

def _on_one(ref: Ref, text: str, op_of) -> Clause:
    """A clause editing the one object ``ref`` names: ``op_of(object)`` is its op."""
    def ops_in(s):
        target = _single(ref, s)
        return None if target is None else (op_of(target),)
    return Clause(text, ops_in)


def _recolour_clause(scene, rng, words, world, obj):
    ref = reasoning_ref(obj, scene, words, world, rng)
    if ref is None:
        return None
    new = [c for c in world.colour_names if c != obj.colour][int(rng.integers(len(world.colour_names) - 1))]
    return _on_one(ref, f"{words.pick(RECOLOUR_VERBS)} {ref.text} {new}", lambda o: ("recolour", o.cell, new))


def _transfer_clause(scene, rng, words, world, obj):
    donors = [o for o in scene.objects if o.colour != obj.colour]
    if not donors:
        return None
    donor = donors[int(rng.integers(len(donors)))]
    ref, donor_ref = _any_ref(obj, scene, words, world, rng), _any_ref(donor, scene, words, world, rng)
    if ref is None or donor_ref is None:
        return None
    frame = words.pick(TRANSFER)
    text = words.fill(frame, verb=RECOLOUR_VERBS, ref=ref.text, donor=donor_ref.text)

    def ops_in(s):
        target, source = _single(ref, s), _single(donor_ref, s)
        if target is None or source is None or target == source:
            return None
        return (("recolour", target.cell, source.colour),)
    return Clause(text, ops_in)


def _group_clause(scene, rng, words, world, kind):
    """recolour or remove a set: "every square except the red one", "all the red objects"."""
    options = []
    for shape in world.shapes:
        group = [o for o in scene.objects if o.shape == shape]
        for c0 in dict.fromkeys(o.colour for o in group):  # first-seen order: a set would follow the hash seed
            if len(group) >= 2 and sum(o.colour == c0 for o in group) == 1:
                options.append(("except", shape, c0))
    for c0 in world.colour_names:
        if sum(o.colour == c0 for o in scene.objects) >= 2:
            options.append(("all", None, c0))
    if not options:
        return None
    how, shape, c0 = options[int(rng.integers(len(options)))]
    if how == "except":
        phrase = words.pick(EVERY_BUT).format(s=shape, c0=c0)

        def members(s):  # "the red one" must still be one
            group = [o for o in s.objects if o.shape == shape]
            if sum(o.colour == c0 for o in group) != 1:
                return []
            return [o for o in group if o.colour != c0]
    else:
        phrase = words.fill(words.pick(ALL_OF_COLOUR), c0=c0, noun=NOUNS)

        def members(s):
            return [o for o in s.objects if o.colour == c0]
    if kind == "remove":
        text = f"{words.pick(REMOVE_VERBS)} {phrase}"

        def ops_in(s):
            found = members(s)
            return tuple(("remove", o.cell) for o in found) or None
        return Clause(text, ops_in)
    now = {o.colour for o in members(scene)}
    colours = [c for c in world.colour_names if c not in now and c != c0]
    new = colours[int(rng.integers(len(colours)))]
    text = f"{words.pick(RECOLOUR_VERBS)} {phrase} {new}"

    def ops_in(s):
        found = members(s)
        return tuple(("recolour", o.cell, new) for o in found) or None
    return Clause(text, ops_in)


def _move_clause(scene, rng, words, world, obj):
    taken = scene.occupied()
    options = [name for name, (dr, dc) in DIRECTIONS.items()
               if 0 <= obj.row + dr < world.grid and 0 <= obj.col + dc < world.grid
               and (obj.row + dr, obj.col + dc) not in taken]
    if not options:
        return None
    name = options[int(rng.integers(len(options)))]
    dr, dc = DIRECTIONS[name]
    ref = reasoning_ref(obj, scene, words, world, rng)
    if ref is None:
        return None
    text = f"{words.pick(MOVE_VERBS)} {ref.text} {words.pick(PARAPHRASE[name])}"
    return _on_one(ref, text, lambda o: ("move", o.cell, (o.row + dr, o.col + dc)))


def _remove_clause(scene, rng, words, world, obj):
    ref = reasoning_ref(obj, scene, words, world, rng)
    if ref is None:
        return None
    return _on_one(ref, f"{words.pick(REMOVE_VERBS)} {ref.text}", lambda o: ("remove", o.cell))


def _add_clause(scene, rng, words, world, free):
    """An add whose count, colour or shape is read off the scene."""
    if free < 1 or not scene.objects:
        return None
    way = int(rng.integers(4))
    shape = world.shapes[int(rng.integers(len(world.shapes)))]
    colour = world.colour_names[int(rng.integers(len(world.colour_names)))]
    verb = ADD_VERBS
    if way == 0:  # as many as there are <shape>s / <colour> objects
        groups = [(f"{s}s", s, lambda o, s=s: o.shape == s) for s in world.shapes if s != shape] + \
                 [(f"{c} objects", f"{c} object", lambda o, c=c: o.colour == c) for c in world.colour_names
                  if c != colour]
        groups = [g for g in groups if 1 <= sum(g[2](o) for o in scene.objects) <= min(MAX_ADD, free)]
        if not groups:
            return None
        plural, singular, member = groups[int(rng.integers(len(groups)))]
        text = words.fill(words.pick(AS_MANY), verb=verb, things=f"{colour} {shape}s", group=plural,
                                          thing=f"{colour} {shape}", one=singular)

        def ops_in(s):
            n = sum(member(o) for o in s.objects)
            return (("add", shape, colour, n),) if n else None
        return Clause(text, ops_in)
    if way == 1:  # double the number of <colour> <shape>s
        n = sum(o.shape == shape and o.colour == colour for o in scene.objects)
        if not 1 <= n <= min(MAX_ADD, free):
            present = [o for o in scene.objects]
            o = present[int(rng.integers(len(present)))]
            shape, colour = o.shape, o.colour
            n = sum(p.shape == shape and p.colour == colour for p in scene.objects)
            if not 1 <= n <= min(MAX_ADD, free):
                return None
        text = words.fill(words.pick(DOUBLE), things=f"{colour} {shape}s")

        def ops_in(s):
            m = sum(o.shape == shape and o.colour == colour for o in s.objects)
            return (("add", shape, colour, m),) if m else None
        return Clause(text, ops_in)
    n = int(rng.integers(1, min(MAX_ADD, free) + 1))
    donor = scene.objects[int(rng.integers(len(scene.objects)))]
    donor_ref = _any_ref(donor, scene, words, world, rng)
    if donor_ref is None:
        return None
    if way == 2:  # colour of another object
        text = words.fill(words.pick(SAME_COLOUR_ADD), verb=verb, n=PARAPHRASE[f"count{n}"], shape=_plural(shape, n),
                                                  donor=donor_ref.text)

        def ops_in(s):
            d = _single(donor_ref, s)
            return None if d is None else (("add", shape, d.colour, n),)
        return Clause(text, ops_in)
    noun = words.pick(NOUNS)
    text = words.fill(words.pick(SAME_SHAPE_ADD), verb=verb, n=PARAPHRASE[f"count{n}"], colour=colour,
                      noun=_plural(noun, n), donor=donor_ref.text)

    def ops_in(s):
        d = _single(donor_ref, s)
        return None if d is None else (("add", d.shape, colour, n),)
    return Clause(text, ops_in)


def _object_clause(kind, scene, rng, words, world):
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    if kind == "recolour":
        return (_transfer_clause if rng.random() < 0.4 else _recolour_clause)(scene, rng, words, world, obj)
    if kind == "recolour_set":
        return _group_clause(scene, rng, words, world, "recolour")
    if kind == "remove_set":
        return _group_clause(scene, rng, words, world, "remove")
    if kind == "move":
        return _move_clause(scene, rng, words, world, obj)
    if kind == "remove":
        return _remove_clause(scene, rng, words, world, obj)
    if kind == "add":
        return _add_clause(scene, rng, words, world, len(scene.free_cells(world)))
    raise ValueError(kind)


_CLAUSES_FOR_KIND = {"colour": ("recolour", "recolour", "recolour", "recolour_set"), "position": ("move",),
                     "count": ("add", "add", "remove", "remove_set")}
_COMPOUND_PARTS = ("recolour", "move", "remove", "add")


# ----------------------------------------------------------------------------- ops and checks

def _to_edit_ops(raw):
    ops = []
    for op in raw:
        if op[0] == "recolour":
            ops.append(EditOp("recolour", op[1], colour=op[2]))
        elif op[0] == "move":
            ops.append(EditOp("move", op[1], to_cell=op[2]))
        elif op[0] == "remove":
            ops.append(EditOp("remove", op[1]))
        else:
            ops.append(EditOp("add", shape=op[1], colour=op[2], count=op[3]))
    return tuple(ops)


def _scenes_after(scene, ops, world):
    """Every scene the edit ``ops`` can leave behind (added objects in any free cells)."""
    fixed = apply_fixed_ops(scene, ops, world)
    adds = [(op.shape, op.colour) for op in ops if op.kind == "add" for _ in range(op.count)]
    if not adds:
        return [fixed]
    free = fixed.free_cells(world)
    if len(free) < len(adds):
        raise ValueError("not enough free cells for the added objects")
    out = []
    for cells in itertools.combinations(free, len(adds)):
        for attrs in set(itertools.permutations(adds)):
            out.append(Scene(fixed.objects + tuple(ShapeObject(r, c, sh, co, world.object_size)
                                                   for (r, c), (sh, co) in zip(cells, attrs))))
    return out


def _cells_of(ops):
    return {c for op in ops for c in (op.cell, op.to_cell) if c is not None}


def _compound_ok(scene, a, b, ops_a, ops_b, world):
    """Both clauses mean the same whichever is read first and wherever added objects go."""
    if _cells_of(ops_a) & _cells_of(ops_b):
        return False
    for first, second, want in ((ops_a, b, ops_b), (ops_b, a, ops_a)):
        try:
            after = _scenes_after(scene, first, world)
        except ValueError:
            return False
        for s in after:
            got = second.ops_in(s)
            if got is None or _to_edit_ops(got) != want:
                return False
    return True


def explicit_instruction(source: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> str:
    """The edit ``ops`` in the template grammar, each reference unambiguous on the source and after the other ops
    (the cell name is used when the shortest phrase would not be)."""
    adds = [(op.shape, op.colour) for op in ops if op.kind == "add"]
    clauses = []
    for i, op in enumerate(ops):
        if op.kind == "add":
            number = NUMBER_WORD[op.count]
            clauses.append(f"add {number} {op.colour} {_plural(op.shape, op.count)}")
            continue
        obj = source.at(op.cell)
        others = [o for j, o in enumerate(ops) if j != i and o.kind != "add"]
        after = apply_fixed_ops(source, others, world)
        ref = describe(obj, source, None, world, adds)
        if ref is None or resolve(ref, source, world) != [obj] or resolve(ref, after, world) != [after.at(obj.cell)]:
            ref = f"the {obj.colour} {obj.shape} in the {cell_name(obj.cell, world)}"
        if op.kind == "recolour":
            clauses.append(f"make {ref} {op.colour}")
        elif op.kind == "remove":
            clauses.append(f"remove {ref}")
        else:
            name = direction_of(op)
            clauses.append(f"move {ref} {'to the ' + name if name in ('left', 'right') else name}")
    return " and ".join(clauses)


NUMBER_WORD = {1: "one", 2: "two", 3: "three"}


def _attempt(kind, scene, rng, words, world):
    if kind != "compound":
        part = _CLAUSES_FOR_KIND[kind][int(rng.integers(len(_CLAUSES_FOR_KIND[kind])))]
        clause = _object_clause(part, scene, rng, words, world)
        if clause is None:
            return None
        raw = clause.ops_in(scene)
        return None if raw is None else ([clause], _to_edit_ops(raw))
    pairs = [(x, y) for x in _COMPOUND_PARTS for y in _COMPOUND_PARTS if not (x == y == "add")]
    x, y = pairs[int(rng.integers(len(pairs)))]
    a, b = _object_clause(x, scene, rng, words, world), _object_clause(y, scene, rng, words, world)
    if a is None or b is None:
        return None
    raw_a, raw_b = a.ops_in(scene), b.ops_in(scene)
    if raw_a is None or raw_b is None:
        return None
    ops_a, ops_b = _to_edit_ops(raw_a), _to_edit_ops(raw_b)
    if not _compound_ok(scene, a, b, ops_a, ops_b, world):
        return None
    return [a, b], ops_a + ops_b


def make_reasoning_case(case_id: str, kind: str, rng: np.random.Generator, split: str,
                        world: WorldConfig = DEFAULT_WORLD, max_tries: int = 400):
    """One reasoning case of ``kind``; scenes and wordings that do not give a unique answer are redrawn."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    for _ in range(max_tries):
        scene = random_scene(rng, world, n_objects=int(rng.integers(max(2, world.min_objects), world.max_objects + 1)))
        words = Wording(rng, split)
        made = _attempt(kind, scene, rng, words, world)
        if made is None:
            continue
        clauses, ops = made
        text = clauses[0].text
        for clause in clauses[1:]:
            text += words.pick(PARAPHRASE["joiner"]) + clause.text
        if split == "eval" and not words.used_held_out:
            continue  # every eval wording holds a held-out alternative
        try:
            target = apply_ops(scene, ops, world)
        except ValueError:
            continue
        return EditCase(case_id, kind, text[:1].upper() + text[1:] if text.startswith("I ") else text, scene,
                        target, touched_cells(scene, ops, world), ops, world, "reasoning", split,
                        explicit_instruction(scene, ops, world))
    raise RuntimeError(f"could not generate a {kind} reasoning case in {max_tries} tries")
