"""Beams where the greedy answer does not read: a second chance before the grammar check falls back.

When the decomposer's greedy ``<answer>`` does not read in the editor's grammar on its own ``<info>``, the check
(``answer_check``) would hand the editor the rules' text, which on an instruction that needs the image is
almost always wrong. Instead the same backend is asked for ``beams`` beam-search answers of the same prompt, and
the first whose answer reads on its own ``<info>`` is used (route ``beam``). Only such cases pay for the beams:
6 / 15 / 33 % of template / paraphrase / reasoning cases with the shipped decomposer, which made decoding 1.8x /
2.8x / 4.6x slower on average and its answers right on 96.4 / 74.2 / 45.8 % instead of 92.0 / 66.6 / 37.0 %
(development seed 4242 first, then the evaluation cases; docs/shapeedit-decomposer.md). It needs nothing the
pipeline lacks at run time: the instruction, the image and the model's own texts. The CogniEdit editor and the
trainer's rollouts (``training/decomposition.py``) both check this way, so training edits as inference does.
"""

from __future__ import annotations

from ...decompose.api import model_request
from ...decompose.parser import decomposition_from_answer
from ...decompose.settings import DecomposeSettings
from ...decompose.types import Decomposition
from ..scene import DEFAULT_WORLD, WorldConfig
from .answer_check import check_decomposition

DEFAULT_BEAMS = 4


def offers_beams(backend) -> bool:
    return callable(getattr(backend, "beam_answers", None))


def check_with_beams(decomposition: Decomposition, image, instruction: str, backend, beams: int = DEFAULT_BEAMS,
                     world: WorldConfig = DEFAULT_WORLD,
                     settings: DecomposeSettings | None = None) -> tuple[Decomposition, str]:
    """``answer_check.check_decomposition``; where it would fall back although the model answered, the first
    readable of the backend's beams instead (route ``beam``). ``beams`` 0, a backend without beams or a backend
    that failed (no answer at all) leave the check as it is. ``settings``: the ones the decomposition was made
    with, so the beams see the same prompt and image."""
    checked, choice = check_decomposition(decomposition, instruction, world)
    if choice != "fallback" or not beams or not decomposition.raw or not offers_beams(backend):
        return checked, choice
    beam = readable_beam(backend, image, instruction, beams, world, settings)
    return (beam, "beam") if beam is not None else (checked, choice)


def readable_beam(backend, image, instruction: str, beams: int = DEFAULT_BEAMS, world: WorldConfig = DEFAULT_WORLD,
                  settings: DecomposeSettings | None = None) -> Decomposition | None:
    """The first of the backend's ``beams`` answers that reads in the grammar on its own ``<info>`` (checked as
    ``answer_check`` checks the greedy one), or None when none does."""
    settings = settings or DecomposeSettings()
    messages, conditioned = model_request(image, instruction, settings)
    for raw in backend.beam_answers(messages, conditioned, settings, beams):
        checked, choice = check_decomposition(decomposition_from_answer(raw, instruction), instruction, world)
        if choice == "answer":
            return checked
    return None
