"""The shipped decomposer folder: stock transformers classes load it offline, the pack's backend reads it
unchanged (with and without torchvision), it names the right object on a reasoning case, and a malformed
answer falls back to the rules."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import numpy as np
import torch

from cogniedit.decompose import decompose
from cogniedit.decompose.backends import transformers_vlm
from cogniedit.decompose.parser import decomposition_from_answer
from cogniedit.decompose.settings import DecomposeSettings
from cogniedit.shapes.cases import EditCase, EditOp, apply_ops, touched_cells
from cogniedit.shapes.decomposer import DEFAULT_FOLDER, read_info
from cogniedit.shapes.decomposer.folder import prompt_fingerprint
from cogniedit.shapes.decomposer.scoring import score_decomposition
from cogniedit.shapes.decomposer.stages import answer_ops, info_text, same_ops, think_clause
from cogniedit.shapes.render import render_scene
from cogniedit.shapes.scene import Scene, ShapeObject

ROOT = Path(__file__).resolve().parents[2]


def test_folder_fits_the_package_and_is_package_data():
    files = sorted(p.name for p in DEFAULT_FOLDER.iterdir())
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
            "processor_config.json", "chat_template.jinja", "generation_config.json", "decomposer.json"} <= set(files)
    assert sum(p.stat().st_size for p in DEFAULT_FOLDER.iterdir()) <= 30 * 2 ** 20
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cogniedit.shapes"]
    for name in files:
        assert any(Path("weights/decomposer", name).match(g) for g in globs), name
    info = read_info()
    assert info["final"] and info["steps_done"] == info["steps"]


def test_stock_classes_load_the_folder():
    import transformers

    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(DEFAULT_FOLDER))
    auto = transformers.AutoModelForImageTextToText.from_pretrained(str(DEFAULT_FOLDER))
    assert type(auto) is type(model) and model.dtype == torch.float32
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == 151936 and model.lm_head.weight.data_ptr() == emb.data_ptr()
    processor = transformers.AutoProcessor.from_pretrained(str(DEFAULT_FOLDER))
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    from cogniedit.text.tokenizer import load_qwen25_tokenizer

    text = "make the left red circle blue <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|> 中文 ünï 123"
    assert processor.tokenizer(text)["input_ids"] == load_qwen25_tokenizer()(text)["input_ids"]  # the real ids


def test_the_folder_was_trained_with_the_prompt_the_backend_sends():
    assert read_info()["prompt_fingerprint"] == prompt_fingerprint(), (
        "cogniedit/decompose/prompt.py changed since the decomposer was trained: retrain it "
        "(python -m cogniedit.shapes.decomposer.train)")


def _reasoning_case():
    # "give the circle the colour of the square": the new colour is read off the image
    source = Scene((ShapeObject(0, 0, "circle", "red"), ShapeObject(1, 1, "square", "blue"),
                    ShapeObject(2, 2, "triangle", "green")))
    ops = (EditOp("recolour", (0, 0), colour="blue"),)
    return EditCase("hand-1", "colour", "give the circle the colour of the square", source, apply_ops(source, ops),
                    touched_cells(source, ops), ops, phrasing="reasoning", split="train")


@pytest.fixture(scope="module")
def backend():
    b = transformers_vlm.TransformersVLMBackend(model_path=str(DEFAULT_FOLDER))
    b.load()
    return b


@pytest.fixture(scope="module")
def reasoning_decomposition(backend):
    """The hand-made reasoning case and its decomposition by the shipped folder (greedy: one decode serves every
    test that reads it)."""
    case = _reasoning_case()
    return case, decompose(render_scene(case.source), case.instruction, backend)


def test_a_reasoning_case_names_the_right_object(reasoning_decomposition):
    case, result = reasoning_decomposition
    assert result.source == "mllm", result.warnings
    assert result.reasoning.startswith("the red circle in the top left corner "), result.reasoning
    ops = answer_ops(result.enriched_instruction, case.source)
    assert ops is not None and [op.cell for op in ops] == [(0, 0)], result.enriched_instruction


@pytest.mark.xfail(strict=True, reason="the shipped decomposer (8000 steps, phrasings 1:1:2; 37 % right on reasoning "
                   "cases) names the circle but transfers the wrong colour: its <think> says 'the red circle in the "
                   "top left corner becomes green'; passes once a retrained decomposer reads colour transfers right")
def test_a_reasoning_case_gets_the_transferred_colour(reasoning_decomposition):
    case, result = reasoning_decomposition
    assert think_clause(case.source, case.ops[0]) in result.reasoning, result.reasoning
    assert score_decomposition(case, result)["correct"], result.enriched_instruction


def test_the_shipped_folder_writes_the_stages_of_stages_py(reasoning_decomposition):
    # the weights and the training targets (stages.py) must not drift apart: the scene is listed in today's format
    case, result = reasoning_decomposition
    assert result.description == info_text(case.source), result.description


def test_without_torchvision_the_backend_builds_the_same_inputs(backend, monkeypatch):
    monkeypatch.setattr(transformers_vlm, "_has_torchvision", lambda: False)
    bare = transformers_vlm.TransformersVLMBackend(model_path=str(DEFAULT_FOLDER))
    bare.load()
    assert "ImageOnly" in type(bare.processor).__name__
    case = _reasoning_case()
    from cogniedit.decompose.prompt import build_messages

    a = backend.prepare(build_messages(case.instruction), render_scene(case.source))
    b = bare.prepare(build_messages(case.instruction), render_scene(case.source))
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.allclose(a["pixel_values"], b["pixel_values"], atol=1e-6)


def test_malformed_output_falls_back_to_the_rules(backend):
    case = _reasoning_case()
    cut = decompose(render_scene(case.source), case.instruction, backend, DecomposeSettings(max_new_tokens=6))
    assert cut.source == "fallback" and cut.enriched_instruction == case.instruction
    scored = score_decomposition(case, cut)
    assert scored["malformed"] and scored["fallback"] and not scored["correct"]
    garbage = decomposition_from_answer("<answer>answer here</answer>", case.instruction)
    assert score_decomposition(case, garbage)["malformed"]



def test_the_editor_checks_the_shipped_decomposers_answers_against_its_grammar(backend):
    from cogniedit.decompose.rules import decompose_rules
    from cogniedit.shapes.cogniedit_editor import CogniEditEditor
    from cogniedit.shapes.editor import load_default_editor

    case = _reasoning_case()
    explicit = "please paint the triangle purple"
    editor = CogniEditEditor(load_default_editor(steps=2), decompose=True, decomposer=backend)
    assert editor.decompose_check
    image = render_scene(case.source)
    editor.edit(np.stack([image, image]), [explicit, case.instruction])
    assert editor.last_checks[0] == "explicit"
    assert editor.last_instructions[0] == decompose_rules(explicit).enriched_instruction == "make the triangle purple"
    raw = decompose(image, case.instruction, backend)
    if editor.last_checks[1] == "answer":  # the model's own answer, only when it reads on its own <info>
        assert editor.last_instructions[1] == raw.enriched_instruction
    elif editor.last_checks[1] == "beam":  # its answer did not read: a beam that reads on its own <info>
        assert editor.last_instructions[1] != raw.enriched_instruction
        assert answer_ops(editor.last_instructions[1], case.source) is not None  # its <info> lists this scene
    else:
        assert editor.last_checks[1] == "fallback" and editor.last_instructions[1] == case.instruction
    unchecked = CogniEditEditor(load_default_editor(steps=2), decompose=True, decomposer=backend, decompose_check="off")
    unchecked.edit(image[None], [explicit])
    assert unchecked.last_instructions == [decompose(image, explicit, backend).enriched_instruction]


def test_where_the_answer_does_not_read_the_editor_takes_a_readable_beam(backend):
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.cogniedit_editor import CogniEditEditor
    from cogniedit.shapes.editor import load_default_editor

    # development seed 4242: the shipped folder's greedy answer to this one ("make the object over the right green
    # square red") names no single object on its own <info>; its beams hold one that reads, and it is right
    case = generate_cases(40, 4242, phrasing="reasoning", split="eval")[0]
    image = render_scene(case.source)[None]
    without = CogniEditEditor(load_default_editor(steps=2), decompose=True, decomposer=backend, decompose_beams=0)
    without.edit(image, [case.instruction])
    assert without.last_checks == ["fallback"] and without.last_instructions == [case.instruction]
    editor = CogniEditEditor(load_default_editor(steps=2), decompose=True, decomposer=backend)
    editor.edit(image, [case.instruction])
    assert editor.last_checks == ["beam"], editor.last_instructions
    assert same_ops(answer_ops(editor.last_instructions[0], case.source), case.ops), editor.last_instructions
    with pytest.raises(ValueError, match="decompose_beams must be 0"):
        CogniEditEditor(load_default_editor(steps=2), decompose=True, decomposer=backend, decompose_beams=-1)
