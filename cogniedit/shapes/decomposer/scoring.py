"""How right a decomposition is, exactly: its answer read back into ops against the case's ops.

Per case: ``correct`` (the model's own ``<answer>`` parsed in the editor's grammar equals the case's ops),
``malformed`` (no ``<answer>`` in the grammar: missing, cut off, or naming no single object), ``fallback`` (the
pack's parser threw the answer away and used the rules; the editor then gets the rule result) and
``pipeline_correct`` (what the editor receives, the enriched instruction, read back equals the ops, whoever
wrote it) and ``info_correct`` (the ``<info>`` stage lists the scene exactly: the perception part).
"""

from __future__ import annotations

from ...decompose.parser import parse_answer
from .stages import answer_ops, info_text, same_ops


def score_decomposition(case, decomposition) -> dict:
    raw = decomposition.raw if decomposition.source != "rules" else ""
    sections = parse_answer(raw).sections if raw else {}
    section = sections.get("answer", "")
    own = answer_ops(section, case.source, case.world) if section else None
    fed = answer_ops(decomposition.enriched_instruction, case.source, case.world)
    return {"correct": same_ops(own, case.ops), "malformed": own is None,
            "fallback": decomposition.source == "fallback", "pipeline_correct": same_ops(fed, case.ops),
            "info_correct": sections.get("info", "") == info_text(case.source, case.world)}


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    out = {"n": n}
    for key in ("correct", "malformed", "fallback", "pipeline_correct", "info_correct"):
        out[key] = sum(r[key] for r in rows) / n if n else None
    return out


def correct_by_kind(cases, rows: list[dict]) -> dict[str, float]:
    """The share of correct answers per edit kind (colour, position, count, compound), in the order first met."""
    tally: dict[str, list[int]] = {}
    for case, row in zip(cases, rows):
        hits = tally.setdefault(case.kind, [0, 0])
        hits[0] += bool(row["correct"])
        hits[1] += 1
    return {kind: right / total for kind, (right, total) in tally.items()}
