"""Open wordings of ShapeEdit edits: the ``paraphrase`` phrasing, and the word pools shared with ``reasoning``.

A paraphrase case has exactly the scene and ops of the template case with the same (seed, index); only the
words differ: verb synonyms, digits and number words, other reference and direction wordings, "please", "one
cell", passive frames, "and then" and sentence breaks. Every pool has a ``train`` part and a ``held_out`` part
(docs/shapeedit.md lists them): split ``train`` draws from the train parts only; split ``eval`` draws from both
and every eval instruction holds at least one held-out alternative, so evaluation wording is never a training
wording. Held-out alternatives are held out of every training pool (paraphrase and reasoning alike).
"""

from __future__ import annotations

import re

import numpy as np

SPLITS = ("train", "eval")

# slot -> (train alternatives, held-out alternatives)
Pool = tuple[tuple[str, ...], tuple[str, ...]]

# Imperative verbs, each written "<verb> {ref} <result>"; reasoning uses these too.
RECOLOUR_VERBS: Pool = (("make", "turn", "paint", "colour", "color", "recolour"), ("dye",))
MOVE_VERBS: Pool = (("move", "shift", "slide", "push"), ("nudge",))
REMOVE_VERBS: Pool = (("remove", "delete", "erase", "get rid of", "take away"), ("eliminate", "take out"))
ADD_VERBS: Pool = (("add", "draw", "insert"), ("include", "create"))

PARAPHRASE: dict[str, Pool] = {
    # whole-clause frames: {verb} is drawn from the pool above, {ref} {colour} {dir} {things} filled in
    "recolour": (("{verb} {ref} {colour}", "change {ref} to {colour}", "change the colour of {ref} to {colour}",
                  "{ref} should be {colour}", "{ref} should be painted {colour}", "have {ref} painted {colour}"),
                 ("switch {ref} to {colour}", "set the colour of {ref} to {colour}",
                  "{ref} needs to be coloured {colour}", "I want {ref} to be {colour}")),
    "move": (("{verb} {ref} {dir}", "{ref} should be moved {dir}", "have {ref} moved {dir}"),
             ("relocate {ref} {dir}", "{ref} needs to go {dir}")),
    "remove": (("{verb} {ref}", "{ref} should be removed", "have {ref} removed"),
               ("{ref} has to go", "{ref} must be deleted")),
    "add": (("{verb} {things}", "put {things} in the picture", "place {things} in the image",
             "add {things} to the picture", "{things} should be added"),
            ("{things} must be added", "put {things} somewhere in the picture")),
    # how many: {1, 2, 3} -> words; "a" before a colour is kept as in the template ("a orange circle")
    "count1": (("a", "one", "1", "a single"), ("just one",)),
    "count2": (("two", "2"), ("a pair of",)),
    "count3": (("three", "3"), ()),
    # directions: one cell, the only step the world has
    "left": (("to the left", "left", "one cell to the left", "one step to the left", "1 cell left",
              "a cell to the left"), ("leftwards", "by one cell to the left", "one space to the left")),
    "right": (("to the right", "right", "one cell to the right", "one step to the right", "1 cell right",
               "a cell to the right"), ("rightwards", "by one cell to the right", "one space to the right")),
    "up": (("up", "upwards", "one cell up", "up one cell", "one step up", "1 cell up"),
           ("up by one cell", "one space up")),
    "down": (("down", "downwards", "one cell down", "down one cell", "one step down", "1 cell down"),
             ("down by one cell", "one space down")),
    # a position word of the template reference ("the left red circle") written another way
    "ref_left": (("the left {x}", "the {x} on the left", "the leftmost {x}"), ("the {x} furthest to the left",)),
    "ref_right": (("the right {x}", "the {x} on the right", "the rightmost {x}"), ("the {x} furthest to the right",)),
    "ref_top": (("the top {x}", "the {x} at the top", "the topmost {x}"), ("the highest {x}",)),
    "ref_bottom": (("the bottom {x}", "the {x} at the bottom", "the bottommost {x}"), ("the lowest {x}",)),
    "centre": (("centre", "center"), ()),
    # politeness around the whole instruction
    "prefix": (("", "", "", "please ", "can you ", "could you ", "now "), ("kindly ", "I'd like you to ",
                                                                          "go ahead and ")),
    "suffix": (("", "", "", ".", " please", " please."), (" thanks", "!", ", thank you")),
    # between two clauses
    "joiner": ((" and ", ", ", " and then ", ", then ", ". Then ", "; ", " and also "),
               (". After that, ", " and afterwards ", ". Next, ")),
}

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
_POSITION_REF = re.compile(r"the (left|right|top|bottom) (.+)")


