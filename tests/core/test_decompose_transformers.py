"""A real transformers generate round trip: tiny random Qwen2.5-VL built from its config, the real
Qwen2.5 tokenizer, the PIL image processor. Its answer is random tokens, which must fall back to
the rules with a warning; the raw answer must be exactly what the model generates for that image."""

import numpy as np
import pytest
import torch

from cogniedit.decompose import DecomposeSettings, DecompositionCache, TransformersVLMBackend, decompose
from cogniedit.decompose.prompt import build_messages
from tests.fixtures.tiny_models import tiny_qwen25_vl_backend

transformers = pytest.importorskip("transformers")
IMAGE_PAD_ID = 151655
SETTINGS = DecomposeSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def backend():
    return tiny_qwen25_vl_backend(max_pixels=112 * 112)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)


def test_image_reaches_the_model_as_vision_tokens(backend, image):
    inputs = backend.prepare(build_messages("make the left cup red"), image)
    grid = inputs["image_grid_thw"][0].tolist()
    assert (inputs["input_ids"] == IMAGE_PAD_ID).sum().item() == grid[0] * grid[1] * grid[2] // 4
    assert inputs["pixel_values"].shape[0] == grid[0] * grid[1] * grid[2]


def test_random_model_output_falls_back_to_rules_with_a_warning(backend, image):
    result = decompose(image, "make the left cup red", backend, SETTINGS)
    inputs = backend.prepare(build_messages("make the left cup red"), image)
    with torch.inference_mode():
        ids = backend.model.generate(**inputs, **backend.generation_kwargs(SETTINGS))
    expected = backend.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    assert result.raw == expected and result.raw.strip()  # the model's own text, not a stand-in
    assert result.source == "fallback" and "rule-based" in result.warnings[-1]
    assert [(p.text, p.kind) for p in result.focus] == [("left", "position"), ("red", "colour")]


def test_a_different_image_changes_the_answer_and_the_cache_key(backend, image):
    cache = DecompositionCache()
    first = decompose(image, "make the left cup red", backend, SETTINGS, cache=cache)
    other = decompose(255 - image, "make the left cup red", backend, SETTINGS, cache=cache)
    assert first.raw != other.raw and len(cache) == 2
    again = decompose(image, "make the left cup red", backend, SETTINGS, cache=cache)
    assert again.raw == first.raw and cache.hits == 1


def test_saved_folder_loads_through_the_torchvision_free_processor(backend, image, tmp_path):
    backend.model.save_pretrained(tmp_path)
    backend.processor.save_pretrained(tmp_path)
    from_folder = TransformersVLMBackend(str(tmp_path))
    answer = from_folder.generate(build_messages("add three birds"), image, SETTINGS)
    assert answer == backend.generate(build_messages("add three birds"), image, SETTINGS)
    assert from_folder.processor.image_processor.__class__.__name__.startswith("Qwen2VLImageProcessor")


def test_a_folder_without_a_model_falls_back_and_names_the_fix(tmp_path, image):
    result = decompose(image, "make the cup red", TransformersVLMBackend(str(tmp_path)), SETTINGS)
    assert result.source == "fallback" and "no config.json" in result.warnings[-1]


def test_cancel_stops_generation_between_tokens(backend, image):
    from cogniedit.decompose import Cancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # the user presses Cancel while tokens are being generated

    with pytest.raises(Cancelled):
        decompose(image, "make the left cup red", backend, DecomposeSettings(max_new_tokens=200), cancel=cancel)
    assert 3 < len(calls) < 200  # consulted per token, and generation stopped long before max_new_tokens


def test_allowed_roots_pick_the_folder_by_name(backend, image, tmp_path):
    folder = tmp_path / "LLM" / "tiny-qwen"
    backend.model.save_pretrained(folder)
    backend.processor.save_pretrained(folder)
    named = TransformersVLMBackend("tiny-qwen", allowed_roots=[tmp_path / "LLM"])
    assert named.model_path == str(folder.resolve())
    assert named.generate(build_messages("add three birds"), image, SETTINGS) == \
        backend.generate(build_messages("add three birds"), image, SETTINGS)
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        TransformersVLMBackend(str(folder), allowed_roots=[tmp_path / "elsewhere"])
