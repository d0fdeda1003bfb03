"""Token Focus's attention_maps output on the real ComfyUI (tiny Qwen-Image(-Edit) and Flux Kontext DiTs): one row per
focus phrase (source | without focus | with focus), focus puts more of the image's attention on the phrase tokens
than the same calls without it, drawing maps never changes the MODEL output (strength 0 stays bit-identical), and
without maps_conditioning nothing runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_inprocess import flux_conditioning, pack_module, qwen_conditioning, tiny_flux_kontext, tiny_qwen_image

pytestmark = pytest.mark.host

QWEN_PROMPT = "make the cat red"  # 4 prompt tokens + 5 template-suffix tokens = the 9 conditioning tokens
FLUX_PROMPT = "make the left cup red"
LABEL = 14  # label strip above each cell (attention_maps.render_phrase_maps)


@pytest.fixture(scope="module")
def focus(comfy):
    return pack_module("nodes.focus")


@pytest.fixture(scope="module")
def maps_module(comfy):
    return pack_module("nodes.focus_maps")


@pytest.fixture(scope="module")
def qwen(comfy):
    positive, negative = qwen_conditioning(seed=1, tokens=9)
    return tiny_qwen_image(comfy), positive, negative


def run_node(focus, model, prompt=QWEN_PROMPT, phrases="cat, red", **kwargs):
    settings = dict(prompt=prompt, phrases=phrases, layout="auto", mode="training_free_bias", strength=3.0)
    settings.update(kwargs)
    return focus.CogniEditTokenFocus.execute(model, **settings).args


def sample(comfy, model, positive, negative, steps=3):
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    return comfy.nodes.KSampler().sample(model, 11, steps, 2.0, "euler", "simple", positive, negative,
                                         latent)[0]["samples"]


def heat_value(cell: np.ndarray, ramp) -> np.ndarray:
    """Per pixel, the value in [0, 1] whose colour on the sheet's ramp is nearest (the rendering inverted)."""
    levels = np.linspace(0, 1, 256)
    colours = ramp(levels, 1.0).astype(np.float64)                                 # [256, 3]
    distance = ((cell[..., None, :].astype(np.float64) - colours) ** 2).sum(-1)    # [h, w, 256]
    return levels[distance.argmin(-1)]


def test_the_output_has_one_row_per_phrase_and_focus_raises_the_phrase_attention(comfy, focus, qwen):
    model, positive, _ = qwen
    latent = {"samples": torch.zeros(1, 16, 8, 8)}  # 4x4 image tokens
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    *_, sheet = run_node(focus, model, maps_conditioning=positive, maps_latent=latent, maps_image=image)
    tile = pack_module("nodes.focus_maps").MAPS_TILE
    assert sheet.shape == (1, 2 * (tile + LABEL), 3 * tile, 3) and sheet.dtype == torch.float32  # rows: cat, red
    pixels = (sheet[0] * 255).round().byte().numpy()
    shown = (image[0] * 255).round().byte().numpy()
    from PIL import Image

    source = np.asarray(Image.fromarray(shown).resize((tile, tile), Image.NEAREST))
    assert np.array_equal(pixels[LABEL:LABEL + tile, :tile], source)  # the image heads each row

    # no overlay (no maps_image): the cells are pure ramp colours; with focus, more of each token's attention
    # is on the phrase, in every row (one colour scale per row)
    *_, bare = run_node(focus, model, maps_conditioning=positive, maps_latent=latent)
    ramp = pack_module("cogniedit.focus.attention_maps").heat
    pixels = (bare[0] * 255).round().byte().numpy()
    for row in range(2):
        top = row * (tile + LABEL) + LABEL
        without = heat_value(pixels[top:top + tile, tile:2 * tile], ramp)
        focused = heat_value(pixels[top:top + tile, 2 * tile:], ramp)
        assert focused.mean() > 1.5 * without.mean(), (row, focused.mean(), without.mean())
        assert focused.max() == 1.0  # the row's scale is its largest value


