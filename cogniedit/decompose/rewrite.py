"""Rewrite what needs no image into plain editing grammar: the rule decomposer's enriched instruction.

Each clause that is one recognisable edit of one plainly named thing becomes the plain form an instruction
editor is trained on (the ShapeEdit template grammar is one such):

    recolour  "make <ref> <colour>"        paint/colour/dye/turn/change ... to/set the colour of ... to/passive
    move      "move <ref> to the left|to the right|up|down"   shift/slide/push/nudge, "one cell", "leftwards"
    remove    "remove <ref>"               delete/erase/get rid of/take away/eliminate/passive/"has to go"
    add       "add <number word> <things>" draw/insert/put ... in the picture/passive; digits -> words

Politeness ("please", "could you", "thanks") goes, "and then" / sentence breaks become " and ", a position
said after the noun moves before it ("the cup on the left" -> "the left cup"), superlatives become position
words ("the leftmost cup" -> "the left cup"). A clause whose reference needs the image ("the shape left of the
blue square", "the only triangle", "the same colour as ...", "as many ... as ...") or that is not one of these
edits is kept word for word: nothing is invented.
"""

from __future__ import annotations

import re

from .rules import _VERB_AHEAD, COLOUR_RE, NUMBER_WORDS

_DIGIT_WORDS = {str(i): w for i, w in enumerate(NUMBER_WORDS)}
_COUNT_WORDS = {"a single": "one", "just one": "one", "single": "one", "a pair of": "two", "an": "one", "a": "a",
                **{w: w for w in NUMBER_WORDS}, **_DIGIT_WORDS}
_COUNT = "|".join(sorted(map(re.escape, _COUNT_WORDS), key=len, reverse=True))

# Words that make a reference (or the things added) depend on the image or on other objects: kept verbatim.
_NEEDS_IMAGE = {
    "same", "as", "like", "match", "matching", "only", "every", "all", "each", "except", "but", "whose", "which",
    "who", "than", "other", "others", "another", "more", "less", "fewer", "many", "much", "for", "appears", "once",
    "single", "lone", "sole", "of", "above", "below", "over", "under", "beneath", "next", "near", "between",
    "beside", "behind", "besides", "colour", "color", "shape", "shaped", "number", "one", "ones", "it", "its",
    "them", "they", "and", "or", "not", "no", "with", "without", "to", "from", "by", "if", "that", "where",
}
_SUPERLATIVE = {"leftmost": "left", "left-most": "left", "rightmost": "right", "right-most": "right",
                "topmost": "top", "top-most": "top", "highest": "top", "uppermost": "top", "bottommost": "bottom",
                "bottom-most": "bottom", "lowest": "bottom", "lowermost": "bottom"}
_AFTER_NOUN = re.compile(r"^(the .+?) (?:on the (left|right)|at the (top|bottom)|furthest to the (left|right))$")

_LEAD = re.compile(
    r"^(?:(?:please|kindly|now|just|also|then|next|finally|lastly|first|and|afterwards|after that|"
    r"(?:can|could|would|will) you(?: please)?|i'd like you to|i would like you to|i want you to|go ahead and)"
    r"[\s,]+)+", re.IGNORECASE)
_TAIL = re.compile(r"(?:[\s,]+(?:please|thanks|thank you|for me))*[\s.!?]*$", re.IGNORECASE)
_SPLIT = re.compile(
    r"\s*[.;!?]+\s+|\s*;\s*|\s*,\s*(?:and\s+)?(?:then\s+|after\s+that,?\s+|afterwards,?\s+)?"
    r"|\s+and\s+(?:then|also|afterwards|after\s+that),?\s+|\s+(?:and|then|afterwards)\s+", re.IGNORECASE)

MAX_REWRITE_CHARS = 2000
MAX_CLAUSE_PIECES = 4  # a clause spans at most this many comma/"and" pieces ("add a red, a blue and a ...")
_STRONG = re.compile(r"[.;!?]")
_DIRECTION = re.compile(
    r"(?:by\s+)?(?:(?:one|1|a)\s+(?:cell|step|space|square|position|place|spot)\s+)?"
    r"(?:to\s+the\s+(?P<x>left|right)|(?P<y>left|right|up|down)(?:wards?)?|(?P<z>up|down)ward)"
    r"(?:\s+(?:by\s+)?(?:one|1|a)\s+(?:cell|step|space|position|place|spot))?", re.IGNORECASE)
_CANONICAL_DIRECTION = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}

