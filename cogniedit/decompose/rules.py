"""Rule-based instruction decomposition: no model, microseconds per instruction.

Finds the fine-grained phrases an editor tends to ignore (colours, positions, counts, and
size/shape/material words tagged "other"), splits compound instructions into clauses, and names
each clause's target. Every focus phrase is an exact character span of the input text, because the
focus module maps spans onto token positions.

Decisions (documented in docs/decompose.md):
- colours take an optional light/dark/pale/... modifier ("light blue", "dark-green"), "-ish" forms and
  multi-word names ("sky blue"); noun-like colours ("orange", "lime", "gold") count as colours unless
  they stand alone after an article ("add an orange").
- positions keep their preposition ("on the right", "in the top left corner", "next to"); an
  adjectival position stays one word ("the left cup" -> "left"); "the second/last ..." is a position.
- counts: zero..twenty, digits, "a pair of", "a couple of", "a dozen", "a few", "several", "single";
  "one" used as a pronoun ("the one on the left") is not a count. Digits with a unit ("20%",
  "90 degrees") are "other".
- compound instructions split on ";", sentence ends, commas, "and", "then" only where the next words
  start a new edit (an edit verb), so "red and white" or "a red, a blue ball" stay one clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .types import Decomposition, FocusPhrase

_START = r"(?<![A-Za-z0-9])"
_END = r"(?![A-Za-z0-9])"


def _alternation(words) -> str:
    # Longest first so "sky blue" wins over "blue"; spaces match any whitespace run.
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True))


# ---- colours ------------------------------------------------------------------------------------
MULTI_WORD_COLOURS = [
    "sky blue", "navy blue", "royal blue", "baby blue", "powder blue", "midnight blue", "steel blue",
    "forest green", "lime green", "olive green", "sea green", "mint green", "hot pink", "baby pink",
    "blood red", "brick red", "wine red", "lemon yellow", "mustard yellow", "off-white", "off white",
]
BASE_COLOURS = [
    "red", "green", "blue", "yellow", "orange", "purple", "violet", "pink", "brown", "black", "white",
    "gray", "grey", "cyan", "magenta", "teal", "turquoise", "navy", "maroon", "beige", "gold", "golden",
    "silver", "indigo", "lavender", "lime", "olive", "crimson", "scarlet", "aqua", "tan", "ivory",
    "coral", "salmon", "khaki", "mint", "peach", "cream", "burgundy", "amber", "charcoal", "emerald",
    "fuchsia", "lilac", "mauve", "ochre", "rust", "copper", "bronze", "azure", "cobalt", "mustard",
    "ruby", "sapphire", "jade", "chartreuse", "vermilion", "ultramarine", "cerulean", "periwinkle",
    "taupe", "sepia", "rose", "chocolate", "colorless", "colourless", "multicolored", "multicoloured",
]
ISH_COLOURS = [
    "reddish", "bluish", "blueish", "greenish", "yellowish", "purplish", "pinkish", "brownish",
    "greyish", "grayish", "orangish", "orangey", "whitish", "blackish",
]
COLOUR_MODIFIERS = ["light", "dark", "pale", "bright", "deep", "pastel", "neon", "vivid", "dull", "muted", "dusty"]
# Colour names that are also everyday nouns: "add an orange" is a fruit, "an orange ball" a colour.
NOUN_LIKE_COLOURS = {
    "orange", "lime", "olive", "peach", "salmon", "cream", "mint", "rust", "tan", "gold", "silver", "coral",
    "amber", "emerald", "ruby", "sapphire", "jade", "rose", "copper", "bronze", "charcoal", "navy", "chocolate",
}
_COLOUR_WORD = _alternation(MULTI_WORD_COLOURS + BASE_COLOURS + ISH_COLOURS)
COLOUR_RE = re.compile(
    rf"{_START}(?:(?:{_alternation(COLOUR_MODIFIERS)})[\s-]+)?(?:{_COLOUR_WORD})(?:-(?:{_COLOUR_WORD}))?"
    rf"(?:[\s-]colou?red)?{_END}",
    re.IGNORECASE,
)

# ---- positions ----------------------------------------------------------------------------------
_LR = r"(?:left|right)(?:-hand)?"
_VERT = r"(?:top|bottom|upper|lower)"
_MID = r"(?:center|centre|middle|central)"
_REGION = r"(?:corners?|sides?|edges?|half|halves|parts?|areas?|regions?|rows?|columns?|quadrants?|portion|end)"
_CORE = (
    rf"(?:(?:far|very)[\s-]+)?(?:(?:{_VERT}|{_MID})(?:[\s-]+(?:{_LR}|{_MID}))?|{_LR}"
    rf"|(?:left|right|top|bottom|upper|lower)-?most)(?:[\s-]+{_REGION})?"
)
_PREFIX = r"(?:(?:on|at|in|to|towards?|from|along|into|onto)\s+(?:the\s+)?)"
POSITION_RE = re.compile(rf"{_START}{_PREFIX}?{_CORE}{_END}", re.IGNORECASE)
RELATION_WORDS = [
    "to the left of", "to the right of", "on the left of", "on the right of", "next to", "in front of",
    "on top of", "close to", "across from", "in the middle of", "in the center of", "in the centre of",
    "above", "below", "behind", "beneath", "underneath", "under", "beside", "between", "inside", "near",
    "atop", "in the background", "in the foreground", "into the background", "into the foreground",
    "to the background", "to the foreground",
]
RELATION_RE = re.compile(rf"{_START}(?:{_alternation(RELATION_WORDS)}){_END}", re.IGNORECASE)
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "last"]
ORDINAL_RE = re.compile(rf"(?<=\bthe\s)(?:{_alternation(ORDINALS)}){_END}", re.IGNORECASE)
# "lower the brightness", "top the cake": verbs, not positions.
_VERB_LIKE_POSITION = {"lower", "top", "right"}
_DETERMINER_AFTER = re.compile(r"\s+(?:the|it|its|this|that|these|those|a|an|them)\b", re.IGNORECASE)

# ---- counts -------------------------------------------------------------------------------------
NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]
QUANTITY_PHRASES = ["a pair of", "a couple of", "a dozen", "a few", "several", "single"]
COUNT_RE = re.compile(rf"{_START}(?:{_alternation(NUMBER_WORDS + QUANTITY_PHRASES)}){_END}", re.IGNORECASE)
# "one" counts only after a verb, a quantity word or a clause start ("add one bird", "only one",
# "two cats and one dog"); after an article or adjective it is a pronoun ("the red one").
_WORD_BEFORE = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")
DIGITS_RE = re.compile(
    rf"{_START}\d+(?:\.\d+)?(?:\s*(?:%|percent|px|pixels|degrees|°))?(?![A-Za-z0-9])", re.IGNORECASE
)

# ---- other attributes: size, shape, material --------------------------------------------------------
OTHER_WORDS = [
    "small", "smaller", "smallest", "large", "larger", "largest", "big", "bigger", "biggest", "tiny", "huge",
    "tall", "taller", "short", "shorter", "long", "longer", "wide", "wider", "narrow", "thin", "thinner",
    "thick", "thicker", "giant", "medium", "medium-sized", "enormous", "miniature", "brighter", "darker",
    "lighter", "brightest", "darkest",
]
SHAPE_NOUNS = [
    "circle", "circles", "square", "squares", "triangle", "triangles", "rectangle", "rectangles", "star",
    "stars", "hexagon", "hexagons", "pentagon", "pentagons", "diamond", "diamonds", "ellipse", "ellipses",
    "oval", "ovals", "heart", "hearts", "disc", "discs", "disk", "disks",
]
MATERIAL_WORDS = [
    "wooden", "metal", "metallic", "glass", "plastic", "striped", "dotted", "spotted", "checkered", "shiny",
    "matte", "transparent", "furry", "fluffy", "leather", "marble",
]
OTHER_RE = re.compile(rf"{_START}(?:{_alternation(OTHER_WORDS + SHAPE_NOUNS + MATERIAL_WORDS)}){_END}", re.IGNORECASE)
_SHAPE_NOUN_SET = set(SHAPE_NOUNS)

# ---- clauses and targets ------------------------------------------------------------------------
EDIT_VERBS = [
    "make", "add", "remove", "delete", "erase", "change", "turn", "replace", "move", "put", "place", "paint",
    "color", "colour", "recolor", "recolour", "dye", "insert", "swap", "shift", "enlarge", "shrink", "rotate",
    "flip", "set", "give", "draw", "fill", "convert", "transform", "increase", "decrease", "reduce",
    "duplicate", "copy", "resize", "scale", "keep", "take", "drop", "switch", "mirror", "raise", "lower",
    "brighten", "darken", "blur", "sharpen", "crop", "reposition", "relocate", "rearrange", "arrange",
    "cover", "attach", "apply", "write", "create", "include", "eliminate", "clear", "hide", "double",
    "halve", "get", "let", "have", "show", "render", "edit", "adjust", "widen", "extend", "stretch",
]
_EDIT_VERB = _alternation(EDIT_VERBS)
_LEAD_WORDS = r"(?:(?:please|also|then|finally|and|next|now|lastly|after\s+that)[\s,]+)*"
_VERB_AHEAD = re.compile(rf"{_LEAD_WORDS}(?:{_EDIT_VERB}){_END}", re.IGNORECASE)
_SPLIT_RE = re.compile(
    r"\s*[;.!?]+\s+|\s*[;]\s*|\s*,\s*(?:and\s+then\s+|and\s+|then\s+)?|\s+(?:and\s+then|and\s+also|then|and)\s+",
    re.IGNORECASE,
)
_ALWAYS_SPLIT = re.compile(r"[;.!?]")
_VERB_AT_START = re.compile(rf"^{_LEAD_WORDS}(?P<verb>{_EDIT_VERB}){_END}\s*", re.IGNORECASE)
# Verbs whose clause ends with the result ("make the cup red"): the trailing attribute is not the target.
_RESULT_AT_END_VERBS = {"make", "turn", "paint", "color", "colour", "recolor", "recolour", "dye", "set", "get", "keep"}
_TARGET_CUT = re.compile(
    r"\s+(?:to|into|with|as|so\s+that|so|in\s+order\s+to|instead\s+of|by|until|while|using|twice|half|"
    r"wear|wearing|look|looks|appear|become|hold|holding)\s+.*$",
    re.IGNORECASE | re.DOTALL,
)
# "move the square up", "shift the star slightly": direction words after a move are not the target.
_MOVE_VERBS = {"move", "shift", "reposition", "relocate", "raise", "lower", "put", "place", "drop"}
_TRAILING_DIRECTION = re.compile(
    r"\s+(?:up|down|upwards?|downwards?|away|closer|higher|lower|slightly|a\s+bit|a\s+little|further)$", re.IGNORECASE
)
_ATTRIBUTE_OF = re.compile(r"^(?:the\s+)?(?:colou?r|size|shape|number)\s+of\s+", re.IGNORECASE)
# "a pair of", "a few" are counts, so their "a" stays.
_LEADING_DET = re.compile(
    r"^(?:(?:all\s+(?:of\s+)?|both\s+(?:of\s+)?|each\s+(?:of\s+)?)?the|an?(?!\s+(?:pair|couple|dozen|few)\b))\s+",
    re.IGNORECASE,
)
_PRONOUNS = {"it", "them", "this", "that", "these", "those", "everything", "him", "her", "image", "the image", "picture"}


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    kind: str
    rank: int  # tie-break for equal length: lower wins


def _colour_matches(text: str):
    for m in COLOUR_RE.finditer(text):
        word = m.group(0).lower()
        if word in NOUN_LIKE_COLOURS and _stands_alone_as_noun(text, m.start(), m.end()):
            continue
        yield _Match(m.start(), m.end(), "colour", 0)


_ARTICLE_BEFORE = re.compile(rf"\b(?:a|an|the|some|{_alternation(NUMBER_WORDS)})\s+$", re.IGNORECASE)
_NOUN_END_AFTER = re.compile(
    r"^(?:\s*[.,;:!?)]|\s*$|\s+(?:and|or|on|in|at|to|from|with|next|near|under|above|below|behind|beside|into|onto|of|then)\b)",
    re.IGNORECASE,
)


def _stands_alone_as_noun(text: str, start: int, end: int) -> bool:
    return bool(_ARTICLE_BEFORE.search(text[max(0, start - 16):start])) and bool(_NOUN_END_AFTER.match(text[end:end + 12]))


def _position_matches(text: str):
    for m in RELATION_RE.finditer(text):
        yield _Match(m.start(), m.end(), "position", 1)
    for m in POSITION_RE.finditer(text):
        word = m.group(0).lower()
        if word in _VERB_LIKE_POSITION and _DETERMINER_AFTER.match(text, m.end()):
            continue
        yield _Match(m.start(), m.end(), "position", 1)
    for m in ORDINAL_RE.finditer(text):
        yield _Match(m.start(), m.end(), "position", 1)


def _count_matches(text: str):
    for m in COUNT_RE.finditer(text):
        if m.group(0).lower() == "one" and not _one_is_a_count(text, m.start()):
            continue
        yield _Match(m.start(), m.end(), "count", 2)
    for m in DIGITS_RE.finditer(text):
        has_unit = not m.group(0)[-1].isdigit()
        yield _Match(m.start(), m.end(), "other" if has_unit else "count", 2)


_ONE_COUNT_AFTER = {
    "only", "just", "exactly", "with", "of", "than", "least", "most", "by", "into", "to", "and", "or", "then", "at",
    "keep", "leave", "please", "also", *EDIT_VERBS,
}


def _one_is_a_count(text: str, start: int) -> bool:
    before = text[max(0, start - 24):start]
    if not before.strip() or before.rstrip()[-1:] in ".,;:!?(":
        return True
    word = _WORD_BEFORE.search(before)
    return word is not None and word.group(1).lower() in _ONE_COUNT_AFTER


def _other_matches(text: str):
    for m in OTHER_RE.finditer(text):
        yield _Match(m.start(), m.end(), "other", 3)


def find_focus(text: str) -> list[FocusPhrase]:
    """All focus phrases of `text`, non-overlapping (longest match wins), in reading order."""
    candidates = [*_colour_matches(text), *_position_matches(text), *_count_matches(text), *_other_matches(text)]
    candidates.sort(key=lambda m: (-(m.end - m.start), m.rank, m.start))
    taken: list[_Match] = []
    occupied = bytearray(len(text))  # linear in the text, so a huge instruction stays cheap
    for cand in candidates:
        if occupied.find(1, cand.start, cand.end) == -1:
            occupied[cand.start:cand.end] = b"\x01" * (cand.end - cand.start)
            taken.append(cand)
    taken.sort(key=lambda m: m.start)
    return [FocusPhrase(text[m.start:m.end], m.kind, m.start, m.end) for m in taken]


def split_clauses(text: str) -> list[tuple[int, int]]:
    """Character spans of the instruction's clauses (one per edit)."""
    spans, clause_start = [], 0
    for sep in _SPLIT_RE.finditer(text):
        if sep.start() <= clause_start:
            continue
        follows_edit = _VERB_AHEAD.match(text, sep.end()) is not None
        if (_ALWAYS_SPLIT.search(sep.group(0)) and sep.end() < len(text)) or follows_edit:
            spans.append((clause_start, sep.start()))
            clause_start = sep.end()
    spans.append((clause_start, len(text)))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        stripped = piece.strip().rstrip(".!?;,").rstrip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            trimmed.append((start + lead, start + lead + len(stripped)))
    return trimmed