def test_probe_maps_mass_and_the_chosen_blocks_and_steps(comfy, focus, maps_module, qwen):
    model, positive, _ = qwen
    plan, _ = focus.build_plan(model, QWEN_PROMPT, "cat, red", "auto", "training_free_bias", 3.0, "all", 0.0, 1.0,
                               True)
    maps = maps_module.probe_maps(model, plan, positive, {"samples": torch.zeros(1, 16, 8, 8)}, "1",
                                  0.0, 0.5, 4)
    assert maps.phrases == [["cat", "red"]] and maps.base.shape == (1, 2, 4, 4)
    assert maps.blocks == [1] and maps.steps == [0, 1] and maps.calls == 2  # block 1, steps 0-1 of 4
    without, with_focus = maps.mass()
    assert (with_focus > without).all() and (maps.focused >= maps.base).all()
    assert (maps.focused <= 4.0 * maps.base + 1e-6).all()  # the bias multiplies each token's odds by 1 + s = 4
    off, _ = focus.build_plan(model, QWEN_PROMPT, "cat, red", "auto", "training_free_bias", 0.0, "all", 0.0, 1.0,
                              True)
    zero = maps_module.probe_maps(model, off, positive, {"samples": torch.zeros(1, 16, 8, 8)}, "1", 0.0, 0.5, 4)
    assert torch.equal(zero.base, zero.focused)
    # the first step sees the same latent with and without focus: the unbiased maps agree
    assert torch.allclose(zero.base, maps.base, atol=0.05)


def test_drawing_maps_never_changes_the_model_output(comfy, focus, qwen):
    model, positive, negative = qwen
    base = sample(comfy, model, positive, negative)
    zero, report, _, sheet = run_node(focus, model, strength=0.0, maps_conditioning=positive,
                                      maps_latent={"samples": torch.zeros(1, 16, 8, 8)})
    assert torch.equal(sample(comfy, zero, positive, negative), base) and "returned unpatched" in report
    assert sheet.shape[1] == 2 * (pack_module("nodes.focus_maps").MAPS_TILE + LABEL)
    on, _, _, _ = run_node(focus, model, maps_conditioning=positive, maps_latent={"samples": torch.zeros(1, 16, 8, 8)})
    plain, _, _, card = run_node(focus, model)
    assert torch.equal(sample(comfy, on, positive, negative), sample(comfy, plain, positive, negative))
    assert card.shape[0] == 1 and card.shape[1] < 100  # unconnected: a card saying what to connect, no probe run


@pytest.mark.parametrize("name", ["qwen_image_edit", "flux_kontext"])
def test_maps_of_edit_models_take_the_reference_size(comfy, focus, maps_module, name):
    if name == "flux_kontext":
        model, prompt, phrases = tiny_flux_kontext(comfy), FLUX_PROMPT, "left cup"
        positive, _ = flux_conditioning(seed=3, tokens=8)
    else:
        model, prompt, phrases = tiny_qwen_image(comfy), QWEN_PROMPT, "cat, red"
        positive, _ = qwen_conditioning(seed=2, tokens=20)  # 11 tokens before the prompt: counted from the end
    reference = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(4))
    positive = comfy.node_helpers.conditioning_set_values(positive, {"reference_latents": [reference]}, append=True)
    plan, _ = focus.build_plan(model, prompt, phrases, "auto", "training_free_bias", 3.0, "all", 0.0, 1.0, True)
    maps = maps_module.probe_maps(model, plan, positive, None, "all", 0.0, 0.5, 4)
    assert maps.base.shape[2:] == (4, 6)  # the noisy image's 2x2 patches of the reference-sized latent
    without, with_focus = maps.mass()
    assert (with_focus > without).all()


def test_maps_errors_are_one_line_with_the_fix(comfy, focus, qwen):
    model, positive, _ = qwen
    negative_only = [[positive[0][0], {}]]
    with pytest.raises(ValueError, match="connect maps_latent"):
        run_node(focus, model, maps_conditioning=negative_only)
    with pytest.raises(ValueError, match="hold no step"):
        run_node(focus, model, maps_conditioning=positive, maps_latent={"samples": torch.zeros(1, 16, 8, 8)},
                 maps_start_percent=0.3, maps_end_percent=0.45, maps_steps=4)  # steps 1 and 2 of 4: outside
    with pytest.raises(ValueError, match="select no block"):
        run_node(focus, model, maps_conditioning=positive, maps_latent={"samples": torch.zeros(1, 16, 8, 8)},
                 maps_blocks="7-9")
