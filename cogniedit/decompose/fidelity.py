"""Does a model's answer keep to the user's instruction?

The prompt asks the model to keep the instruction's colour, count, position and object words. A good
model may still drop some of them for a reason: it resolves a reference ("the thing in the centre" ->
"the yellow triangle", "the same colour as the square" -> "blue") with what it saw, and what it saw is in
its own scene description (<info>) and reasoning (<think>). An answer is a failed decomposition when

- it drops some of the user's attribute phrases and brings in colours or objects that neither the
  instruction nor the model's own description of the scene mention (the user's "red" became "crimson",
  "the purple circle" became "the green square"), or
- it drops all of them and names nothing from the scene instead ("delete everything and draw a cat").

Phrases are compared by their content words, forgiving case, plurals ("circles" = "circle"), digits
versus number words ("2" = "two" = "a pair"), superlatives ("leftmost" = "left", "highest" = "top") and
British/American spellings ("center" = "centre"). A hostile server
that knows this rule can still write a matching scene description, and a new position or count is not
checked against the scene (an answer may derive it from the image's geometry): the rule catches replaced
instructions, not a server that lies consistently (docs/security.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .rules import find_focus

_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty").split()
# one spelling per meaning: an editor's grammar says "left" where people write "leftmost", "two" for "a pair"
_SAME = {"center": "centre", "centered": "centred", "middle": "centre", "color": "colour", "colors": "colours",
         "gray": "grey", "colored": "coloured", "leftmost": "left", "rightmost": "right", "topmost": "top",
         "highest": "top", "uppermost": "top", "upper": "top", "bottommost": "bottom", "lowest": "bottom",
         "lower": "bottom", "pair": "two", "couple": "two", "twice": "two", "single": "one", "once": "one",
         "dozen": "twelve", "leftwards": "left", "rightwards": "right", "upwards": "up", "downwards": "down"}
# Positions and counts an answer adds may come from the image's geometry or from counting, which a scene
# description need not spell out ("row 1, column 0" is "left"); colours and objects must be in it.
_MUST_BE_SEEN = ("colour", "other")
_FILLER = frozenset("a an the in on at of to from into onto by corner side part area region edge half".split())
_LETTERS_OR_DIGITS = re.compile(r"[^\W_]+")


def _forms(word: str) -> set[str]:
    word = _SAME.get(word.lower(), word.lower())
    if word in _NUMBERS:
        word = str(_NUMBERS.index(word))
    forms = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
    return forms


def _vocabulary(text: str) -> set[str]:
    words = set()
    for word in _LETTERS_OR_DIGITS.findall(text):
        words |= _forms(word)
    return words


def _phrases(text: str, kinds=None) -> list[str]:
    return list(dict.fromkeys(p.text.lower() for p in find_focus(text) if kinds is None or p.kind in kinds))


def _mentioned(phrase: str, vocabulary: set[str]) -> bool:
    words = [w.lower() for w in _LETTERS_OR_DIGITS.findall(phrase)]
    key = [w for w in words if w not in _FILLER] or words
    return all(_forms(w) & vocabulary for w in key)


@dataclass(frozen=True)
class Fidelity:
    dropped: list[str]      # the instruction's attribute phrases the answer does not contain
    total: int              # the instruction's attribute phrases
    ungrounded: list[str]   # the answer's new colour/object phrases found neither in the instruction nor the scene text
    grounded_new: int       # the answer's new attribute phrases that the scene text mentions

    @property
    def failed(self) -> bool:
        if self.dropped and self.ungrounded:
            return True
        return self.total > 0 and len(self.dropped) == self.total and not self.grounded_new


def judge(instruction: str, answer: str, scene_text: str = "") -> Fidelity:
    """How `answer` treats the attribute phrases of `instruction`; `scene_text` is the model's own
    <info> and <think>, where a resolved reference comes from."""
    said, seen, answered = _vocabulary(instruction), _vocabulary(scene_text), _vocabulary(answer)
    dropped = [p for p in _phrases(instruction) if not _mentioned(p, answered)]
    new = [p for p in _phrases(answer) if not _mentioned(p, said)]
    grounded_new = sum(_mentioned(p, seen) for p in new)
    ungrounded = [p for p in _phrases(answer, _MUST_BE_SEEN) if not _mentioned(p, said) and not _mentioned(p, seen)]
    return Fidelity(dropped=dropped, total=len(_phrases(instruction)), ungrounded=ungrounded, grounded_new=grounded_new)
