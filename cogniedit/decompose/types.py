"""The DIRECTIVES payload: what Instruction Decompose hands to the focus and sampler stages.

`Decomposition.to_dict()` is the wire format (JSON-safe, versioned); `from_dict()` accepts the same
format back and refuses future versions with a clear message instead of silently misreading them.
Focus phrases carry exact character spans into `enriched_instruction`, the text the editor encodes,
because the focus module maps those spans onto token positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DIRECTIVES_FORMAT = "cogniedit.directives"
DIRECTIVES_VERSION = 1

FOCUS_KINDS = ("colour", "position", "count", "other")
SOURCES = ("mllm", "rules", "fallback")


@dataclass(frozen=True)
class FocusPhrase:
    """A fine-grained phrase ("purple", "on the left", "three") at `[start, end)` of its text."""

    text: str
    kind: str
    start: int = -1
    end: int = -1

    def __post_init__(self):
        if self.kind not in FOCUS_KINDS:
            raise ValueError(f"focus kind {self.kind!r} is not one of {FOCUS_KINDS}")
        if self.start >= 0 and self.end - self.start != len(self.text):
            raise ValueError(f"focus span [{self.start}, {self.end}) does not match the length of {self.text!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FocusPhrase":
        return cls(text=str(data["text"]), kind=str(data["kind"]),
                   start=int(data.get("start", -1)), end=int(data.get("end", -1)))


@dataclass
class Decomposition:
    """Explicit editing directives for one (image, instruction) pair.

    enriched_instruction: the instruction the editor should encode (the model's <answer>, or the
        user's own instruction when rules produced the result).
    targets: what to change, one short phrase each ("the left cup", "three birds").
    focus: fine-grained phrases, each an exact span of `enriched_instruction`.
    source: "mllm" (parsed model answer), "rules" (rules chosen), "fallback" (model failed -> rules).
    warnings: human-readable notes on everything that was repaired or fell back.
    raw: the model's unparsed output ("" for rules).
    instruction: the user's original instruction.
    description / reasoning: the model's <info> and <think> stages, when it gave them.
    """

    enriched_instruction: str
    targets: list[str] = field(default_factory=list)
    focus: list[FocusPhrase] = field(default_factory=list)
    source: str = "rules"
    warnings: list[str] = field(default_factory=list)
    raw: str = ""
    instruction: str = ""
    description: str = ""
    reasoning: str = ""

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"decomposition source {self.source!r} is not one of {SOURCES}")
        for phrase in self.focus:
            if phrase.start >= 0 and self.enriched_instruction[phrase.start:phrase.end] != phrase.text:
                raise ValueError(f"focus phrase {phrase.text!r} is not at [{phrase.start}, {phrase.end}) of the instruction")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DIRECTIVES_FORMAT,
            "version": DIRECTIVES_VERSION,
            "instruction": self.instruction,
            "enriched_instruction": self.enriched_instruction,
            "targets": list(self.targets),
            "focus": [p.to_dict() for p in self.focus],
            "source": self.source,
            "warnings": list(self.warnings),
            "description": self.description,
            "reasoning": self.reasoning,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Decomposition":
        if not isinstance(data, dict):
            raise ValueError(f"DIRECTIVES must be a JSON object, got {type(data).__name__}")
        fmt = data.get("format", DIRECTIVES_FORMAT)
        if fmt != DIRECTIVES_FORMAT:
            raise ValueError(f"not a CogniEdit DIRECTIVES payload (format {fmt!r}, expected {DIRECTIVES_FORMAT!r})")
        version = int(data.get("version", DIRECTIVES_VERSION))
        if version > DIRECTIVES_VERSION:
            raise ValueError(
                f"DIRECTIVES version {version} is newer than this CogniEdit understands ({DIRECTIVES_VERSION}); "
                "update the CogniEdit pack"
            )
        return cls(
            enriched_instruction=str(data["enriched_instruction"]),
            targets=[str(t) for t in data.get("targets", [])],
            focus=[FocusPhrase.from_dict(p) for p in data.get("focus", [])],
            source=str(data.get("source", "rules")),
            warnings=[str(w) for w in data.get("warnings", [])],
            raw=str(data.get("raw", "")),
            instruction=str(data.get("instruction", data["enriched_instruction"])),
            description=str(data.get("description", "")),
            reasoning=str(data.get("reasoning", "")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Decomposition":
        return cls.from_dict(json.loads(text))

    def focus_of_kind(self, kind: str) -> list[FocusPhrase]:
        return [p for p in self.focus if p.kind == kind]