def _inside_relation(word_start: int, focus: list[FocusPhrase]) -> bool:
    """Whether a cut word ("to", "with") belongs to a relation inside the target: "next to",
    "to the left of"; a plain "to the right" is a destination and does end the target."""
    for p in focus:
        if p.kind != "position":
            continue
        if p.start < word_start < p.end or (word_start == p.start and p.text.lower().endswith(" of")):
            return True
    return False


def clause_target(clause: str, focus: list[FocusPhrase]) -> str:
    """The thing a clause edits: "make the left cup red" -> "left cup"; "" when unknown or a pronoun."""
    verb_match = _VERB_AT_START.match(clause)
    verb = verb_match.group("verb").lower() if verb_match else ""
    rest_start = verb_match.end() if verb_match else 0
    rest = clause[rest_start:]
    cut = _TARGET_CUT.search(rest)
    while cut and _inside_relation(rest_start + cut.start() + len(cut.group(0)) - len(cut.group(0).lstrip()), focus):
        cut = _TARGET_CUT.search(rest, cut.start() + 1)
    if cut:
        rest = rest[:cut.start()]
    rest = rest.strip().rstrip(".!?;,")
    if verb in _RESULT_AT_END_VERBS:
        rest = _strip_trailing_result(rest, [p for p in focus if p.start >= rest_start], rest_start)
    if verb in _MOVE_VERBS:
        rest = _TRAILING_DIRECTION.sub("", rest)
    rest = _ATTRIBUTE_OF.sub("", rest)  # "the colour of the umbrella" -> "the umbrella"
    rest = _LEADING_DET.sub("", rest).strip()
    return "" if rest.lower() in _PRONOUNS else rest


