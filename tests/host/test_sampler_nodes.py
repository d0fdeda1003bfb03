"""CogniEdit sampling nodes in-process against the real ComfyUI, on tiny Flux Kontext and Qwen-Image(-Edit) models.

The all-in-one node with focus off must give exactly (torch.equal) what the equivalent core graph gives:
VAEEncode -> ReferenceLatent (positive and negative) -> KSampler / SamplerCustomAdvanced (euler, same scheduler).
"""

from __future__ import annotations

import pytest
import torch

from comfy_inprocess import (flux_conditioning, pack_module, qwen_conditioning, random_image, random_state_dict,
                             tiny_clip_l, tiny_flux_kontext, tiny_qwen_image, tiny_taef1_vae, tiny_wan_vae)
from tiny_families import tiny_flux2

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def sampler(comfy):
    return pack_module("nodes.sampler")


@pytest.fixture(scope="module")
def models(comfy):
    """name -> (model, vae, conditioning factory)."""
    return {
        "flux_kontext": (tiny_flux_kontext(comfy), tiny_taef1_vae(comfy), flux_conditioning),
        "qwen_image_edit": (tiny_qwen_image(comfy), tiny_wan_vae(comfy), qwen_conditioning),
    }


def run_node(sampler, model, positive, negative, seed=42, steps=3, cfg=1.0, denoise=1.0, eta=0.0, **kwargs):
    latent, report = sampler.CogniEditSampler.execute(model, positive, negative, seed, steps, cfg, denoise, eta,
                                                      **kwargs).args
    return latent, report


def core_references(comfy, vae, image, positive, negative):
    """The core graph's front half: VAEEncode + ReferenceLatent on both conditionings."""
    (latent,) = comfy.nodes.VAEEncode().encode(vae, image)
    positive = comfy.edit.ReferenceLatent.execute(positive, latent).args[0]
    negative = comfy.edit.ReferenceLatent.execute(negative, latent).args[0]
    return latent, positive, negative


@pytest.mark.parametrize("name", ["flux_kontext", "qwen_image_edit"])
@pytest.mark.parametrize("cfg,denoise,scheduler", [(1.0, 1.0, "simple"), (2.5, 0.6, "simple"), (2.0, 1.0, "beta")])
def test_all_in_one_equals_core_ksampler(comfy, sampler, models, name, cfg, denoise, scheduler):
    model, vae, conditioning = models[name]
    positive, negative = conditioning(seed=1)
    image = random_image(64, 96, seed=2)
    ours, report = run_node(sampler, model, positive, negative, seed=42, steps=3, cfg=cfg, denoise=denoise,
                            scheduler=scheduler, source_image=image, vae=vae)

    latent, ref_pos, ref_neg = core_references(comfy, vae, image, positive, negative)
    (expected,) = comfy.nodes.KSampler().sample(model, 42, 3, cfg, "euler", scheduler, ref_pos, ref_neg, latent,
                                                denoise=denoise)
    assert torch.equal(ours["samples"], expected["samples"]), (ours["samples"] - expected["samples"]).abs().max()
    assert "focus: off" in report and "seed: 42" in report


@pytest.mark.parametrize("name", ["flux_kontext", "qwen_image_edit"])
def test_all_in_one_equals_sampler_custom_advanced_with_latent_source(comfy, sampler, models, name):
    model, vae, conditioning = models[name]
    positive, negative = conditioning(seed=3)
    latent, ref_pos, ref_neg = core_references(comfy, vae, random_image(96, 64, seed=4), positive, negative)
    ours, _ = run_node(sampler, model, positive, negative, seed=7, steps=4, cfg=3.0, source_latent=latent)

    ncs = comfy.ncs
    expected = ncs.SamplerCustomAdvanced.execute(
        ncs.RandomNoise.execute(7).args[0], ncs.CFGGuider.execute(model, ref_pos, ref_neg, 3.0).args[0],
        ncs.KSamplerSelect.execute("euler").args[0], ncs.BasicScheduler.execute(model, "simple", 4, 1.0).args[0],
        latent).args[0]
    assert torch.equal(ours["samples"], expected["samples"])