_RECOLOUR = "make|turn|paint|colou?r|recolou?r|dye|tint"
_MOVE = "move|shift|slide|push|nudge|drag|relocate|displace"
_REMOVE = "remove|delete|erase|eliminate|get rid of|take away|take out|discard"
_ADD = "add|put|place|insert|draw|include|create"
_BE = r"(?:should|must|needs? to|has to|have to|is to|ought to|will|shall|can)\s+be"
_PLACE = r"(?:\s+(?:somewhere\s+)?(?:in|into|to|on|onto)\s+the\s+(?:picture|image|scene|canvas|grid|photo)|\s+somewhere)?"


def plain_reference(ref: str) -> str | None:
    """``ref`` in plain form when it names a thing by its own words only, else None."""
    ref = re.sub(r"\s+", " ", ref.strip())
    if ref[:4].lower() == "the ":
        ref = "the " + ref[4:]
    m = _AFTER_NOUN.match(ref)
    if m:
        ref = f"the {m.group(2) or m.group(3) or m.group(4)} {m.group(1)[4:]}"
    words = ref.split(" ")
    if words[0] != "the" or not 2 <= len(words) <= 10:
        return None
    words = [_SUPERLATIVE.get(w.lower(), w) for w in words]
    if " in the " in " ".join(words):  # "the red circle in the top left corner": a cell of the picture
        head, _, cell = " ".join(words).partition(" in the ")
        body = head.split(" ")[1:]
        if not re.fullmatch(r"(?:(?:top|middle|bottom|upper|lower|center|centre)\s*)?(?:left|right|middle|centre|"
                            r"center)?(?:\s+corner)?", cell, re.IGNORECASE) or not cell:
            return None
        words = head.split(" ") + ["in", "the", "centre" if cell.lower() == "center" else cell]
    else:
        body = words[1:]
    if len(body) > 6:
        return None
    if any(w.lower() in _NEEDS_IMAGE or not re.fullmatch(r"[A-Za-z][A-Za-z'-]*", w) for w in body):
        return None
    return " ".join(words)


def _direction(text: str) -> str:
    m = _DIRECTION.fullmatch(text.strip())
    return _CANONICAL_DIRECTION[(m.group("x") or m.group("y") or m.group("z")).lower()]


def _things(text: str) -> str | None:
    """'2 yellow circles' -> 'two yellow circles'; None when the count or the things need the image."""
    m = re.fullmatch(rf"({_COUNT})\s+(.+)", text.strip(), re.IGNORECASE)
    if not m:
        return None
    words = m.group(2).split()
    if not 1 <= len(words) <= 4 or any(w.lower() in _NEEDS_IMAGE or not w.isalpha() for w in words):
        return None
    return f"{_COUNT_WORDS[m.group(1).lower()]} {' '.join(words)}"


def _recolour(m) -> str | None:
    ref = plain_reference(m.group("ref"))
    verb = m.group(0).split(" ", 1)[0].lower()
    return f"{verb if verb in ('make', 'turn') else 'make'} {ref} {m.group('c')}" if ref else None


def _move(m) -> str | None:
    ref = plain_reference(m.group("ref"))
    return f"move {ref} {_direction(m.group('d'))}" if ref else None


def _remove(m) -> str | None:
    ref = plain_reference(m.group("ref"))
    return f"remove {ref}" if ref else None


def _add(m) -> str | None:
    things = _things(m.group("t"))
    return f"add {things}" if things else None


