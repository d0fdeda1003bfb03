"""Does a model's answer keep the user's own attribute words?

The prompt asks the model to keep every colour, count, position and object word of the instruction.
A model may legitimately resolve a reference ("the same colour as the square" -> "blue") and so drop
some of them, but an answer that keeps fewer than half of the user's attribute phrases has replaced
the instruction rather than explained it: the parser treats it as a failed decomposition.

Phrases are compared by their content words, forgiving case, plurals ("circles" = "circle"), digits
versus number words ("2" = "two") and British/American spellings ("center" = "centre").
"""

from __future__ import annotations

import re

from .rules import find_focus

MIN_KEPT_SHARE = 0.5  # an answer must keep at least half of the instruction's attribute phrases

_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty").split()
_SPELLINGS = {"center": "centre", "centered": "centred", "color": "colour", "colors": "colours", "gray": "grey",
              "colored": "coloured"}
_FILLER = frozenset("a an the in on at of to from into onto by corner side part area region edge half".split())
_LETTERS_OR_DIGITS = re.compile(r"[^\W_]+")


def _forms(word: str) -> set[str]:
    word = _SPELLINGS.get(word.lower(), word.lower())
    if word in _NUMBERS:
        word = str(_NUMBERS.index(word))
    forms = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
    return forms


def _key_words(phrase: str) -> list[str]:
    words = [w.lower() for w in _LETTERS_OR_DIGITS.findall(phrase)]
    return [w for w in words if w not in _FILLER] or words


def dropped_phrases(instruction: str, answer: str) -> tuple[list[str], int]:
    """(the instruction's attribute phrases missing from `answer`, how many it has in all)."""
    present = set()
    for word in _LETTERS_OR_DIGITS.findall(answer):
        present |= _forms(word)
    phrases = list(dict.fromkeys(p.text.lower() for p in find_focus(instruction)))
    dropped = [p for p in phrases if not all(_forms(w) & present for w in _key_words(p))]
    return dropped, len(phrases)


def keeps_enough(dropped: int, total: int) -> bool:
    return total == 0 or (total - dropped) >= MIN_KEPT_SHARE * total
