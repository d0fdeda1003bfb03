"""ShapeEdit edit cases: instruction + source scene + target scene, generated deterministically, stored as JSONL.

Kinds: ``colour`` (recolour one object), ``position`` (move one object one cell into a free cell),
``count`` (add N objects of a colour+shape, or remove one object), ``compound`` (two of those on different
objects, joined by "and" or a comma). References are resolved on the SOURCE scene and are unambiguous there.

Added objects may land in any cell that is free after the other operations; the scorer accepts any such cell.
The stored ``target`` places them in the first free cells in reading order (row-major), a deterministic and
learnable rule for supervised training pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from ..atomic_io import atomic_write
from .phrasing import SPLITS, paraphrase
from .refer import describe, resolve
from .scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig, random_scene

CASES_VERSION = 2  # version 2 adds phrasing, split, explicit; template cases are still written as version 1
READ_VERSIONS = (1, 2)
PHRASINGS = ("template", "paraphrase", "reasoning")
KINDS = ("colour", "position", "count", "compound")
OP_KINDS = ("recolour", "move", "add", "remove")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
MAX_ADD = 3


@dataclass(frozen=True)
class EditOp:
    """One requested change. recolour: cell -> colour; move: cell -> to_cell; remove: cell;
    add: ``count`` objects of ``shape``+``colour`` in any free cell."""

    kind: str
    cell: tuple[int, int] | None = None
    to_cell: tuple[int, int] | None = None
    shape: str | None = None
    colour: str | None = None
    count: int = 1

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        if self.cell is not None:
            d["cell"] = list(self.cell)
        if self.to_cell is not None:
            d["to_cell"] = list(self.to_cell)
        if self.shape is not None:
            d["shape"] = self.shape
        if self.colour is not None:
            d["colour"] = self.colour
        if self.kind == "add":
            d["count"] = self.count
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EditOp":
        kind = d.get("kind")
        if kind not in OP_KINDS:
            raise ValueError(f"op kind {kind!r} is not one of {', '.join(OP_KINDS)}")
        cell = tuple(int(x) for x in d["cell"]) if d.get("cell") is not None else None
        to_cell = tuple(int(x) for x in d["to_cell"]) if d.get("to_cell") is not None else None
        op = cls(kind, cell, to_cell, d.get("shape"), d.get("colour", d.get("color")), int(d.get("count", 1)))
        need = {"recolour": ("cell", "colour"), "move": ("cell", "to_cell"), "remove": ("cell",),
                "add": ("shape", "colour")}[kind]
        missing = [k for k in need if getattr(op, k) is None]
        if missing:
            raise ValueError(f"{kind} op needs {', '.join(missing)}")
        return op


@dataclass(frozen=True)
class EditCase:
    case_id: str
    kind: str
    instruction: str
    source: Scene
    target: Scene
    touched: tuple[tuple[int, int], ...]  # cells the edit may change; everything else must stay as it was
    ops: tuple[EditOp, ...] = field(default_factory=tuple)
    world: WorldConfig = DEFAULT_WORLD
    phrasing: str = "template"  # template | paraphrase | reasoning
    split: str | None = None  # wording pool of a paraphrase/reasoning case: train | eval
    explicit: str | None = None  # the same edit in the template grammar (None: the instruction is template)

    @property
    def explicit_instruction(self) -> str:
        """What a decomposer should answer: the edit in the editor's template grammar."""
        return self.instruction if self.explicit is None else self.explicit

    def to_dict(self) -> dict:
        # template cases are written exactly as version 1 wrote them, so old files and figures reproduce
        d = {"version": 1 if self.phrasing == "template" else CASES_VERSION, "case_id": self.case_id,
             "kind": self.kind, "instruction": self.instruction,
             "source": self.source.to_dict(), "target": self.target.to_dict(),
             "touched": [list(c) for c in self.touched], "ops": [op.to_dict() for op in self.ops]}
        if self.world != DEFAULT_WORLD:
            d["world"] = self.world.to_dict()
        if self.phrasing != "template":
            d["phrasing"], d["split"], d["explicit"] = self.phrasing, self.split, self.explicit
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EditCase":
        if not isinstance(d, dict):
            raise ValueError("a case is a JSON object")
        if d.get("version") not in READ_VERSIONS:
            raise ValueError(f"case version {d.get('version')!r} is not supported; write \"version\": {CASES_VERSION}")
        missing = [k for k in ("case_id", "kind", "instruction", "source", "ops") if k not in d]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if d["kind"] not in KINDS:
            raise ValueError(f"kind {d['kind']!r} is not one of {', '.join(KINDS)}")
        world = WorldConfig.from_dict(d["world"]) if d.get("world") else DEFAULT_WORLD
        source = Scene.from_dict(d["source"]).validate(world)
        ops = tuple(EditOp.from_dict(o) for o in d["ops"])
        if not ops:
            raise ValueError("ops is empty: a case requests at least one change")
        target = Scene.from_dict(d["target"]).validate(world) if d.get("target") else apply_ops(source, ops, world)
        touched = tuple(tuple(int(x) for x in c) for c in d["touched"]) if d.get("touched") is not None \
            else touched_cells(source, ops, world)
        phrasing = d.get("phrasing", "template")
        if phrasing not in PHRASINGS:
            raise ValueError(f"phrasing {phrasing!r} is not one of {', '.join(PHRASINGS)}")
        explicit = str(d["explicit"]) if d.get("explicit") is not None else None
        return cls(str(d["case_id"]), d["kind"], str(d["instruction"]), source, target, touched, ops, world,
                   phrasing, d.get("split"), explicit)