def test_flow_sampler_eta0_equals_core_euler_and_sde_differs(comfy, sampler, models):
    """The SAMPLER node (the trainer's step math) through SamplerCustomAdvanced: eta 0 = core euler, bit for bit."""
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning()
    latent, ref_pos, ref_neg = core_references(comfy, vae, random_image(64, 64), positive, negative)
    ncs = comfy.ncs

    def run(sampler_object, seed=5):
        return ncs.SamplerCustomAdvanced.execute(
            ncs.RandomNoise.execute(seed).args[0], ncs.CFGGuider.execute(model, ref_pos, ref_neg, 2.0).args[0],
            sampler_object, ncs.BasicScheduler.execute(model, "simple", 5, 1.0).args[0], latent).args[0]["samples"]

    euler = run(ncs.KSamplerSelect.execute("euler").args[0])
    assert torch.equal(run(sampler.CogniEditSDESampler.execute(0.0).args[0]), euler)
    sde = run(sampler.CogniEditSDESampler.execute(0.7).args[0])
    assert torch.isfinite(sde).all() and not torch.equal(sde, euler)
    assert torch.equal(run(sampler.CogniEditSDESampler.execute(0.7).args[0]), sde)  # seeded: reproducible
    assert not torch.equal(run(sampler.CogniEditSDESampler.execute(0.7).args[0], seed=6), sde)


def test_guider_without_directives_is_cfg_guider(comfy, sampler, models):
    model, vae, conditioning = models["flux_kontext"]
    positive, negative = conditioning()
    latent, ref_pos, ref_neg = core_references(comfy, vae, random_image(64, 64), positive, negative)
    ncs = comfy.ncs

    def run(guider):
        return ncs.SamplerCustomAdvanced.execute(
            ncs.RandomNoise.execute(1).args[0], guider, ncs.KSamplerSelect.execute("euler").args[0],
            ncs.BasicScheduler.execute(model, "simple", 3, 1.0).args[0], latent).args[0]["samples"]

    ours = sampler.CogniEditGuider.execute(model, ref_pos, ref_neg, 2.0).args[0]
    assert isinstance(ours, comfy.samplers.CFGGuider) and ours.model_patcher is model
    assert torch.equal(run(ours), run(ncs.CFGGuider.execute(model, ref_pos, ref_neg, 2.0).args[0]))


def _halving_focus_patch(comfy):
    """A focus patch as the Token Focus node hands it over: clone + a real DIFFUSION_MODEL wrapper."""
    import comfy.patcher_extension as pe

    def patch(model):
        patched = model.clone()
        patched.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "cogniedit_test",
                                     lambda executor, *args, **kwargs: executor(*args, **kwargs) * 0.5)
        return patched

    patch.description = "test patch"
    return patch


