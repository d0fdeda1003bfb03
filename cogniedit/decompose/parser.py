"""Tolerant reader of model answers: whatever comes back, a usable Decomposition comes out.

Handles well-formed tags, missing or mismatched closing tags, output cut off mid-section, markdown
fences, JSON inside or instead of tags, "Answer:" style headings, and hostile text (huge, deeply
nested tags, chat-control tokens). When no usable instruction can be read, the rule-based result
is returned with source "fallback" and a warning that says why. Nothing here raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .fidelity import judge
from .neutralise import neutralise_instruction
from .prompt import SYSTEM_PROMPT, TAGS
from .rules import decompose_rules, find_focus
from .types import Decomposition

MAX_ANSWER_CHARS = 65_536       # 1024 generated tokens are ~5k characters; a longer answer is refused
MAX_WARNINGS = 12
MAX_SECTION_CHARS = {"info": 8_000, "think": 8_000, "answer": 1_000, "object": 2_000}
MAX_TARGETS = 16
MAX_TARGET_CHARS = 200

_TAG_TOKEN = re.compile(r"<\s*(/?)\s*(info|think|answer|object)\s*>", re.IGNORECASE)
_FENCE_LINE = re.compile(r"^[ \t]*```[^\n]*$", re.MULTILINE)
_ANY_TAG = re.compile(r"</?\s*[A-Za-z_][\w-]{0,30}\s*/?>")
_HEADING = re.compile(
    r"^[ \t#*>-]*(?P<label>visual comprehension|description|info|reasoning|think|enriched instruction|"
    r"instruction synthesis|answer|target specification|targets?|objects?)[ \t*]*:[ \t*]*",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING_TO_TAG = {
    "visual comprehension": "info", "description": "info", "info": "info", "reasoning": "think", "think": "think",
    "enriched instruction": "answer", "instruction synthesis": "answer", "answer": "answer",
    "target specification": "object", "target": "object", "targets": "object", "object": "object", "objects": "object",
}
_JSON_KEYS = {
    "info": ("info", "description", "visual_comprehension"),
    "think": ("think", "reasoning"),
    "answer": ("answer", "enriched_instruction", "instruction", "edit_instruction"),
    "object": ("object", "objects", "targets", "target", "target_specification"),
}
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))\s*")
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F\u4e00-\u9fff]{2,}")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
# Scripts written without spaces (CJK, kana, hangul): each character counts as a word.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# What models copy from a template instead of answering ("answer here", "your enriched instruction"):
# a section made only of these words is a placeholder. No edit verb is in the list.
_PLACEHOLDER_WORDS = frozenset(
    "a an the your my this that here there goes go answer answers enriched instruction instructions text output "
    "response placeholder todo tbd n na none null nothing target targets specification object objects info think "
    "reasoning description example sample xxx etc final result fill".split())


@dataclass
class ParsedAnswer:
    sections: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    placeholders: set[str] = field(default_factory=set)  # sections that only echo a template


def _scan_tags(text: str, parsed: ParsedAnswer) -> bool:
    """Fill sections from <tag>...</tag>; tolerate missing, orphan and mismatched closings."""
    found_any = False
    open_name, open_at, boundary = None, 0, 0

    def keep(name: str, start: int, end: int):
        if not parsed.sections.get(name):
            parsed.sections[name] = text[start:end]

    tokens = list(_TAG_TOKEN.finditer(text))
    last_closing = {token.group(2).lower(): i for i, token in enumerate(tokens) if token.group(1)}
    for i, token in enumerate(tokens):
        found_any = True
        closing, name = token.group(1) == "/", token.group(2).lower()
        if open_name is not None and not (closing and name == open_name) and last_closing.get(open_name, -1) > i:
            continue  # a tag quoted inside an open section ("<think>... the <answer> tag ..."), closed later: text
        if not closing:
            if open_name is not None:
                parsed.warnings.append(f"<{open_name}> was not closed before <{name}>")
                keep(open_name, open_at, token.start())
            open_name, open_at = name, token.end()
        elif open_name is not None:
            if open_name != name:
                parsed.warnings.append(f"<{open_name}> was closed by </{name}>")
            keep(open_name, open_at, token.start())
            open_name = None
        else:
            parsed.warnings.append(f"</{name}> had no opening tag")
            keep(name, boundary, token.start())
        boundary = token.end()
    if open_name is not None:
        parsed.warnings.append(f"<{open_name}> was not closed (output truncated?)")
        keep(open_name, open_at, len(text))
    return found_any


def _scan_headings(text: str, parsed: ParsedAnswer) -> bool:
    headings = list(_HEADING.finditer(text))
    for i, heading in enumerate(headings):
        name = _HEADING_TO_TAG[heading.group("label").lower()]
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        if not parsed.sections.get(name):
            parsed.sections[name] = text[heading.end():end]
    return bool(headings)


def _from_json_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_from_json_value(v) for v in value[:MAX_TARGETS])
    if isinstance(value, dict):
        for key in ("instruction", "answer", "text", "description", "target", "name"):
            if key in value:
                return _from_json_value(value[key])
        return "; ".join(f"{k}: {_from_json_value(v)}" for k, v in list(value.items())[:MAX_TARGETS])
    return "" if value is None else str(value)


def _json_sections(text: str, parsed: ParsedAnswer) -> bool:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return False
    try:
        data = json.loads(text[start:end + 1])
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    lowered = {str(k).lower(): v for k, v in data.items()}
    for tag, keys in _JSON_KEYS.items():
        for key in keys:
            if key in lowered and not parsed.sections.get(tag):
                parsed.sections[tag] = _from_json_value(lowered[key])
    return any(parsed.sections.values())


def _clean(text: str, limit: int) -> str:
    # Chat-control tokens (<|im_start|>, ...) and control characters must never reach the editor's text
    # encoder: they would let an answer rewrite the editor's chat template. The same rule as for instructions.
    text = neutralise_instruction(text)[0]
    text = _ANY_TAG.sub(" ", text)
    stripped = text.strip()
    if stripped[:1] in "{[\"":
        try:
            text = _from_json_value(json.loads(stripped))
        except (ValueError, RecursionError):
            pass
    text = "\n".join(" ".join(line.split()) for line in text.splitlines())
    text = re.sub(r"\n{2,}", "\n", text).strip().strip("\"'`").strip()
    return text[:limit]


def parse_answer(raw) -> ParsedAnswer:
    """Split a model answer into its <info>/<think>/<answer>/<object> sections (cleaned text)."""
    parsed = ParsedAnswer()
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    if len(text) > MAX_ANSWER_CHARS:
        parsed.warnings.append(f"the answer has {len(text):,} characters, over the {MAX_ANSWER_CHARS:,}-character "
                               "limit; not parsed")
        parsed.sections = {tag: "" for tag in TAGS}
        return parsed
    text = _FENCE_LINE.sub("", text)
    if not (_scan_tags(text, parsed) or _json_sections(text, parsed) or _scan_headings(text, parsed)):
        parsed.warnings.append("no <info>/<think>/<answer>/<object> tags in the answer")
    parsed.placeholders = {tag for tag in TAGS if _is_placeholder(parsed.sections.get(tag, ""))}
    parsed.sections = {tag: _clean(parsed.sections.get(tag, ""), MAX_SECTION_CHARS[tag]) for tag in TAGS}
    parsed.warnings = _bounded(parsed.warnings)
    return parsed


def _bounded(warnings: list[str]) -> list[str]:
    """Distinct warnings, at most MAX_WARNINGS (a hostile answer can repeat a tag thousands of times)."""
    unique = list(dict.fromkeys(warnings))
    if len(unique) <= MAX_WARNINGS:
        return unique
    return unique[:MAX_WARNINGS - 1] + [f"... and {len(unique) - MAX_WARNINGS + 1} more parser warnings"]


def _is_placeholder(section: str) -> bool:
    """A non-empty section whose words are all template words ("answer here", "<answer>", "...", "N/A")."""
    if not section.strip():
        return False
    return all(word in _PLACEHOLDER_WORDS for word in _LETTER_RUN.findall(section.lower()))


def _has_a_word(text: str) -> bool:
    return any(len(run) >= 2 or _UNSPACED.search(run) for run in _LETTER_RUN.findall(text))


def _looks_like_text(text: str) -> bool:
    """Some real words, not a run of symbols or token soup (CJK and kana count one word per character)."""
    runs = _LETTER_RUN.findall(text)
    words = sum(len(_UNSPACED.findall(run)) or (len(run) >= 2) for run in runs)
    return words >= 2 and sum(map(len, runs)) >= 0.5 * len("".join(text.split()))


_PROMPT_WORDS = " ".join(_WORD.findall(SYSTEM_PROMPT.lower()))


def _echoes_the_prompt(text: str) -> bool:
    """Weak models often copy the stage descriptions back; those are not an answer."""
    words = " ".join(_WORD.findall(text.lower()))
    return len(words) >= 20 and words in _PROMPT_WORDS


def _target_lines(object_text: str) -> list[str]:
    targets = []
    for line in re.split(r"[\n;]", object_text):
        line = _BULLET.sub("", line).strip().rstrip(".").strip()
        if line and _has_a_word(line) and line not in targets:
            targets.append(line[:MAX_TARGET_CHARS])
        if len(targets) == MAX_TARGETS:
            break
    return targets


def decomposition_from_answer(raw, instruction: str) -> Decomposition:
    """The Decomposition a model answer supports; rules + a warning when it supports none."""
    try:
        return _decomposition_from_answer(raw, instruction)
    except Exception as error:  # defence in depth: a parser bug must not stop a workflow
        result = decompose_rules(instruction)
        result.source, result.raw = "fallback", raw if isinstance(raw, str) else ""
        result.warnings.append(f"could not parse the model answer ({type(error).__name__}: {error}); used rules")
        return result


def _fallback(instruction: str, raw_text: str, warnings: list[str], why: str) -> Decomposition:
    result = decompose_rules(instruction)
    result.source, result.raw = "fallback", raw_text
    result.warnings = warnings + [f"{why}; used the rule-based decomposition"]
    return result


def _quoted(phrases: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(p) for p in phrases[:most])
    return shown + (f" and {len(phrases) - most} more" if len(phrases) > most else "")


def _decomposition_from_answer(raw, instruction: str) -> Decomposition:
    raw_text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    parsed = parse_answer(raw_text)
    sections, warnings = parsed.sections, list(parsed.warnings)
    if len(raw_text) > MAX_ANSWER_CHARS:
        return _fallback(instruction, raw_text[:MAX_ANSWER_CHARS], warnings, "the model answer is too long")
    for tag in ("answer", "object"):
        if tag in parsed.placeholders:
            warnings.append(f"the <{tag}> section is a template placeholder, not an answer; ignored")
            sections[tag] = ""
        elif _echoes_the_prompt(sections[tag]):
            warnings.append(f"the <{tag}> section repeats the prompt's instructions; ignored")
            sections[tag] = ""
    answer_ok = _looks_like_text(sections["answer"])
    targets = _target_lines(sections["object"]) if _looks_like_text(sections["object"]) else []

    if not answer_ok and not targets:
        why = "empty model answer" if not raw_text.strip() else "no usable <answer> or <object> in the model answer"
        return _fallback(instruction, raw_text, warnings, why)

    if answer_ok:
        enriched = sections["answer"].replace("\n", " ")
    else:
        enriched = instruction
        warnings.append("no usable <answer>; kept the user's instruction as the enriched instruction")
    fidelity = judge(instruction, enriched, sections["info"] + "\n" + sections["think"])
    if fidelity.dropped:
        warnings.append("the enriched instruction dropped " + _quoted(fidelity.dropped))
    if fidelity.failed:
        brought = (f" and brings in {_quoted(fidelity.ungrounded)}, which neither the instruction nor the model's "
                   "scene description mention" if fidelity.ungrounded else " and names nothing from the scene instead")
        return _fallback(instruction, raw_text, warnings,
                         f"the answer drops {len(fidelity.dropped)} of the instruction's {fidelity.total} colour, "
                         f"count, position and object phrases{brought}, so it replaces the instruction instead of "
                         "explaining it")
    focus = find_focus(enriched)
    if not targets:
        targets = decompose_rules(enriched).targets
        warnings.append("no usable <object>; targets come from the rules")
    return Decomposition(
        enriched_instruction=enriched, targets=targets, focus=focus, source="mllm", warnings=warnings,
        raw=raw_text, instruction=instruction, description=sections["info"], reasoning=sections["think"],
    )