# ----------------------------------------------------------------------------- semantics of ops

def apply_fixed_ops(source: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> Scene:
    """``source`` after the recolour/move/remove ops (the parts of an edit whose result is unique)."""
    objs = {o.cell: o for o in source.objects}
    moved = []
    for op in ops:
        if op.kind == "add":
            continue
        if op.cell not in objs:
            raise ValueError(f"{op.kind} op refers to empty cell {op.cell}")
        if op.kind == "recolour":
            objs[op.cell] = objs[op.cell].replace(colour=op.colour)
        elif op.kind == "remove":
            del objs[op.cell]
        elif op.kind == "move":
            moved.append(objs.pop(op.cell).replace(row=op.to_cell[0], col=op.to_cell[1]))
    for obj in moved:
        if obj.cell in objs or not (0 <= obj.row < world.grid and 0 <= obj.col < world.grid):
            raise ValueError(f"move into {obj.cell}: the cell is taken or outside the grid")
        objs[obj.cell] = obj
    return Scene(tuple(objs.values()))


def apply_ops(source: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> Scene:
    """The canonical target: fixed ops, then added objects in the first free cells in reading order."""
    scene = apply_fixed_ops(source, ops, world)
    free = scene.free_cells(world)
    added = []
    for op in ops:
        if op.kind == "add":
            for _ in range(op.count):
                if not free:
                    raise ValueError("add op: not enough free cells")
                r, c = free.pop(0)
                added.append(ShapeObject(r, c, op.shape, op.colour, world.object_size))
    return Scene(scene.objects + tuple(added))


def touched_cells(source: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> tuple[tuple[int, int], ...]:
    """Cells an edit may change: the cells of recolour/move/remove, and for adds every cell free after them."""
    cells = set()
    for op in ops:
        if op.cell is not None:
            cells.add(op.cell)
        if op.to_cell is not None:
            cells.add(op.to_cell)
    if any(op.kind == "add" for op in ops):
        cells.update(apply_fixed_ops(source, ops, world).free_cells(world))
    return tuple(sorted(cells))


# ----------------------------------------------------------------------------- generation

def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _candidates(scene, rng, world, exclude, extra):
    """(object, reference) pairs in random order, for objects not excluded that can be referred to."""
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[int(i)]
        if obj.cell in exclude:
            continue
        ref = describe(obj, scene, rng, world, extra)
        if ref is not None:
            yield obj, ref


# Each op maker returns (op, instruction text, reference phrase or None), or None when the scene cannot take it.

def _recolour(scene, rng, world, exclude=(), extra=()):
    for obj, ref in _candidates(scene, rng, world, exclude, extra):
        colours = [c for c in world.colour_names if c != obj.colour]
        new = colours[int(rng.integers(len(colours)))]
        verb = ("make", "turn")[int(rng.integers(2))]
        return EditOp("recolour", obj.cell, colour=new), f"{verb} {ref} {new}", ref
    return None


def _move(scene, rng, world, exclude=(), extra=()):
    taken = scene.occupied() | set(exclude)
    for obj, ref in _candidates(scene, rng, world, exclude, extra):
        options = []
        for name, (dr, dc) in DIRECTIONS.items():
            r, c = obj.row + dr, obj.col + dc
            if 0 <= r < world.grid and 0 <= c < world.grid and (r, c) not in taken:
                options.append((name, (r, c)))
        if options:
            name, to = options[int(rng.integers(len(options)))]
            where = f"to the {name}" if name in ("left", "right") else name
            return EditOp("move", obj.cell, to_cell=to), f"move {ref} {where}", ref
    return None


def _remove(scene, rng, world, exclude=(), extra=()):
    for obj, ref in _candidates(scene, rng, world, exclude, extra):
        return EditOp("remove", obj.cell), f"remove {ref}", ref
    return None


def _add(scene, rng, world, free):
    if free < 1:
        return None
    n = int(rng.integers(1, min(MAX_ADD, free) + 1))
    shape = world.shapes[int(rng.integers(len(world.shapes)))]
    colour = world.colour_names[int(rng.integers(len(world.colours)))]
    number = ("a" if rng.random() < 0.5 else "one") if n == 1 else NUMBER_WORDS.get(n, str(n))
    return EditOp("add", shape=shape, colour=colour, count=n), f"add {number} {colour} {_plural(shape, n)}", None


_OBJECT_OPS = {"recolour": _recolour, "move": _move, "remove": _remove}


def _compound(scene, rng, world):
    """Two ops on different objects. The second reference must also be unambiguous after the first op,
    and no reference may be confusable with objects an add brings in (their cells are free to choose)."""
    pairs = [(a, b) for a in OP_KINDS for b in OP_KINDS if not (a == b == "add")]
    a, b = pairs[int(rng.integers(len(pairs)))]
    if "add" in (a, b):
        other = b if a == "add" else a
        # leave room for the other op: a move needs its free cell, a remove frees one
        add = _add(scene, rng, world, len(scene.free_cells(world)) - (other == "move"))
        if add is None:
            return None
        made = _OBJECT_OPS[other](scene, rng, world, extra=[(add[0].shape, add[0].colour)])
        if made is None:
            return None
        return [add, made] if a == "add" else [made, add]
    first = _OBJECT_OPS[a](scene, rng, world)
    if first is None:
        return None
    op = first[0]
    after = apply_fixed_ops(scene, [op], world)
    exclude = {c for c in (op.cell, op.to_cell) if c is not None}
    for _ in range(8):
        second = _OBJECT_OPS[b](scene, rng, world, exclude)
        if second is None:
            return None
        obj = scene.at(second[0].cell)
        if resolve(second[2], after, world) == [obj]:
            return [first, second]
    return None


def _ops_for_kind(kind, scene, rng, world):
    if kind == "colour":
        made = [_recolour(scene, rng, world)]
    elif kind == "position":
        made = [_move(scene, rng, world)]
    elif kind == "count":
        made = [_add(scene, rng, world, len(scene.free_cells(world))) if rng.random() < 0.5
                else _remove(scene, rng, world)]
    elif kind == "compound":
        made = _compound(scene, rng, world)
    else:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    if made is None or any(m is None for m in made):
        return None
    ops = tuple(m[0] for m in made)
    try:
        target = apply_ops(scene, ops, world)  # also rejects add counts that no longer fit
    except ValueError:
        return None
    joiner = (" and ", ", ")[int(rng.integers(2))]
    return ops, joiner.join(m[1] for m in made), target, [(m[0], m[2]) for m in made]


def _make_template(case_id, kind, rng, world, max_tries):
    """(case, [(op, reference or None)]) of ``kind`` on a fresh random scene (scenes that cannot take the edit
    are redrawn)."""
    for _ in range(max_tries):
        scene = random_scene(rng, world, n_objects=None if kind != "compound" else
                             int(rng.integers(max(2, world.min_objects), world.max_objects + 1)))
        made = _ops_for_kind(kind, scene, rng, world)
        if made is not None:
            ops, instruction, target, parts = made
            case = EditCase(case_id, kind, instruction, scene, target, touched_cells(scene, ops, world), ops, world)
            return case, parts
    raise RuntimeError(f"could not generate a {kind} case in {max_tries} tries; the world is too crowded or too small")


def make_case(case_id: str, kind: str, rng: np.random.Generator, world: WorldConfig = DEFAULT_WORLD,
              max_tries: int = 200) -> EditCase:
    """One template case of ``kind`` on a fresh random scene (scenes that cannot take the edit are redrawn)."""
    return _make_template(case_id, kind, rng, world, max_tries)[0]


def _phrased_case(seed: int, i: int, kind: str, phrasing: str, split: str, world: WorldConfig) -> EditCase:
    base_id = f"s{seed}-{i:05d}"
    if phrasing == "template":
        return make_case(base_id, kind, np.random.default_rng([seed, i]), world)
    if phrasing == "paraphrase":
        # the template case's scene and ops, reworded from a stream of its own
        case, parts = _make_template(base_id + "p", kind, np.random.default_rng([seed, i]), world, 200)
        text = paraphrase(parts, np.random.default_rng([seed, i, 1]), split)
        return replace(case, instruction=text, phrasing="paraphrase", split=split, explicit=case.instruction)
    if phrasing == "reasoning":
        from .reasoning import make_reasoning_case

        return make_reasoning_case(base_id + "r", kind, np.random.default_rng([seed, i, 2]), split, world)
    raise ValueError(f"unknown phrasing {phrasing!r}; phrasings: {', '.join(PHRASINGS)}, mixed")


def generate_cases(n: int, seed: int = 0, kinds=None, world: WorldConfig = DEFAULT_WORLD,
                   phrasing: str = "template", split: str = "eval") -> list[EditCase]:
    """``n`` cases, kinds cycling in order (balanced). Case ``i`` depends only on (seed, i, its kind, phrasing,
    split), so a shorter list is a prefix of a longer one.

    ``phrasing``: ``template`` (the editor's grammar), ``paraphrase`` (open wording of the template case with the
    same seed and index: same scene, same ops), ``reasoning`` (what to change is read off the scene) or
    ``mixed`` (the three in turn, each kind under each phrasing). ``split``: the wording pool of paraphrase and
    reasoning cases: ``train`` never uses a held-out verb or frame, ``eval`` always uses at least one
    (cogniedit.shapes.phrasing). Template cases ignore it."""
    kinds = tuple(kinds) if kinds else KINDS
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown kind(s) {bad}; kinds: {', '.join(KINDS)}")
    if phrasing not in PHRASINGS + ("mixed",):
        raise ValueError(f"unknown phrasing {phrasing!r}; phrasings: {', '.join(PHRASINGS)}, mixed")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    cases = []
    for i in range(n):
        chosen = PHRASINGS[(i // len(kinds)) % len(PHRASINGS)] if phrasing == "mixed" else phrasing
        cases.append(_phrased_case(seed, i, kinds[i % len(kinds)], chosen, split, world))
    return cases


# ----------------------------------------------------------------------------- JSONL

def write_jsonl(path, cases) -> None:
    """Write cases one JSON object per line, atomically (temp file + os.replace)."""
    atomic_write(path, lambda f: f.writelines(json.dumps(c.to_dict(), sort_keys=True) + "\n" for c in cases))


def read_jsonl(path) -> list[EditCase]:
    """Read a case file; a malformed line raises ValueError naming the file and line."""
    cases = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                cases.append(EditCase.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path} line {lineno}: {exc} (schema: docs/shapeedit.md)") from None
    return cases
