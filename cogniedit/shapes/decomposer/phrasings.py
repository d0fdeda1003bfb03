"""Where training and check cases come from: ``cases.generate_cases`` in each phrasing and wording split.

``case_source(phrasing, split, weights)`` returns ``fn(n, seed) -> cases``. ``mixed`` interleaves the phrasings
the installed ``generate_cases`` offers (template, paraphrase, reasoning), so a batch holds all of them, each in
proportion to its weight (``parse_mix("template=1,paraphrase=1,reasoning=2")``; equal weights when none is
given). Training uses the ``train`` wording split, checks the ``eval`` split (docs/shapeedit.md says which verbs
and frames each holds); a ``generate_cases`` without phrasings offers the template only.
"""

from __future__ import annotations

import inspect

from ..cases import generate_cases

PHRASINGS = ("template", "paraphrase", "reasoning")


def _parameters() -> set[str]:
    return set(inspect.signature(generate_cases).parameters)


def available_phrasings() -> tuple[str, ...]:
    return PHRASINGS if "phrasing" in _parameters() else ("template",)


def _one(phrasing: str, split: str):
    params = _parameters()
    if phrasing != "template" and "phrasing" not in params:
        raise ValueError(f"phrasing {phrasing!r} needs cases.generate_cases(..., phrasing=...); this version has only "
                         "the template phrasing")
    kwargs = {}
    if "phrasing" in params:
        kwargs["phrasing"] = phrasing
    if "split" in params:
        kwargs["split"] = split
    return lambda n, seed: generate_cases(n, seed, **kwargs)


def parse_mix(text: str) -> dict[str, int]:
    """``"template=1,paraphrase=1,reasoning=2"`` -> {phrasing: weight}; a phrasing left out weighs 0."""
    weights = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, value = item.partition("=")
        if name not in PHRASINGS or not value.isdigit():
            raise ValueError(f"mix entry {item!r}: write phrasing=weight (phrasings: {', '.join(PHRASINGS)}; "
                             "whole-number weights), e.g. template=1,paraphrase=1,reasoning=2")
        weights[name] = int(value)
    if not any(weights.values()):
        raise ValueError(f"mix {text!r} gives every phrasing weight 0")
    return weights


def case_source(phrasing: str = "mixed", split: str = "train", weights: dict[str, int] | None = None):
    if phrasing != "mixed":
        return _one(phrasing, split)
    names = available_phrasings()
    weights = {p: 1 for p in names} if weights is None else weights
    # which phrasing each batch position holds: a repeating pattern, round robin over the phrasings with weight
    # left (1:1:2 gives template, paraphrase, reasoning, reasoning)
    pattern = [i for r in range(max(weights.values())) for i, p in enumerate(names) if weights.get(p, 0) > r]
    if not pattern:
        raise ValueError(f"the mix {weights} gives weight to none of the phrasings this version offers "
                         f"({', '.join(names)})")
    sources = [_one(p, split) for p in names]

    def mixed(n: int, seed: int):
        slots = [pattern[i % len(pattern)] for i in range(n)]
        parts = [iter(src(slots.count(i), seed * 7 + i)) for i, src in enumerate(sources)]
        return [next(parts[slot]) for slot in slots]

    return mixed