class Wording:
    """Draws wording alternatives for one case and remembers whether a held-out one was used."""

    def __init__(self, rng: np.random.Generator, split: str):
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.rng, self.split, self.used_held_out = rng, split, False

    def pick(self, pool: Pool) -> str:
        train, held = pool
        options = train + held if self.split == "eval" else train
        i = int(self.rng.integers(len(options)))
        if i >= len(train):
            self.used_held_out = True
        return options[i]

    def fill(self, frame: str, **values) -> str:
        """``frame`` with its placeholders filled; a value that is a pool is drawn only when its placeholder is
        there, so an unused draw never counts as held-out wording."""
        return frame.format(**{k: (self.pick(v) if isinstance(v, tuple) else v) for k, v in values.items()
                               if "{" + k + "}" in frame})

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)


def reword_reference(ref: str, words: Wording) -> str:
    """A template reference ("the left red circle", "the red circle in the centre") in other words."""
    m = _POSITION_REF.fullmatch(ref)
    if m and m.group(2).split()[-1] in ("circle", "square", "triangle"):
        return words.pick(PARAPHRASE[f"ref_{m.group(1)}"]).format(x=m.group(2))
    if ref.endswith(" in the centre"):
        return ref[:-len("centre")] + words.pick(PARAPHRASE["centre"])
    return ref


def _things(op, words: Wording) -> str:
    number = words.pick(PARAPHRASE[f"count{op.count}"])
    noun = op.shape if op.count == 1 else op.shape + "s"
    return f"{number} {op.colour} {noun}"


def is_imperative(clause: str) -> bool:
    """Whether a clause starts with its verb (so "please"/"could you" can go before it)."""
    return not clause.startswith(("the ", "The ", "I ", *(f"{n} " for n in ("a", "one", "1", "two", "2", "three",
                                                                             "3", "just", "a pair"))))


def paraphrase_clause(op, ref: str | None, words: Wording, direction: str | None = None) -> str:
    """One op (with its template reference) in open wording."""
    kind = op.kind
    frame = words.pick(PARAPHRASE[kind])
    verb_pool = {"recolour": RECOLOUR_VERBS, "move": MOVE_VERBS, "remove": REMOVE_VERBS, "add": ADD_VERBS}[kind]
    fill = {"verb": verb_pool}
    if kind == "add":
        fill["things"] = _things(op, words)
    else:
        fill["ref"] = reword_reference(ref, words)
    if kind == "recolour":
        fill["colour"] = op.colour
    if kind == "move":
        fill["dir"] = PARAPHRASE[direction]
    return words.fill(frame, **fill)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def polish(clauses: list[str], words: Wording, politeness: bool = True) -> str:
    """Join clauses with drawn joiners, add drawn politeness, capitalise sentence starts."""
    text = clauses[0]
    for clause in clauses[1:]:
        joiner = words.pick(PARAPHRASE["joiner"])
        text += joiner + clause
    if politeness and is_imperative(clauses[0]):
        prefix, suffix = words.pick(PARAPHRASE["prefix"]), words.pick(PARAPHRASE["suffix"])
        if prefix in ("can you ", "could you ") and suffix in ("", "."):
            suffix = "?"
        text = prefix + text + suffix
    elif politeness:
        text += words.pick(PARAPHRASE["suffix"]).replace(" please", "")
    if words.coin(0.3) or text.startswith("I"):
        text = _capitalise(text)
    return text


def direction_of(op) -> str:
    dr, dc = op.to_cell[0] - op.cell[0], op.to_cell[1] - op.cell[1]
    return {(0, -1): "left", (0, 1): "right", (-1, 0): "up", (1, 0): "down"}[(dr, dc)]


def paraphrase(parts, rng: np.random.Generator, split: str, max_tries: int = 50) -> str:
    """Open wording of a template edit. ``parts``: [(op, reference or None)] in clause order. In the eval split
    the wording is redrawn until it holds a held-out alternative (deterministic: one rng)."""
    for _ in range(max_tries):
        words = Wording(rng, split)
        clauses = [paraphrase_clause(op, ref, words, direction_of(op) if op.kind == "move" else None)
                   for op, ref in parts]
        text = polish(clauses, words)
        if split == "train" or words.used_held_out:
            return text
    return text