_CONNECTOR_TAIL = re.compile(r"(?:\s*,|\s+and|\s+or)\s*$", re.IGNORECASE)


def _strip_trailing_result(rest: str, focus: list[FocusPhrase], offset: int) -> str:
    """Drop the result attributes a clause ends with: "the shirt black and white striped" -> "the shirt"."""
    for phrase in reversed(focus):
        start, end = phrase.start - offset, phrase.end - offset
        is_attribute = phrase.kind == "colour" or (phrase.kind == "other" and phrase.text.lower() not in _SHAPE_NOUN_SET)
        if end > len(rest):
            continue  # beyond the cut ("... to match the blue square")
        if not is_attribute or end != len(rest) or start <= 0:
            break
        rest = _CONNECTOR_TAIL.sub("", rest[:start].rstrip())
    return rest


def decompose_rules(instruction: str, rewrite: bool = True) -> Decomposition:
    """Decompose with rules only. The enriched instruction is the instruction with what needs no image put in
    plain grammar (``rewrite.rewrite_instruction``: verb synonyms, number words, word order, politeness, "and
    then"); focus phrases and targets are read from it, so every span is a span of the enriched text.
    ``rewrite=False`` keeps the instruction as it is."""
    from .rewrite import rewrite_instruction  # rewrite reads this module's word lists

    text = rewrite_instruction(instruction) if rewrite and instruction.strip() else instruction
    focus = find_focus(text)
    targets: list[str] = []
    first = 0  # clauses and phrases are both in reading order: one pass over the phrases
    for start, end in split_clauses(text):
        while first < len(focus) and focus[first].start < start:
            first += 1
        local, i = [], first
        while i < len(focus) and focus[i].end <= end:
            p = focus[i]
            local.append(FocusPhrase(p.text, p.kind, p.start - start, p.end - start))
            i += 1
        target = clause_target(text[start:end], local)
        if target and target not in targets:
            targets.append(target)
    return Decomposition(
        enriched_instruction=text, targets=targets, focus=focus, source="rules", instruction=instruction
    )
