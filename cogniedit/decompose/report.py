"""The human-readable decomposition report, bounded whatever the input: a 10,000-character instruction
with hundreds of focus phrases still gives a report of a few kilobytes (summaries and counts; the full
lists stay in DIRECTIVES)."""

from __future__ import annotations

from .types import FOCUS_KINDS, Decomposition

TEXT_CHARS = 300        # the enriched instruction and each target / warning are shown up to this length
FOCUS_SHOWN = 24        # focus phrases listed by name; the rest are counted
TARGETS_SHOWN = 8
WARNINGS_SHOWN = 10


def _short(text: str, limit: int = TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text):,} characters)"


def _more(total: int, shown: int, what: str) -> list[str]:
    return [f"+{total - shown} more" + (f" {what}" if what else "")] if total > shown else []


def report_text(result: Decomposition, notes: list[str] | tuple = (), via: str = "") -> str:
    """At most about 4 KB: source, which backend was asked (`via`), enriched instruction, focus counts per
    kind and the first phrases, targets, warnings (and `notes`, e.g. what the node did with its inputs)."""
    focus = result.focus
    lines = [f"source: {result.source}"] + ([f"asked: {_short(via)}"] if via else [])
    lines.append(f"enriched instruction: {_short(result.enriched_instruction)}")
    if focus:
        kinds = ", ".join(f"{kind} {n}" for kind in FOCUS_KINDS if (n := sum(p.kind == kind for p in focus)))
        shown = ", ".join(f"{_short(p.text, 40)} ({p.kind})" for p in focus[:FOCUS_SHOWN])
        lines.append(f"focus: {len(focus)} phrases ({kinds}): " + ", ".join([shown] + _more(len(focus), FOCUS_SHOWN, "")))
    else:
        lines.append("focus: none")
    targets = result.targets
    shown_targets = [_short(t, 80) for t in targets[:TARGETS_SHOWN]] + _more(len(targets), TARGETS_SHOWN, "")
    lines.append("targets: " + ("; ".join(shown_targets) if targets else "none"))
    warnings = list(notes) + list(result.warnings)
    lines += [f"warning: {_short(w)}" for w in warnings[:WARNINGS_SHOWN]]
    lines += _more(len(warnings), WARNINGS_SHOWN, "warnings")
    return "\n".join(lines)
