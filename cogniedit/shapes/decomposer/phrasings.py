"""Where training and check cases come from: ``cases.generate_cases`` in each phrasing and wording split.

``case_source(phrasing, split)`` returns ``fn(n, seed) -> cases``. ``mixed`` interleaves the phrasings the
installed ``generate_cases`` offers (template, paraphrase, reasoning), so a batch holds all of them. Training
uses the ``train`` wording split, checks the ``eval`` split (docs/shapeedit.md says which verbs and frames each
holds); a ``generate_cases`` without phrasings offers the template only.
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


def case_source(phrasing: str = "mixed", split: str = "train"):
    if phrasing != "mixed":
        return _one(phrasing, split)
    sources = [_one(p, split) for p in available_phrasings()]

    def mixed(n: int, seed: int):
        k = len(sources)
        parts = [src(len(range(i, n, k)), seed * 7 + i) for i, src in enumerate(sources)]
        return [parts[i % k][i // k] for i in range(n)]

    return mixed
