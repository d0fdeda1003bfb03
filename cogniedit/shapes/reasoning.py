"""ShapeEdit ``reasoning`` phrasing: what to change, or into what, is read off the scene (next commit)."""

from __future__ import annotations


def make_reasoning_case(case_id, kind, rng, split, world):
    raise NotImplementedError("the reasoning phrasing is not built yet")
