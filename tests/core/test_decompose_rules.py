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
    result = decompose_rules(case["instruction"], rewrite=False)
    assert [[p.text, p.kind] for p in result.focus] == case["focus"]
    assert result.targets == case["targets"]
    for phrase in result.focus:  # exact character spans: the focus module maps them to tokens
        assert case["instruction"][phrase.start:phrase.end] == phrase.text
    assert result.source == "rules" and result.enriched_instruction == case["instruction"]


# What the rewrite does to the 60 hand-labelled instructions (all others stay word for word).
REWRITES = {
    "Change the blue car to green.": "make the blue car green",
    "Turn the sky light blue": "turn the sky light blue",
    "paint the fence pale yellow": "make the fence pale yellow",
    "recolor the sofa navy blue": "make the sofa navy blue",
    "draw 3 stars": "add three stars",
    "Remove the hat, then make the jacket dark blue": "remove the hat and make the jacket dark blue",
    "Make the car white. Add a dog beside it.": "make the car white and add a dog beside it",
    "make the bird on the right orange and then remove the leftmost tree":
        "make the right bird orange and remove the left tree",
    "recolor the pink circle in the middle to white": "make the pink circle in the middle white",
    "Please make the silver car gold": "make the silver car gold",
    "Change the color of the umbrella to light purple": "make the umbrella light purple",
}


def test_the_rewrite_of_the_hand_labelled_instructions():
    for case in CASES:
        result = decompose_rules(case["instruction"])
        assert result.enriched_instruction == REWRITES.get(case["instruction"], case["instruction"])
        assert result.instruction == case["instruction"]
        for phrase in result.focus:  # spans of the text the editor reads
            assert result.enriched_instruction[phrase.start:phrase.end] == phrase.text
        plain = decompose_rules(case["instruction"], rewrite=False)
        if case["instruction"] not in REWRITES:
            assert result == plain
        elif "3" not in case["instruction"]:  # the colour, position and count words survive the rewrite
            assert sorted(p.kind for p in result.focus) == sorted(p.kind for p in plain.focus)


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


def test_a_comma_or_and_ends_a_clause_only_before_a_new_edit():
    for text in ("add a red, a blue and a yellow balloon", "paint the car red and white",
                 "make the shirt black and white striped"):
        assert decompose_rules(text).enriched_instruction in (text, text.replace("paint", "make"))


def test_random_text_never_breaks_the_spans():
    import random

    words = ["make", "the", "left", "light", "blue", "one", "and", "then", "add", "a", "pair", "of", "on", "top",
             "to", "right", "20%", ",", ".", "orange", "ß", "数", "  ", "-", "corner", "three", "next", "in", "front"]
    rng = random.Random(0)
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))
        result = decompose_rules(text)
        assert all(result.enriched_instruction[p.start:p.end] == p.text for p in result.focus)
        assert all(a.end <= b.start for a, b in zip(result.focus, result.focus[1:]))
        for start, end in split_clauses(text):
            assert 0 <= start < end <= len(text)


def test_a_huge_instruction_is_handled():
    text = "make the left red circle blue and add three stars on the right, " * 3000  # ~200k characters
    result = decompose_rules(text)
    assert len(result.focus) == 3000 * 7 and result.focus[-1].text == "on the right"
    assert all(text[p.start:p.end] == p.text for p in result.focus[-12:])


# ---- ShapeEdit phrasings: the rewrite on wording it was not written from (the eval split's held-out words) ----

def test_held_out_paraphrases_are_rewritten_into_the_template_grammar():
    from test_shapes_instructions import as_tuple, interpret  # the template grammar's independent reader

    from cogniedit.shapes.cases import generate_cases

    cases = generate_cases(300, seed=424242, phrasing="paraphrase", split="eval")
    for case in cases:
        enriched = decompose_rules(case.instruction).enriched_instruction
        assert interpret(enriched, case.source) == [as_tuple(op) for op in case.ops], (case.instruction, enriched)
    assert sum(decompose_rules(c.instruction).enriched_instruction != c.instruction for c in cases) == len(cases)


def test_what_needs_the_image_is_left_alone_and_meaning_is_kept():
    from test_shapes_reasoning import as_tuple, read  # the reasoning wording's independent reader

    from cogniedit.shapes.cases import generate_cases

    needs_image = ("the same colour as", "the colour of", "as many", "for every", "double the number", " left of ",
                   " right of ", "above", "below", "the only", "the single", "the lone", "appears only once",
                   "no other shape", "except the", "but the", "all the", "each", "of the same shape as",
                   "shaped like")
    for case in generate_cases(300, seed=424242, phrasing="reasoning", split="eval"):
        enriched = decompose_rules(case.instruction).enriched_instruction
        assert read(enriched, case.source) == [as_tuple(op) for op in case.ops], (case.instruction, enriched)
        for phrase in needs_image:  # no reference invented: the phrases that need the picture are all still there
            assert case.instruction.count(phrase) == enriched.count(phrase), (case.instruction, enriched)


def test_template_instructions_are_already_plain_and_pass_unchanged():
    from cogniedit.shapes.cases import generate_cases

    for seed in (0, 20261129):
        for case in generate_cases(400, seed=seed):
            assert decompose_rules(case.instruction) == decompose_rules(case.instruction, rewrite=False)
