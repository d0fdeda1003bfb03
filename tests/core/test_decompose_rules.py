"""The rule-based decomposer on 60 hand-labelled fine-grained instructions (tests/core/data)."""

import json
from pathlib import Path

import pytest

from cogniedit.decompose.rules import decompose_rules, find_focus, split_clauses
from cogniedit.decompose.types import Decomposition

CASES = [json.loads(line) for line in (Path(__file__).parent / "data" / "instructions_60.jsonl").read_text().splitlines() if line.strip()]


def test_the_data_file_holds_at_least_60_cases_of_every_kind():
    assert len(CASES) >= 60
    kinds = {kind for case in CASES for _, kind in case["focus"]}
    assert kinds == {"colour", "position", "count", "other"}
    assert sum(len(case["targets"]) > 1 for case in CASES) >= 5  # compound instructions


@pytest.mark.parametrize("case", CASES, ids=[c["instruction"][:40] for c in CASES])
def test_focus_phrases_and_targets(case):
    result = decompose_rules(case["instruction"])
    assert [[p.text, p.kind] for p in result.focus] == case["focus"]
    assert result.targets == case["targets"]
    for phrase in result.focus:  # exact character spans: the focus module maps them to tokens
        assert case["instruction"][phrase.start:phrase.end] == phrase.text
    assert result.source == "rules" and result.enriched_instruction == case["instruction"]


def test_compound_split_only_where_a_new_edit_starts():
    text = "add a red, a blue and a yellow balloon and then remove the cat; make the sky dark"
    assert [text[a:b] for a, b in split_clauses(text)] == [
        "add a red, a blue and a yellow balloon", "remove the cat", "make the sky dark"]


def test_spans_survive_repeated_words_and_odd_spacing():
    text = "make  the red circle   red and the LEFT   one blue"
    focus = find_focus(text)
    assert [(p.text, p.kind) for p in focus] == [
        ("red", "colour"), ("circle", "other"), ("red", "colour"), ("LEFT", "position"), ("blue", "colour")]
    assert [p.start for p in focus if p.text == "red"] == [10, 23]


def test_rules_result_round_trips_through_directives_json():
    result = decompose_rules("add three birds on the right")
    again = Decomposition.from_json(result.to_json())
    assert again == result and again.focus[1].text == "on the right"


def test_random_text_never_breaks_the_spans():
    import random

    words = ["make", "the", "left", "light", "blue", "one", "and", "then", "add", "a", "pair", "of", "on", "top",
             "to", "right", "20%", ",", ".", "orange", "ß", "数", "  ", "-", "corner", "three", "next", "in", "front"]
    rng = random.Random(0)
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))
        result = decompose_rules(text)
        assert all(text[p.start:p.end] == p.text for p in result.focus)
        assert all(a.end <= b.start for a, b in zip(result.focus, result.focus[1:]))
        for start, end in split_clauses(text):
            assert 0 <= start < end <= len(text)


def test_a_huge_instruction_is_handled():
    text = "make the left red circle blue and add three stars on the right, " * 3000  # ~200k characters
    result = decompose_rules(text)
    assert len(result.focus) == 3000 * 7 and result.focus[-1].text == "on the right"
    assert all(text[p.start:p.end] == p.text for p in result.focus[-12:])
