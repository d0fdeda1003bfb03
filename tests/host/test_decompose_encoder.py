"""Instruction Decompose with backend text_encoder inside the real ComfyUI (in-process, CPU): the connected
encoder generates through ComfyUI's own path (clip.tokenize / clip.generate / clip.decode), and an encoder that
cannot generate is said so up front, with the backends that work."""

from __future__ import annotations

import pytest

from comfy_inprocess import bootstrap, pack_module, random_image

from cogniedit.decompose import ComfyTextEncoderBackend, DecomposeSettings, decompose
from cogniedit.decompose.prompt import build_messages, render_qwen_chat
from tests.fixtures.tiny_text_encoders import fit_to_answer, meta_clip, tiny_klein_clip, tiny_qwen3_vl_clip

pytestmark = pytest.mark.host

INSTRUCTION = "make the left cup red"
ANSWER = ("<info>two white cups on a table</info><think>the left cup is the one to change</think>"
          "<answer>Make the white cup on the left red.</answer><object>one red cup on the left</object>")
PROMPT = render_qwen_chat(build_messages(INSTRUCTION, with_image=False)) + "<think>\n\n</think>\n\n"  # Qwen3: no thinking


@pytest.fixture(scope="module")
def node(comfyui_root):
    import torch

    torch.set_num_threads(1)
    bootstrap(comfyui_root)
    return pack_module("nodes.decompose").InstructionDecompose


@pytest.fixture(scope="module")
def generation():
    return pack_module("nodes.encoder_generation")


@pytest.fixture(scope="module")
def klein_4b(node, generation):
    """Klein's Qwen3-4B class at tiny width, fitted to answer ANSWER to the prompt the node sends it."""
    clip = tiny_klein_clip("qwen3_4b")
    ability = generation.encoder_generation(clip)
    assert ability.can_generate and ability.thinks and not ability.sees_images, ability
    fit_to_answer(clip, PROMPT, ANSWER)
    return clip


def test_klein_qwen3_generates_and_its_answer_is_parsed(node, klein_4b):
    out = node.execute(image=random_image(32, 32), instruction=INSTRUCTION, backend="text_encoder", clip=klein_4b,
                       max_new_tokens=96)
    directives, enriched, report = out.result
    assert directives["raw"] == ANSWER  # ComfyUI's generate + decode, stopped at <|im_end|>
    assert directives["source"] == "mllm" and enriched == "Make the white cup on the left red."
    assert directives["description"] == "two white cups on a table"
    assert directives["targets"] == ["one red cup on the left"]
    assert [(p["text"], p["kind"]) for p in directives["focus"]] == [("white", "colour"), ("on the left", "position"),
                                                                     ("red", "colour")]
    assert "has no vision" in report and "Qwen3_4B" in report


def test_klein_qwen3_8b_generates_through_its_lm_head(node, generation):
    clip = tiny_klein_clip("qwen3_8b")
    language_model = clip.cond_stage_model.qwen3_8b.transformer
    assert type(language_model).__name__ == "Qwen3_8B" and hasattr(language_model.model, "lm_head")
    assert generation.encoder_generation(clip).can_generate
    out = node.execute(image=random_image(16, 16), instruction="add two birds", backend="text_encoder", clip=clip,
                       max_new_tokens=8)
    directives, _, report = out.result
    assert directives["source"] == "fallback" and directives["raw"].strip()  # random weights: text, not tags
    assert "failed" not in report and [p["text"] for p in directives["focus"]] == ["two"]


def _qwen_image_clip():
    import comfy.text_encoders.qwen_image as qwen_image

    return meta_clip(qwen_image.te(), qwen_image.QwenImageTokenizer)


@pytest.mark.parametrize("build, model, reason", [
    (_qwen_image_clip, "Qwen25_7BVLI", "config names no stop tokens, and it has no lm_head"),
    (lambda: meta_clip(*_longcat()), "Qwen25_7BVLI", "config names no stop tokens"),
    (lambda: meta_clip(*_flux1()), "FluxClipModel_", "holds no single language model"),
    (lambda: meta_clip(*_sd1()), "CLIPTextModel", "class implements no text generation"),
])
def test_encoders_that_cannot_generate_are_named_with_the_reason(node, generation, build, model, reason):
    ability = generation.encoder_generation(build())
    assert not ability.can_generate and ability.model == model and reason in ability.reason


def test_mage_flow_encoder_can_generate_and_sees_the_image(node, generation):
    import comfy.text_encoders.mage_flow as mage_flow

    ability = generation.encoder_generation(meta_clip(mage_flow.te(), mage_flow.MageFlowTokenizer))
    assert ability.can_generate and ability.sees_images and ability.model == "Qwen3VL_"


def _longcat():
    import comfy.text_encoders.longcat_image as longcat

    return longcat.te(), longcat.LongCatImageTokenizer


def _flux1():
    import comfy.text_encoders.flux as flux

    return flux.flux_clip(), flux.FluxTokenizer


def _sd1():
    from comfy import sd1_clip

    return sd1_clip.SD1ClipModel, sd1_clip.SD1Tokenizer


def test_qwen3_vl_generates_and_its_answer_is_parsed(node, generation):
    clip = tiny_qwen3_vl_clip()  # its vision tower is on the meta device: a text-only prompt (no image)
    ability = generation.encoder_generation(clip)
    assert ability.can_generate and ability.sees_images and ability.thinks and ability.model == "Qwen3VL_"
    fit_to_answer(clip, PROMPT, ANSWER)
    backend = ComfyTextEncoderBackend(generation.clip_generate_fn(clip, ability), "tiny-qwen3-vl")
    result = decompose(None, INSTRUCTION, backend, DecomposeSettings(max_new_tokens=96))
    assert result.raw == ANSWER and result.source == "mllm"
    assert result.enriched_instruction == "Make the white cup on the left red."


def test_qwen_image_encoder_is_refused_up_front_with_the_backends_that_work(node):
    clip = _qwen_image_clip()  # on the meta device: any attempt to generate would fail, not answer
    out = node.execute(image=random_image(16, 16), instruction=INSTRUCTION, backend="text_encoder", clip=clip)
    directives, enriched, report = out.result
    assert directives["source"] == "fallback" and enriched == INSTRUCTION and directives["raw"] == ""
    assert report.splitlines()[1].startswith("asked: nothing: the connected text encoder cannot generate")
    assert "Qwen25_7BVLI config names no stop tokens" in report and "failed" not in report
    assert "use openai_http, transformers_vlm or rules" in report and "…" not in report
    with pytest.raises(ValueError, match="cannot generate text .*use openai_http"):
        node.execute(image=random_image(16, 16), instruction=INSTRUCTION, backend="text_encoder", clip=clip,
                     strict=True)
