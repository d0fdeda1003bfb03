"""ShapeEdit scenes: a few coloured shapes on a grid, one object per cell, as frozen dataclasses with JSON I/O.

Every world parameter lives in ``WorldConfig``; the defaults (48x48 image, 3x3 grid of 16-px cells, 1-4
objects, 3 shapes, 6 colours, one 12-px object size) are sized for a small editor trained on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .palette import BACKGROUND, COLOURS, SHAPES

SCENE_VERSION = 1


@dataclass(frozen=True)
class WorldConfig:
    """All parameters of a ShapeEdit world. ``image_size == grid * cell``."""

    grid: int = 3
    cell: int = 16
    object_size: int = 12
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[tuple[str, tuple[int, int, int]], ...] = tuple(COLOURS.items())
    background: tuple[int, int, int] = BACKGROUND
    # Chance that a new object copies the colour+shape of one already placed, so that scenes often need a
    # position word ("the left red circle") to single an object out: the fine-grained case CogniEdit targets.
    twin_prob: float = 0.25

    def __post_init__(self):
        if self.object_size > self.cell:
            raise ValueError(f"WorldConfig: object_size {self.object_size} exceeds cell {self.cell}; lower it")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError(f"WorldConfig: need 1 <= min_objects <= max_objects <= grid*grid, got "
                             f"{self.min_objects}, {self.max_objects}, grid {self.grid}")

    @property
    def image_size(self) -> int:
        return self.grid * self.cell

    @property
    def colour_map(self) -> dict[str, tuple[int, int, int]]:
        return dict(self.colours)

    @property
    def colour_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.colours)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["colours"] = [[name, list(rgb)] for name, rgb in self.colours]  # a list: order survives sort_keys
        d["shapes"], d["background"] = list(self.shapes), list(self.background)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WorldConfig":
        d = dict(d)
        if "colours" in d:
            pairs = d["colours"].items() if isinstance(d["colours"], dict) else d["colours"]
            d["colours"] = tuple((str(k), tuple(int(x) for x in v)) for k, v in pairs)
        if "shapes" in d:
            d["shapes"] = tuple(d["shapes"])
        if "background" in d:
            d["background"] = tuple(int(x) for x in d["background"])
        return cls(**d)


DEFAULT_WORLD = WorldConfig()


@dataclass(frozen=True, order=True)
class ShapeObject:
    """One object: it sits centred in grid cell (row, col). ``size`` is its bounding-box side in pixels."""

    row: int
    col: int
    shape: str
    colour: str
    size: int = DEFAULT_WORLD.object_size

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def replace(self, **changes) -> "ShapeObject":
        return ShapeObject(**{**asdict(self), **changes})


@dataclass(frozen=True)
class Scene:
    """An unordered set of objects, stored sorted by (row, col, ...) so equal scenes compare equal."""

    objects: tuple[ShapeObject, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(sorted(self.objects)))

    def at(self, cell) -> ShapeObject | None:
        for obj in self.objects:
            if obj.cell == tuple(cell):
                return obj
        return None

    def occupied(self) -> set[tuple[int, int]]:
        return {o.cell for o in self.objects}

    def free_cells(self, world: WorldConfig = DEFAULT_WORLD) -> list[tuple[int, int]]:
        """Free cells in reading order (row-major)."""
        taken = self.occupied()
        return [(r, c) for r in range(world.grid) for c in range(world.grid) if (r, c) not in taken]

    def validate(self, world: WorldConfig = DEFAULT_WORLD) -> "Scene":
        """Raise ValueError naming the problem if the scene does not fit ``world``; return self."""
        seen = set()
        for o in self.objects:
            if not (0 <= o.row < world.grid and 0 <= o.col < world.grid):
                raise ValueError(f"object {o} lies outside the {world.grid}x{world.grid} grid")
            if o.shape not in world.shapes:
                raise ValueError(f"unknown shape {o.shape!r}; known: {', '.join(world.shapes)}")
            if o.colour not in world.colour_names:
                raise ValueError(f"unknown colour {o.colour!r}; known: {', '.join(world.colour_names)}")
            if o.cell in seen:
                raise ValueError(f"two objects in cell {o.cell}; a cell holds at most one object")
            seen.add(o.cell)
        return self

    def to_dict(self) -> dict:
        return {"version": SCENE_VERSION, "objects": [asdict(o) for o in self.objects]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        if not isinstance(d, dict) or not isinstance(d.get("objects"), list):
            raise ValueError('a scene is a JSON object {"version": 1, "objects": [{"shape", "colour", "row", '
                             '"col", "size"}, ...]}')
        if d.get("version", SCENE_VERSION) != SCENE_VERSION:
            raise ValueError(f"scene version {d.get('version')} is not supported (this code reads {SCENE_VERSION})")
        objs = []
        for o in d["objects"]:
            try:
                objs.append(ShapeObject(row=int(o["row"]), col=int(o["col"]), shape=str(o["shape"]),
                                        colour=str(o.get("colour", o.get("color"))),
                                        size=int(o.get("size", DEFAULT_WORLD.object_size))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"scene object {o!r} needs shape, colour, row, col (and optional size): {exc}")
        return cls(tuple(objs))

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        return cls.from_dict(json.loads(text))


def as_rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def random_scene(seed_or_rng=None, world: WorldConfig = DEFAULT_WORLD, n_objects: int | None = None) -> Scene:
    """A random valid scene; the same seed gives the same scene."""
    rng = as_rng(seed_or_rng)
    n = int(rng.integers(world.min_objects, world.max_objects + 1)) if n_objects is None else int(n_objects)
    if not 0 <= n <= world.grid * world.grid:
        raise ValueError(f"n_objects={n} does not fit a {world.grid}x{world.grid} grid")
    cells = rng.permutation(world.grid * world.grid)[:n]
    objs: list[ShapeObject] = []
    for idx in cells:
        if objs and rng.random() < world.twin_prob:
            twin = objs[int(rng.integers(len(objs)))]
            shape, colour = twin.shape, twin.colour
        else:
            shape = world.shapes[int(rng.integers(len(world.shapes)))]
            colour = world.colour_names[int(rng.integers(len(world.colours)))]
        objs.append(ShapeObject(int(idx) // world.grid, int(idx) % world.grid, shape, colour, world.object_size))
    return Scene(tuple(objs))
