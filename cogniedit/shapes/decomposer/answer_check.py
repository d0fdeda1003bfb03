"""The ShapeEdit editor's check of a decomposition, on the scene the decomposer itself described.

The editor understands one grammar (``docs/shapeedit.md``); a decomposition is only useful to it when its
``<answer>`` reads in that grammar. What the check may use is what the pipeline has at run time: the user's
instruction, the rules, and the decomposition's own ``<info>`` (never the case's true scene). Per instruction:

1. ``explicit``: the rules' rewrite of the instruction (``decompose_rules``: no image) already reads in the grammar
   on the described scene, every reference naming exactly one object. The instruction needed no image; the
   rules' text goes to the editor (a small model's re-wording of an explicit edit can only lose).
2. ``answer``: otherwise the model's ``<answer>`` reads in the grammar on the described scene: it goes to the editor.
3. ``fallback``: neither reads (or the ``<info>`` is not a scene): the rules' text goes, marked as a fallback.
   The editor first gives such a case a second chance, ``beam`` (``beams.check_with_beams``).

``scene_from_info`` parses the ``<info>`` format of ``stages.info_text``.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ...decompose.rules import decompose_rules
from ...decompose.types import Decomposition
from ..refer import cell_name
from ..scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig
from ..template_reader import read_template

CHOICES = ("explicit", "answer", "beam", "fallback")  # beam: the editor's second chance (``beams``)


def checks_answers(backend) -> bool:
    """Whether a decomposer's answers are checked by default: a model's are (``uses_model``, as ``decompose`` reads
    it), the rules' never (they are the check's own fallback)."""
    if backend is None or isinstance(backend, str):
        return backend not in (None, "rules")
    return bool(getattr(backend, "uses_model", True))


def scene_from_info(info: str, world: WorldConfig = DEFAULT_WORLD) -> Scene | None:
    """The scene an ``<info>`` text lists ("red circle in the top left corner; ..."), or None when any entry is
    not in that form, names a cell twice or is empty."""
    cells = {cell_name((r, c), world): (r, c) for r in range(world.grid) for c in range(world.grid)}
    colours, shapes = "|".join(world.colour_names), "|".join(world.shapes)
    objects, seen = [], set()
    for entry in (e.strip() for e in info.split(";")):
        m = re.fullmatch(rf"({colours}) ({shapes}) in the (.+)", entry)
        if m is None or m[3] not in cells or cells[m[3]] in seen:
            return None
        seen.add(cells[m[3]])
        objects.append(ShapeObject(*cells[m[3]], shape=m[2], colour=m[1]))
    if not objects:
        return None
    try:
        return Scene(tuple(objects)).validate(world)
    except ValueError:
        return None


def reads_on(text: str, scene: Scene | None, world: WorldConfig = DEFAULT_WORLD) -> bool:
    if scene is None or not text.strip():
        return False
    try:
        read_template(text, scene, world)
    except ValueError:
        return False
    return True


def check_decomposition(decomposition: Decomposition, instruction: str,
                        world: WorldConfig = DEFAULT_WORLD) -> tuple[Decomposition, str]:
    """(the decomposition the editor should follow, which of ``CHOICES`` it is)."""
    scene = scene_from_info(decomposition.description, world)
    rules = decompose_rules(instruction)
    if reads_on(rules.enriched_instruction, scene, world):
        note = "the instruction is explicit on the described scene: the rules' text is used"
        return replace(rules, warnings=[*rules.warnings, note], raw=decomposition.raw,
                       description=decomposition.description, reasoning=decomposition.reasoning), "explicit"
    if decomposition.source == "mllm" and reads_on(decomposition.enriched_instruction, scene, world):
        return decomposition, "answer"
    why = ("the <info> stage is not a scene" if scene is None
           else "the <answer> does not read in the editor's grammar on the described scene")
    # the decomposition's own warnings first: when the backend already failed, they name the cause
    return replace(rules, source="fallback", warnings=[*decomposition.warnings, f"{why}: the rules' text is used"],
                   raw=decomposition.raw, description=decomposition.description,
                   reasoning=decomposition.reasoning), "fallback"
