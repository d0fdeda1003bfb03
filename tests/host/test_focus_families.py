"""Token Focus and the CogniEdit samplers on FLUX.2 klein, LongCat-Image(-Edit) and Mage-Flow(-Edit), in-process
against the real ComfyUI: tiny DiTs built from ComfyUI's own classes, conditioning made by ComfyUI's own tokenizer
and text-encoder classes (their real templates, cuts and padding) on a tiny llama whose hidden states show the token
at each position, reference latents as each family's edit nodes attach them (FLUX.2: several ReferenceLatent).

Contract: the spans land on the phrase's tokens in the conditioning the DiT actually receives; strength 0 samples
bit-identically to the unpatched model; the attention mass on the phrase rises with strength; the sampler and guider
with focus off equal the core graph; families whose text layout is not handled are refused clearly. FLUX.2 dev (its
tokenizer read from the CLIP): test_focus_flux2_dev.py.
"""

from __future__ import annotations

import types

import pytest
import torch

from comfy_inprocess import pack_module
from comfy_inprocess import random_image
from tiny_families import (TINY_TEXT, assert_focus_off_sampling_is_the_core_graph, encode, first_step_phrase_mass,
                           received_contexts, sample, tiny_clip, tiny_flux2, tiny_joyimage, tiny_longcat,
                           tiny_mage_flow, token_ids_of, token_revealing_te)

pytestmark = pytest.mark.host

PROMPT = 'make the "left" cup red'  # LongCat tokenizes the quoted word one character at a time
PHRASES = "left, red"
LATENT = {"flux2_klein": (128, 8), "longcat": (16, 8), "mage_flow": (128, 8)}  # channels, side


@pytest.fixture(scope="module")
def focus(comfy):
    return pack_module("nodes.focus")


@pytest.fixture(scope="module")
def families(comfy):
    """family -> namespace(model, te, positive, negative, layout): conditionings encoded by the family's own classes,
    with reference latents attached the way its edit nodes do."""
    out = {}
    builders = {"flux2_klein": lambda: tiny_flux2(comfy, text_width=3 * TINY_TEXT),
                "longcat": lambda: tiny_longcat(comfy, text_width=TINY_TEXT),
                "mage_flow": lambda: tiny_mage_flow(comfy, text_width=TINY_TEXT)}
    for family, build in builders.items():
        tokenizer, te = token_revealing_te(comfy, family)
        channels, side = LATENT[family]
        refs = [torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(k)) for k in (1, 2)]
        positive = [[encode(tokenizer, te, PROMPT), {}]]
        negative = [[encode(tokenizer, te, "blurry"), {}]]
        if family == "flux2_klein":  # FLUX.2 multi-reference: one ReferenceLatent node per image
            for ref in refs:
                positive = comfy.edit.ReferenceLatent.execute(positive, {"samples": ref}).args[0]
                negative = comfy.edit.ReferenceLatent.execute(negative, {"samples": ref}).args[0]
        else:  # TextEncodeMageFlowEdit / TextEncodeQwenImageEdit attach their references to both
            positive, negative = (comfy.node_helpers.conditioning_set_values(c, {"reference_latents": refs[:1]},
                                                                           append=True) for c in (positive, negative))
        if family == "longcat":  # ComfyUI's LongCat Image Edit blueprint: FluxKontextMultiReferenceLatentMethod
            positive, negative = (comfy.node_helpers.conditioning_set_values(c, {"reference_latents_method": "index"})
                                  for c in (positive, negative))
        layout = "flux2_klein" if family == "flux2_klein" else "auto"  # the tiny klein's text width is not 7680
        out[family] = types.SimpleNamespace(model=build(), te=te, positive=positive, negative=negative,
                                            layout=layout, latent={"samples": torch.zeros(1, channels, side, side)})
    return out


def run_node(focus, model, case, **kwargs):
    settings = dict(prompt=PROMPT, phrases=PHRASES, layout=case.layout, mode="training_free_bias", strength=3.0,
                    blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True)
    settings.update(kwargs)
    return focus.CogniEditTokenFocus.execute(model, **settings).args[:3]  # [3]: the attention maps


@pytest.mark.parametrize("family,with_image", [("flux2_klein", False), ("longcat", False), ("longcat", True),
                                               ("mage_flow", False), ("mage_flow", True)])