def test_focus_patch_from_directives_is_applied_to_a_clone(comfy, sampler, models):
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning()
    image = random_image(64, 64)
    directives = {"format": "cogniedit.directives", "version": 1, "enriched_instruction": "make the cup red",
                  "focus_patch": _halving_focus_patch(comfy)}
    plain, _ = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    focused, report = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae,
                               directives=directives)
    assert "focus: test patch" in report
    assert not torch.equal(plain["samples"], focused["samples"])
    assert not model.wrappers and not model.model_options.get("transformer_options", {}).get("wrappers")  # untouched
    # directives without a focus patch and without a clip: exactly the plain result, and the report says why
    bare = {k: v for k, v in directives.items() if k != "focus_patch"}
    again, report = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae,
                             directives=bare)
    assert torch.equal(again["samples"], plain["samples"]) and "connect a clip" in report
    # a MODEL patched upstream (a MODEL -> MODEL focus node) is reported, not patched again
    patched_model = _halving_focus_patch(comfy)(model)
    _, report = run_node(sampler, patched_model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    assert "focus: set on the MODEL (cogniedit_test)" in report
    with pytest.raises(ValueError, match="callable"):
        run_node(sampler, model, positive, negative, source_image=image, vae=vae,
                 directives={**bare, "focus_patch": "not callable"})


def test_directives_with_clip_reencode_the_enriched_instruction(comfy, sampler, models):
    """Flux Kontext: the enriched instruction is encoded by the CLIP, the positive's guidance is carried over;
    equal to CLIPTextEncode -> FluxGuidance -> ReferenceLatent -> KSampler with that text."""
    from comfy_extras.nodes_flux import FluxGuidance

    model, vae, conditioning = models["flux_kontext"]
    clip = tiny_clip_l(comfy)
    positive, negative = conditioning(guidance=3.5)
    image = random_image(64, 64, seed=8)
    directives = {"format": "cogniedit.directives", "version": 1, "instruction": "make the cup red",
                  "enriched_instruction": "change the colour of the left cup to bright red", "focus": []}
    ours, report = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae,
                            directives=directives, clip=clip)
    assert "re-encoded" in report

    (encoded,) = comfy.nodes.CLIPTextEncode().encode(clip, directives["enriched_instruction"])
    encoded = FluxGuidance.execute(encoded, 3.5).args[0]
    latent, ref_pos, ref_neg = core_references(comfy, vae, image, encoded, negative)
    (expected,) = comfy.nodes.KSampler().sample(model, 42, 3, 2.0, "euler", "simple", ref_pos, ref_neg, latent)
    assert torch.equal(ours["samples"], expected["samples"])
    plain, _ = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    assert not torch.equal(plain["samples"], ours["samples"])


@pytest.mark.parametrize("name", ["flux_kontext", "qwen_image_edit"])
@pytest.mark.parametrize("height,width,align,expected", [
    (64, 96, "crop", (64, 96)), (100, 70, "crop", (96, 64)), (100, 70, "pad", (128, 96))])
