"""The decomposer's four stages for a ShapeEdit case, and the way back from an answer to ops.

``stages(scene, ops)`` writes what the trained decomposer must say (its training targets):

* ``<info>``: every object, in reading order: ``red circle in the top left corner; blue square in the centre``;
* ``<think>``: each requested change on the object it names, by cell: ``the red circle in the top left corner
  becomes blue; two yellow triangles are added``;
* ``<answer>``: one explicit instruction in the shipped editor's template grammar (``docs/shapeedit.md``):
  ``make the circle blue and add two yellow triangles``, the case generator's own explicit form
  (``reasoning.explicit_instruction``: shortest unambiguous references, the cell form where those would be
  ambiguous after the other changes or confusable with an added object);
* ``<object>``: one line per change, the span of the answer after its verb (the target and its new attribute):
  ``the circle blue`` / ``two yellow triangles``.

``answer_ops(answer, scene)`` reads an answer back into ops on the source scene (``template_reader``; None when it
is not in the grammar or names no single object), so a decomposition can be scored exactly against a case's ops.
"""

from __future__ import annotations

from ..cases import NUMBER_WORDS, EditOp
from ..phrasing import direction_of
from ..reasoning import explicit_instruction
from ..refer import cell_name
from ..scene import DEFAULT_WORLD, Scene, WorldConfig
from ..template_reader import read_template

STAGE_FORMAT = "\n".join(f"<{tag}>{{{tag}}}</{tag}>" for tag in ("info", "think", "answer", "object"))


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _number(n: int) -> str:
    return NUMBER_WORDS.get(n, str(n))


def _full_name(obj, world) -> str:
    return f"{obj.colour} {obj.shape} in the {cell_name(obj.cell, world)}"


def info_text(scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> str:
    return "; ".join(_full_name(o, world) for o in scene.objects)


def think_clause(scene: Scene, op: EditOp, world: WorldConfig = DEFAULT_WORLD) -> str:
    """One change on the object it names, by cell: what the reasoning stage concludes."""
    if op.kind == "add":
        return f"{_number(op.count)} {op.colour} {_plural(op.shape, op.count)} {'is' if op.count == 1 else 'are'} added"
    obj = scene.at(op.cell)
    if obj is None:
        raise ValueError(f"{op.kind} op refers to empty cell {op.cell}")
    name = f"the {_full_name(obj, world)}"
    if op.kind == "recolour":
        return f"{name} becomes {op.colour}"
    if op.kind == "move":
        return f"{name} moves {direction_of(op)} to the {cell_name(op.to_cell, world)}"
    if op.kind == "remove":
        return f"{name} is removed"
    raise ValueError(f"unknown op kind {op.kind!r}")


def stages(scene: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> dict[str, str]:
    """The four stage texts (info, think, answer, object) for ``ops`` on ``scene``. The answer is
    ``reasoning.explicit_instruction`` (the case generator's own explicit form: clauses joined by " and ")."""
    answer = explicit_instruction(scene, ops, world)
    parts = answer.split(" and ")
    if len(parts) != len(ops):
        raise ValueError(f"cannot split the explicit instruction {answer!r} into its {len(ops)} clauses")
    return {"info": info_text(scene, world), "think": "; ".join(think_clause(scene, op, world) for op in ops),
            "answer": answer, "object": "\n".join(part.split(" ", 1)[1] for part in parts)}


def stage_text(scene: Scene, ops, world: WorldConfig = DEFAULT_WORLD) -> str:
    """The whole answer the decomposer is trained to write."""
    return STAGE_FORMAT.format(**stages(scene, ops, world))


# ----------------------------------------------------------------------------- answer -> ops

def answer_ops(answer: str, scene: Scene, world: WorldConfig = DEFAULT_WORLD) -> tuple[EditOp, ...] | None:
    """The ops an answer in the editor's grammar asks for on ``scene`` (``template_reader``); None when it is not in
    the grammar or a reference names no single object."""
    try:
        return read_template(answer, scene, world)
    except ValueError:
        return None


def same_ops(a, b) -> bool:
    """Equal as multisets of ops (the order of independent changes does not matter)."""
    if a is None or b is None:
        return False
    key = lambda op: repr(sorted(op.to_dict().items()))  # noqa: E731
    return sorted(map(key, a)) == sorted(map(key, b))
