"""The ShapeEdit editor's grammar check of a decomposition (cogniedit/shapes/decomposer/answer_check.py)."""

from __future__ import annotations

from cogniedit.decompose.parser import decomposition_from_answer
from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.decomposer.answer_check import check_decomposition, scene_from_info
from cogniedit.shapes.decomposer.stages import info_text, stage_text
from cogniedit.shapes.scene import Scene, ShapeObject, random_scene


def test_the_info_format_reads_back_into_its_scene():
    written = "red circle in the top left corner; blue square in the centre; green triangle in the middle right"
    assert scene_from_info(written) == Scene((ShapeObject(0, 0, "circle", "red"), ShapeObject(1, 1, "square", "blue"),
                                              ShapeObject(1, 2, "triangle", "green")))
    for seed in range(30):
        scene = random_scene(seed)
        assert scene_from_info(info_text(scene)) == scene


def test_an_info_that_is_not_a_scene_reads_as_none():
    for text in ("", "red circle", "red circle in the top left corner; red square in the top left corner",
                 "red circle in the attic", "huge red circle in the centre", "red circle in the centre;"):
        assert scene_from_info(text) is None, text


def _raw(info: str, answer: str, think: str = "x") -> str:
    return f"<info>{info}</info>\n<think>{think}</think>\n<answer>{answer}</answer>\n<object>{answer}</object>"


SCENE = Scene((ShapeObject(0, 0, "circle", "red"), ShapeObject(1, 1, "square", "blue"),
               ShapeObject(2, 2, "triangle", "green")))


def test_an_explicit_instruction_keeps_the_rules_text_whatever_the_model_answered():
    instruction = "Please paint the circle purple"
    decomposition = decomposition_from_answer(_raw(info_text(SCENE), "make the square purple"), instruction)
    checked, choice = check_decomposition(decomposition, instruction)
    assert choice == "explicit"
    assert checked.enriched_instruction == "make the circle purple"
    assert checked.source == "rules" and checked.description == info_text(SCENE)


def test_an_instruction_that_needs_the_image_takes_a_readable_answer():
    instruction = "give the circle the colour of the square"
    decomposition = decomposition_from_answer(_raw(info_text(SCENE), "make the circle blue"), instruction)
    checked, choice = check_decomposition(decomposition, instruction)
    assert (choice, checked.enriched_instruction, checked.source) == ("answer", "make the circle blue", "mllm")


def test_an_unreadable_answer_or_scene_falls_back_to_the_rules():
    instruction = "give the circle the colour of the square"
    for raw in (_raw(info_text(SCENE), "make the hexagon blue"),          # not a shape of the grammar
                _raw(info_text(SCENE), "make the star blue and the"),      # cut off
                _raw("a red circle somewhere", "make the circle blue"),    # the scene cannot be read
                _raw(info_text(SCENE), "remove the pentagon")):
        checked, choice = check_decomposition(decomposition_from_answer(raw, instruction), instruction)
        assert choice == "fallback", raw
        assert checked.source == "fallback" and checked.enriched_instruction == instruction
        assert "rules' text is used" in checked.warnings[-1]


def test_an_answer_naming_two_objects_on_the_described_scene_falls_back():
    two_circles = "red circle in the top left corner; blue circle in the centre"
    instruction = "give the circle in the top left corner the colour of the other circle"
    decomposition = decomposition_from_answer(_raw(two_circles, "make the circle blue"), instruction)
    assert check_decomposition(decomposition, instruction)[1] == "fallback"


def test_the_true_stages_of_every_reasoning_case_pass_the_check_as_answers():
    """The ideal decomposer's output (stages.stage_text) is never thrown away."""
    for case in generate_cases(60, 5, phrasing="reasoning", split="eval"):
        raw = stage_text(case.source, case.ops, case.world)
        decomposition = decomposition_from_answer(raw, case.instruction)
        checked, choice = check_decomposition(decomposition, case.instruction)
        assert choice in ("answer", "explicit"), case.instruction
        if choice == "answer":
            assert checked.enriched_instruction == decomposition.enriched_instruction


def test_whenever_the_rules_text_reads_in_the_grammar_it_asks_for_the_cases_ops():
    """Why the explicit route is safe: the rules never resolve a reference wrongly, they leave it unreadable."""
    from cogniedit.decompose.rules import decompose_rules
    from cogniedit.shapes.decomposer.stages import answer_ops, same_ops

    read = 0
    for phrasing in ("paraphrase", "reasoning"):
        for case in generate_cases(150, 11, phrasing=phrasing, split="eval"):
            ops = answer_ops(decompose_rules(case.instruction).enriched_instruction, case.source, case.world)
            if ops is not None:
                read += 1
                assert same_ops(ops, case.ops), case.instruction
    assert read > 150  # every paraphrase and a few reasoning cases