def test_output_size_is_the_source_size(sampler, models, name, height, width, align, expected):
    model, vae, conditioning = models[name]
    positive, negative = conditioning()
    image = random_image(height, width, seed=9)
    out, report = run_node(sampler, model, positive, negative, steps=2, source_image=image, vae=vae, align=align)
    assert tuple(out["samples"].shape[-2:]) == (expected[0] // 8, expected[1] // 8)
    assert f"{expected[1]}x{expected[0]} px" in report


FLUX2_TEXT = 48  # a narrow tiny FLUX.2 (the size handling does not depend on the text width)


def tiny_taef2_vae(comfy, seed: int = 0):
    """FLUX.2's 128-channel TAESD (``taef2``: /8 convolutions, then 2x2 patches into 128 channels = /16) as a real
    comfy.sd.VAE, loaded as VAELoader loads taef2 (the latent-channel count from metadata)."""
    from comfy.taesd.taesd import TAESD

    state = {k: v for k, v in random_state_dict(TAESD(latent_channels=128), seed, std=None).items()
             if k.startswith("taesd_")}
    state["vae_scale"], state["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
    return comfy.sd.VAE(sd=state, metadata={"tae_latent_channels": 128})


@pytest.fixture(scope="module")
def flux2(comfy):
    generator = torch.Generator().manual_seed(4)
    positive = [[torch.randn(1, 8, FLUX2_TEXT, generator=generator), {}]]
    negative = [[torch.zeros(1, 8, FLUX2_TEXT), {}]]
    return tiny_flux2(comfy, text_width=FLUX2_TEXT), tiny_taef2_vae(comfy), positive, negative


@pytest.mark.parametrize("height,width,align,expected", [(160, 160, "crop", (160, 160)), (100, 70, "pad", (128, 96))])
def test_flux2_sizes_use_the_models_latent_factor(comfy, sampler, flux2, height, width, align, expected):
    """FLUX.2 latents are /16 (its latent format; taef2 patchifies /8 features 2x2): the report, the reference note
    and the source-latent size check count 16 px per latent cell, and the result equals the core graph's."""
    model, vae, positive, negative = flux2
    image = random_image(height, width, seed=9)
    out, report = run_node(sampler, model, positive, negative, steps=2, source_image=image, vae=vae, align=align)
    assert tuple(out["samples"].shape[-2:]) == (expected[0] // 16, expected[1] // 16)
    assert f"= {expected[1]}x{expected[0]} px" in report, report
    latent, ref_pos, ref_neg = core_references(comfy, vae, sampler.align_image(image, align), positive, negative)
    (core,) = comfy.nodes.KSampler().sample(model, 42, 2, 1.0, "euler", "simple", ref_pos, ref_neg, latent)
    assert torch.equal(out["samples"], core["samples"])
    _, report = run_node(sampler, model, ref_pos, negative, steps=1, source_latent={"samples": torch.zeros(
        1, 128, 4, 4)}, denoise=0.0)  # a 64x64 output under a reference of the source's size
    assert f"already there, but {expected[1]}x{expected[0]} px, not the output's 64x64" in report, report


def test_flux2_scheduler_equals_the_klein_templates_graph(comfy, sampler, flux2):
    """scheduler Flux2Scheduler = ComfyUI's FLUX.2 klein template: SamplerCustomAdvanced with Flux2Scheduler at the
    image size, bit for bit; it is not BasicScheduler's fixed shift 2.02; denoise < 1 keeps its last steps."""
    from comfy_extras.nodes_flux import Flux2Scheduler

    model, vae, positive, negative = flux2
    image = random_image(96, 160, seed=3)
    latent, ref_pos, ref_neg = core_references(comfy, vae, image, positive, negative)
    ours, report = run_node(sampler, model, positive, negative, seed=7, steps=4, cfg=2.0, scheduler="Flux2Scheduler",
                            source_image=image, vae=vae)
    ncs = comfy.ncs
    template_sigmas = Flux2Scheduler.execute(4, 160, 96).args[0]
    expected = ncs.SamplerCustomAdvanced.execute(
        ncs.RandomNoise.execute(7).args[0], ncs.CFGGuider.execute(model, ref_pos, ref_neg, 2.0).args[0],
        ncs.KSamplerSelect.execute("euler").args[0], template_sigmas, latent).args[0]
    assert torch.equal(ours["samples"], expected["samples"])
    assert "scheduler: Flux2Scheduler at 160x96 px" in report
    assert f"sigmas: {template_sigmas[0].item():.4f} -> 0.0000 (4 steps)" in report, report
    basic, _ = run_node(sampler, model, positive, negative, seed=7, steps=4, cfg=2.0, source_image=image, vae=vae)
    assert not torch.equal(basic["samples"], ours["samples"])
    cut = sampler.scheduled_sigmas(model, "Flux2Scheduler", 3, 0.5, latent["samples"], 16)
    assert torch.equal(cut, Flux2Scheduler.execute(6, 160, 96).args[0][-4:])


def test_source_latent_size_check_counts_the_models_factor(sampler, models, flux2):
    """250x250 latent cells are 4000x4000 px on FLUX.2 (refused) but 2000x2000 px on Flux Kontext / Qwen-Image
    (accepted); 128x128 cells are FLUX.2's 2048x2048 limit."""
    model, _, positive, negative = flux2
    with pytest.raises(ValueError, match="source latent 4000x4000 px"):
        run_node(sampler, model, positive, negative, source_latent={"samples": torch.zeros(1, 128, 250, 250)})
    out, report = run_node(sampler, model, positive, negative, denoise=0.0,
                           source_latent={"samples": torch.zeros(1, 128, 128, 128)})
    assert out["samples"].shape[-1] == 128 and "= 2048x2048 px" in report
    for name, shape in (("flux_kontext", (1, 16, 250, 250)), ("qwen_image_edit", (1, 16, 1, 250, 250))):
        model, _, conditioning = models[name]
        positive, negative = conditioning()
        _, report = run_node(sampler, model, positive, negative, denoise=0.0, source_latent={"samples": torch.zeros(
            shape)})
        assert "= 2000x2000 px" in report, report


def test_align_keeps_pixels_in_place(sampler):
    image = random_image(70, 100, seed=3)
    cropped, padded = sampler.align_image(image, "crop"), sampler.align_image(image, "pad")
    assert cropped.shape[1:3] == (64, 96) and torch.equal(cropped, image[:, :64, :96])
    assert padded.shape[1:3] == (96, 128) and torch.equal(padded[:, :70, :100], image)
    assert torch.equal(padded[:, 70:, :100], image[:, -1:, :].expand(-1, 26, -1, -1))
    assert sampler.align_image(image[:, :64, :96], "pad").data_ptr() == image.data_ptr()  # aligned: untouched
    with pytest.raises(ValueError, match="pad"):
        sampler.align_image(random_image(20, 40), "crop")


def test_deterministic_for_a_seed(sampler, models):
    model, vae, conditioning = models["flux_kontext"]
    positive, negative = conditioning()
    image = random_image(64, 64, seed=5)
    first, _ = run_node(sampler, model, positive, negative, seed=11, cfg=2.0, eta=0.5, source_image=image, vae=vae)
    second, _ = run_node(sampler, model, positive, negative, seed=11, cfg=2.0, eta=0.5, source_image=image, vae=vae)
    other, _ = run_node(sampler, model, positive, negative, seed=12, cfg=2.0, eta=0.5, source_image=image, vae=vae)
    assert torch.equal(first["samples"], second["samples"])
    assert not torch.equal(first["samples"], other["samples"])


def test_reference_not_added_twice(comfy, sampler, models):
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning()
    image = random_image(64, 64, seed=6)
    latent, ref_pos, ref_neg = core_references(comfy, vae, image, positive, negative)
    plain, _ = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    given, report = run_node(sampler, model, ref_pos, ref_neg, cfg=2.0, source_image=image, vae=vae)
    assert "reference: positive already there; negative already there" in report
    assert torch.equal(plain["samples"], given["samples"])
    assert len(ref_pos[0][1]["reference_latents"]) == 1  # inputs are not modified
    # a reference at another size (TextEncodeQwenImageEdit's ~1 MP rescale) is kept but flagged in the report
    _, big_pos, _ = core_references(comfy, vae, random_image(128, 128, seed=6), positive, negative)
    _, report = run_node(sampler, model, big_pos, negative, cfg=2.0, source_image=image, vae=vae)
    assert "positive already there, but 128x128 px, not the output's 64x64: expect zoom/shift" in report
    assert "negative added" in report


def test_denoise_zero_returns_the_source_latent(comfy, sampler, models):
    model, vae, conditioning = models["flux_kontext"]
    positive, negative = conditioning()
    (latent,) = comfy.nodes.VAEEncode().encode(vae, random_image(64, 64, seed=7))
    out, report = run_node(sampler, model, positive, negative, denoise=0.0, source_latent=latent)
    assert torch.equal(out["samples"], latent["samples"]) and "denoise 0" in report


def test_progress_bar_and_live_previews(comfy, sampler, models):
    from latent_preview import LatentPreviewMethod

    model, vae, conditioning = models["flux_kontext"]
    positive, negative = conditioning()
    calls = []
    saved_hook, saved_method = comfy.utils.PROGRESS_BAR_HOOK, comfy.args.preview_method
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append(
        (value, total, preview)))
    comfy.args.preview_method = LatentPreviewMethod.Latent2RGB
    try:
        run_node(sampler, model, positive, negative, steps=4, source_image=random_image(64, 64), vae=vae)
    finally:
        comfy.utils.set_progress_bar_global_hook(saved_hook)
        comfy.args.preview_method = saved_method
    assert [value for value, _, _ in calls] == [1, 2, 3, 4] and all(total == 4 for _, total, _ in calls)
    assert all(preview is not None for _, _, preview in calls)  # a live preview image with every step


def test_clear_errors_for_bad_sources(sampler, models):
    model, vae, conditioning = models["flux_kontext"]
    positive, negative = conditioning()
    image = random_image(64, 64)
    with pytest.raises(ValueError, match="no source"):
        run_node(sampler, model, positive, negative)
    with pytest.raises(ValueError, match="needs a vae"):
        run_node(sampler, model, positive, negative, source_image=image)
    with pytest.raises(ValueError, match="not both"):
        run_node(sampler, model, positive, negative, source_image=image, vae=vae,
                 source_latent={"samples": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="eta"):
        sampler.flow_sampler(-0.1)


def test_every_input_has_a_tooltip(sampler):
    for node in sampler.NODES:
        node.VALIDATE_CLASS()
        assert node.GET_NODE_INFO_V1()["name"] == node.GET_SCHEMA().node_id  # what /object_info serves
        schema = node.define_schema()
        assert schema.node_id.startswith("CogniEdit")
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"


def test_token_focus_node_directives_drive_the_sampler(comfy, sampler, models):
    """With the real Token Focus node: its DIRECTIVES' focus patch in the sampler = sampling its patched MODEL."""
    focus = pack_module("nodes.focus")
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning(seed=1, tokens=9)  # "make the cat red" + the 5-token template suffix
    image = random_image(64, 64, seed=12)
    patched, _, directives = focus.CogniEditTokenFocus.execute(
        model, prompt="make the cat red", phrases="cat, red", layout="qwen_image", mode="training_free_bias",
        strength=3.0, blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True).args[:3]
    via_directives, report = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae,
                                      directives=directives)
    via_model, model_report = run_node(sampler, patched, positive, negative, cfg=2.0, source_image=image, vae=vae)
    plain, _ = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    assert torch.equal(via_directives["samples"], via_model["samples"])
    assert not torch.equal(via_directives["samples"], plain["samples"])
    assert "focus: training_free_bias" in report and "focus: set on the MODEL (cogniedit_focus)" in model_report


NOT_ENCODED = "look closely at this photo of a garden in spring and then make the cat red"


def test_the_report_says_what_focus_applied_while_sampling(comfy, sampler, models):
    """The sampler's report runs after sampling, so it reads the focus patch's run-time tally: calls biased and
    tokens hit, and a loud warning when the focus never landed (a prompt that is not what was encoded)."""
    focus = pack_module("nodes.focus")
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning(seed=1, tokens=9)
    image = random_image(64, 64, seed=12)
    settings = dict(phrases="cat, red", layout="qwen_image", mode="training_free_bias", strength=20.0,
                    blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True)
    for prompt, applied in (("make the cat red", "6 of 6 attention calls in the selected blocks and steps biased "
                             "(12 seen), 2 of 2 tokens hit"),
                            (NOT_ENCODED, "0 of 6 attention calls in the selected blocks and steps biased (12 seen), "
                             "0 of 2 tokens hit\nwarning: FOCUS NOT APPLIED: none of the 2 focus tokens")):
        patched, _, directives = focus.CogniEditTokenFocus.execute(model, prompt=prompt, **settings).args[:3]
        for via in ({"directives": directives}, {}):
            _, report = run_node(sampler, patched if not via else model, positive, negative, cfg=2.0,
                                 source_image=image, vae=vae, **via)
            assert f"focus applied: {applied}" in report, report
    _, report = run_node(sampler, model, positive, negative, cfg=2.0, source_image=image, vae=vae)
    assert "focus: off" in report and "focus applied" not in report


def test_an_oversized_source_is_refused_before_encoding(sampler, models):
    """A 4000x4000 source ran for a minute into a raw "can't allocate 250000000000 bytes": it is refused at once,
    with the limit and the fix. (expand: a 4000x4000 IMAGE that allocates nothing.)"""
    model, vae, conditioning = models["qwen_image_edit"]
    positive, negative = conditioning()
    huge = torch.rand(1, 1, 1, 3).expand(1, 4000, 4000, 3)
    with pytest.raises(ValueError) as info:
        run_node(sampler, model, positive, negative, source_image=huge, vae=vae)
    message = str(info.value)
    assert "4000x4000 px (16.0 MP)" in message and "limit of 4.2 MP" in message and "\n" not in message
    assert "ImageScaleToTotalPixels" in message
    with pytest.raises(ValueError, match="source latent 4000x4000 px .* before VAE Encode"):
        run_node(sampler, model, positive, negative, source_latent={"samples": torch.zeros(1, 16, 1, 500, 500)})
    out, _ = run_node(sampler, model, positive, negative, steps=1,  # at the limit: accepted
                      source_latent={"samples": torch.zeros(1, 16, 1, 256, 256)}, denoise=0.0)
    assert out["samples"].shape[-1] == 256