def test_spans_land_on_the_phrase_in_what_the_model_receives(comfy, focus, families, family, with_image):
    """The node's positions, resolved against the context that reached the DiT (after the encoder's template cut
    and padding and the model's own padding), hold exactly the phrase's tokens; with a source image the encoders
    switch to their edit templates (LongCat's vision block, Mage's "Image 1:" prefix), which changes nothing."""
    from cogniedit.text.tokenizer import load_qwen25_tokenizer

    case = families[family]
    if with_image:
        tokenizer, _ = token_revealing_te(comfy, family)
        positive = [[encode(tokenizer, case.te, PROMPT, images=[random_image(32, 32)]), case.positive[0][1]]]
        assert positive[0][0].shape[1] > case.positive[0][0].shape[1]  # the edit template: more before the prompt
        case = types.SimpleNamespace(**dict(vars(case), positive=positive))
    plan, report = focus.build_plan(case.model, PROMPT, PHRASES, case.layout, "training_free_bias", 3.0, "all", 0.0,
                                    1.0, True)
    bias = pack_module("cogniedit.focus.bias")
    decode = load_qwen25_tokenizer().decode
    cond = received_contexts(comfy, case.model, case)[0]
    ids = token_ids_of(case.te, cond)
    weights = bias.focus_weights([plan.tokens.entry], cond.shape[1])[0]
    focused = [ids[p] for p in weights.nonzero().flatten().tolist()]
    assert None not in focused
    assert decode(focused).replace(" ", "").replace('"', "") == "leftred", (decode(focused), report)
    # the whole instruction too (learned focus' range): every prompt token, nothing else
    start, length = plan.tokens.prompt_range
    start = start + cond.shape[1] if start < 0 else start
    assert decode(ids[start:start + length]) == PROMPT


@pytest.mark.parametrize("family", ["flux2_klein", "longcat", "mage_flow"])
def test_strength_zero_is_bit_identical_and_strength_raises_the_mass(comfy, focus, families, family):
    case = families[family]
    base = sample(comfy, case.model, case)
    off, report, _ = run_node(focus, case.model, case, strength=0.0)
    assert torch.equal(sample(comfy, off, case), base) and "returned unpatched" in report
    on, report, _ = run_node(focus, case.model, case)
    assert not torch.equal(sample(comfy, on, case), base)
    masses = {}
    for strength in (0.0, 3.0):
        plan, _ = focus.build_plan(case.model, PROMPT, PHRASES, case.layout, "training_free_bias", strength, "all",
                                   0.0, 1.0, True)
        masses[strength] = first_step_phrase_mass(comfy, focus, case.model, case, plan)
    assert masses[3.0] > 1.5 * masses[0.0], masses


@pytest.mark.parametrize("family", ["flux2_klein", "longcat", "mage_flow"])
def test_sampler_and_guider_with_focus_off_equal_the_core_graph(comfy, focus, families, family):
    """CogniEdit Sampler (source as a LATENT; the references the edit nodes attached are kept, none added) and the
    Guider with Token Focus at strength 0 in the directives = KSampler / CFGGuider on the same conditioning."""
    case = families[family]
    _, _, off = run_node(focus, case.model, case, strength=0.0)
    focused, _, on = run_node(focus, case.model, case)
    assert_focus_off_sampling_is_the_core_graph(comfy, pack_module("nodes.sampler"), case.model, case, off, focused,
                                                on)


def test_flux2_encoder_is_told_from_the_text_width(comfy, focus):
    """klein's widths give its Qwen3 layout; dev's gives flux2_dev, which needs the CLIP (test_focus_flux2_dev.py)."""
    klein = tiny_flux2(comfy, text_width=7680)
    plan, report = focus.build_plan(klein, PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0, True)
    assert "layout: flux2_klein" in report and plan.tokens.count > 0
    dev = tiny_flux2(comfy, text_width=15360)
    with pytest.raises(ValueError, match="FLUX.2 dev needs its clip input: connect the CLIP that encodes the prompt"):
        focus.build_plan(dev, PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0, True)
    odd = tiny_flux2(comfy, text_width=3 * TINY_TEXT)
    with pytest.raises(ValueError, match="text width is 48, none of the known encoders.*choose layout flux2_klein"):
        focus.build_plan(odd, PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0, True)
    with pytest.raises(ValueError, match="layout 'longcat' does not fit this model .flux2."):
        focus.build_plan(odd, PROMPT, PHRASES, "longcat", "training_free_bias", 1.0, "all", 0.0, 1.0, True)