_C = rf"(?P<c>{COLOUR_RE.pattern})"
_D = rf"(?P<d>{_DIRECTION.pattern})"
_T = rf"(?P<t>(?:{_COUNT})\s+[A-Za-z]+(?:\s+[A-Za-z]+){{0,3}}?)"
_PAINTED = r"(?:painted|coloured|colored|dyed|made|turned|recoloured|recolored)"
_MOVED = r"(?:moved|shifted|slid|pushed|nudged|dragged|relocated)"
_REMOVED = r"(?:removed|deleted|erased|eliminated|taken away|taken out)"
# (pattern, builder): the first pattern that matches and whose reference is plain wins
_FRAMES = [(re.compile(p, re.IGNORECASE), f) for p, f in [
    (rf"(?:change|set|switch) the colou?r of (?P<ref>.+?) (?:to|into) {_C}", _recolour),
    (rf"(?:change|switch|turn|set|{_RECOLOUR}) (?P<ref>.+?) (?:to|into|in) {_C}", _recolour),
    (rf"(?:{_RECOLOUR}) (?P<ref>.+?) {_C}", _recolour),
    (rf"give (?P<ref>.+?) an? {_C} colou?r", _recolour),
    (rf"(?P<ref>the .+?) {_BE} (?:{_PAINTED} )?{_C}", _recolour),
    (rf"have (?P<ref>the .+?) {_PAINTED} {_C}", _recolour),
    (rf"i(?:'d| would)? (?:want|like) (?P<ref>the .+?) to (?:be|become|turn) {_C}", _recolour),
    (rf"(?:{_MOVE}) (?P<ref>.+?) {_D}", _move),
    (rf"(?:{_MOVE}) (?P<d>left|right|up|down|upwards|downwards) (?P<ref>the .+)", _move),
    (rf"{_D},? (?:{_MOVE}) (?P<ref>the .+)", _move),
    (rf"(?P<ref>the .+?) {_BE} {_MOVED} {_D}", _move),
    (rf"have (?P<ref>the .+?) {_MOVED} {_D}", _move),
    (rf"(?P<ref>the .+?) (?:needs? to|has to|must|should) (?:go|move) {_D}", _move),
    (rf"(?:{_REMOVE}) (?P<ref>.+)", _remove),
    (rf"take (?P<ref>the .+?) (?:away|out)", _remove),
    (rf"(?P<ref>the .+?) {_BE} {_REMOVED}", _remove),
    (rf"have (?P<ref>the .+?) {_REMOVED}", _remove),
    (rf"(?P<ref>the .+?) (?:has to|must|should|needs? to) go(?: away)?", _remove),
    (rf"(?:{_ADD}) {_T}{_PLACE}", _add),
    (rf"{_T} {_BE} added{_PLACE}", _add),
]]


def plain_clause(clause: str) -> str | None:
    """One edit clause in plain grammar, or None when it is not one plain edit (then it is kept verbatim)."""
    text = _TAIL.sub("", _LEAD.sub("", clause.strip())).strip()
    if not text:
        return None
    for pattern, build in _FRAMES:
        m = pattern.fullmatch(text)
        if m:
            out = build(m)
            if out:
                return out
    return None


def _pieces(text: str) -> tuple[list[str], list[str]]:
    pieces, seps, last = [], [], 0
    for m in _SPLIT.finditer(text):
        if m.start() == 0 or m.end() >= len(text):
            continue
        pieces.append(text[last:m.start()])
        seps.append(m.group(0))
        last = m.end()
    pieces.append(text[last:])
    return pieces, seps


def rewrite_instruction(instruction: str) -> str:
    """The instruction with every plain edit clause in plain grammar (module docstring); other clauses verbatim.
    Returned unchanged when no clause is plain."""
    text = instruction.strip()
    if len(text) > MAX_REWRITE_CHARS:
        return instruction  # not an instruction a person writes; the rules still find its focus phrases
    pieces, seps = _pieces(text)
    n = len(pieces)
    # best[i]: (verbatim pieces, verbatim segments, -plain segments, parts) for pieces[:i]
    best: list = [None] * (n + 1)
    best[0] = (0, 0, 0, [])
    for j in range(1, n + 1):
        for i in range(j):
            if best[i] is None:
                continue
            raw = pieces[i] + "".join(s + p for s, p in zip(seps[i:j - 1], pieces[i + 1:j]))
            plain = plain_clause(raw) if j - i <= MAX_CLAUSE_PIECES else None
            if not plain and i > 0 and not _STRONG.search(seps[i - 1]) and not _VERB_AHEAD.match(pieces[i]):
                continue  # "paint the car red and white": a comma or "and" only ends a clause before a new edit
            cost = (best[i][0] + (0 if plain else j - i), best[i][1] + (not plain), best[i][2] - bool(plain))
            if best[j] is None or cost < best[j][:3]:
                best[j] = (*cost, best[i][3] + [(plain, raw)])
    if best[n] is None:
        return instruction
    parts = best[n][3]
    if all(plain is None or plain == raw.strip() for plain, raw in parts):
        return instruction  # nothing to rewrite: already plain (the template grammar stays byte for byte)
    out = []
    for plain, raw in parts:
        out.append(plain if plain else _LEAD.sub("", raw.strip()).rstrip(" .!?,;"))
    return " and ".join(p[:1].lower() + p[1:] if p[:1].isupper() and p[1:2].islower() else p for p in out)