def test_a_prompt_that_was_not_encoded_is_reported_on_klein(comfy, focus, families):
    """klein counts from the start (nothing precedes the prompt but a fixed head): a prompt that is not what was
    encoded puts the phrase outside the 512-token text, and the run-time tally says so."""
    case = families["flux2_klein"]
    long_prompt = "a very long preamble " * 200 + PROMPT  # > 512 tokens: the phrase lies beyond the encoded text
    patched, _, _ = run_node(focus, case.model, case, prompt=long_prompt)
    tally = next(getattr(w, "cogniedit_tally") for ws in patched.wrappers[
        comfy.comfy.patcher_extension.WrappersMP.OUTER_SAMPLE].values() for w in ws if hasattr(w, "cogniedit_tally"))
    out = sample(comfy, patched, case)
    line, warnings = tally.summary()
    assert any("FOCUS NOT APPLIED" in w for w in warnings), (line, warnings)
    assert torch.equal(out, sample(comfy, case.model, case))


def test_a_family_with_text_after_the_image_is_refused_with_the_reason(comfy, focus):
    with pytest.raises(ValueError, match=r"not supported for this model type \(JoyImage\) \(JoyImage puts the text "
                       r"after the image tokens .*\); it works on .*FLUX.2 klein"):
        focus.build_plan(tiny_joyimage(comfy), PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0,
                         True)


@pytest.mark.parametrize("family,file_family", [("flux2_klein", "flux2_klein"), ("longcat", "longcat_image"),
                                                ("mage_flow", "mage_flow")])
def test_learned_focus_where_a_focus_file_fits_the_model(comfy, focus, families, family, file_family):
    """A focus-weights file made for this DiT acts on the instruction's tokens (its range counted as the layout
    counts); a file made for another family is refused."""
    weights, learned = pack_module("cogniedit.focus.weights_file"), pack_module("cogniedit.focus.learned")
    case = families[family]
    dit = case.model.model.diffusion_model
    module = learned.LearnedFocus.for_model(dit, blocks="all", xi=2, window=8)
    torch.nn.init.normal_(module.soft_tokens, std=1.0)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    meta = {"family": file_family, "base_hash": weights.base_model_hash(dit), "blocks": ",".join(
        str(i) for i in module.block_indices), "xi": "2", "window": "8", "hidden_size": str(module.hidden_size)}
    patched, report, _ = run_node(focus, case.model, case, mode="learned", focus_weights=(state, meta))
    assert "learned focus: blocks" in report
    assert not torch.equal(sample(comfy, patched, case), sample(comfy, case.model, case))
    other = dict(meta, family="qwen_image_edit")
    with pytest.raises(weights.FocusWeightsError, match="mismatch: family"):
        run_node(focus, case.model, case, mode="learned", focus_weights=(state, other))


@pytest.mark.parametrize("family", ["longcat", "mage_flow"])
def test_the_sampler_reencodes_the_instruction_as_the_familys_edit_node(comfy, families, family):
    """With directives and a clip, the CogniEdit Sampler re-encodes the enriched instruction as the family's own edit
    node encodes a prompt with the source image: Mage-Flow TextEncodeMageFlowEdit, LongCat TextEncodeQwenImageEdit
    (ComfyUI's LongCat Image Edit blueprint), not Qwen-Image-Edit's template; the positive's options are kept."""
    from comfy_extras.nodes_mage import TextEncodeMageFlowEdit
    from comfy_extras.nodes_qwen import TextEncodeQwenImageEdit

    sampler = pack_module("nodes.sampler")
    case, clip = families[family], tiny_clip(comfy, family)
    image = random_image(64, 64, seed=4)
    ours = sampler.reencode(clip, case.model, PROMPT, image, case.positive)
    if family == "mage_flow":
        expected = TextEncodeMageFlowEdit.execute(clip, PROMPT, vae=None, images={"image_1": image}).args[0]
    else:
        expected = TextEncodeQwenImageEdit.execute(clip, PROMPT, vae=None, image=image).args[0]
    assert torch.equal(ours[0][0], expected[0][0])
    assert ours[0][1]["reference_latents"] is case.positive[0][1]["reference_latents"]
