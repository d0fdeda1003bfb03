"""CogniEdit Token Focus node in-process against the real ComfyUI, on tiny Qwen-Image(-Edit) and Flux Kontext DiTs
sampled with ComfyUI's own KSampler / SamplerCustomAdvanced.

Contract: strength 0 (or no focus token) samples bit-identically to the unpatched model; nonzero strength changes
the output and raises the measured attention mass image queries put on the focused tokens; the source MODEL is
untouched; the node applied twice equals once; a focus-weights file made for another model is refused.
"""

from __future__ import annotations

import logging
import re
import types

import pytest
import torch

from comfy_inprocess import (flux_conditioning, pack_module, qwen_conditioning, tiny_flux_kontext,
                             tiny_qwen_image)

pytestmark = pytest.mark.host

QWEN_PROMPT = "make the cat red"  # Qwen-Image: 4 prompt tokens + 5 template-suffix tokens = 9
FLUX_PROMPT = "make the left cup red"  # T5: 5 tokens + EOS


@pytest.fixture(scope="module")
def focus(comfy):
    return pack_module("nodes.focus")


@pytest.fixture(scope="module")
def core(comfy):
    return types.SimpleNamespace(
        override=pack_module("cogniedit.focus.override"), weights=pack_module("cogniedit.focus.weights_file"),
        learned=pack_module("cogniedit.focus.learned"), decompose=pack_module("cogniedit.decompose.types"))


def with_reference(comfy, conditioning, seed):
    ref = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    return comfy.node_helpers.conditioning_set_values(conditioning, {"reference_latents": [ref]}, append=True)


@pytest.fixture(scope="module")
def cases(comfy):
    """name -> (model, positive, negative, prompt, layout, sampler path). The Qwen-Image-Edit conditioning has 11
    extra tokens in front of the prompt (what the vision tokens occupy), so only counting from the end finds it."""
    qwen = tiny_qwen_image(comfy)
    flux = tiny_flux_kontext(comfy)
    q_pos, q_neg = qwen_conditioning(seed=1, tokens=9)
    e_pos, e_neg = qwen_conditioning(seed=2, tokens=20)
    f_pos, f_neg = flux_conditioning(seed=3, tokens=8)
    return {
        "qwen_image": (qwen, q_pos, q_neg, QWEN_PROMPT, "qwen_image", "ksampler"),
        "qwen_image_edit": (qwen, with_reference(comfy, e_pos, 4), with_reference(comfy, e_neg, 4), QWEN_PROMPT,
                            "auto", "ksampler"),
        "flux_kontext": (flux, with_reference(comfy, f_pos, 5), with_reference(comfy, f_neg, 5), FLUX_PROMPT,
                         "auto", "custom_advanced"),
    }


def sample(comfy, model, positive, negative, path, cfg=2.0, steps=3):
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    if path == "ksampler":
        return comfy.nodes.KSampler().sample(model, 11, steps, cfg, "euler", "simple", positive, negative,
                                             latent)[0]["samples"]
    ncs = comfy.ncs
    return ncs.SamplerCustomAdvanced.execute(
        ncs.RandomNoise.execute(11).args[0], ncs.CFGGuider.execute(model, positive, negative, cfg).args[0],
        ncs.KSamplerSelect.execute("euler").args[0], ncs.BasicScheduler.execute(model, "simple", steps, 1.0).args[0],
        latent).args[0]["samples"]


def run_node(focus, model, prompt, **kwargs):
    settings = dict(prompt=prompt, phrases="cat, red" if "cat" in prompt else "left cup", layout="auto",
                    mode="training_free_bias", strength=3.0, blocks="all", start_percent=0.0, end_percent=1.0,
                    cond_only=True)
    settings.update(kwargs)
    return focus.CogniEditTokenFocus.execute(model, **settings).args[:3]  # [3]: the attention maps


def snapshot(value):
    """A comparable deep copy of model_options / wrappers: containers copied, leaves kept by identity."""
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return ("leaf", id(value))


@pytest.mark.parametrize("name", ["qwen_image", "qwen_image_edit", "flux_kontext"])
def test_strength_zero_and_no_focus_token_are_bit_identical(comfy, focus, cases, name):
    model, pos, neg, prompt, layout, path = cases[name]
    base = sample(comfy, model, pos, neg, path)
    patched, report, _ = run_node(focus, model, prompt, layout=layout, strength=0.0)
    assert torch.equal(sample(comfy, patched, pos, neg, path), base)
    assert "returned unpatched" in report
    absent, report, _ = run_node(focus, model, prompt, layout=layout, phrases="giraffe")
    assert torch.equal(sample(comfy, absent, pos, neg, path), base)
    assert "'giraffe' is not in the prompt" in report


def first_step_mass(probe):
    first = probe.records[0]["sigma"]
    values = [m for r in probe.records if r["sigma"] == first for m in r["mass"]]
    return sum(values) / len(values)


@pytest.mark.parametrize("name", ["qwen_image", "qwen_image_edit", "flux_kontext"])
def test_strength_changes_output_and_raises_attention_mass(comfy, focus, core, cases, name):
    model, pos, neg, prompt, layout, path = cases[name]
    base = sample(comfy, model, pos, neg, path)
    patched, report, _ = run_node(focus, model, prompt, layout=layout)
    assert not torch.equal(sample(comfy, patched, pos, neg, path), base)
    assert "tokens to focus: 2" in report or "tokens to focus: 3" in report

    masses = {}
    for strength in (0.0, 3.0):
        plan, _ = focus.build_plan(model, prompt, "cat, red" if "cat" in prompt else "left cup", layout,
                                   "training_free_bias", strength, "all", 0.0, 1.0, True)
        probe = core.override.FocusProbe()
        sample(comfy, focus.apply_plan(model, plan, probe), pos, neg, path)
        assert probe.records, "the probe saw no attention call: the text length was not recorded"
        masses[strength] = (first_step_mass(probe), probe.mean_mass())
    # the first step sees the same inputs with and without focus: the bias alone moves the mass
    assert masses[3.0][0] > 1.5 * masses[0.0][0], masses
    assert masses[3.0][1] > masses[0.0][1], masses


def test_value_scale_and_block_schedule_gating(comfy, focus, cases):
    model, pos, neg, prompt, layout, path = cases["qwen_image_edit"]
    base = sample(comfy, model, pos, neg, path)
    value, _, _ = run_node(focus, model, prompt, mode="value_scale")
    assert not torch.equal(sample(comfy, value, pos, neg, path), base)
    # a step window after the last step: exact
    late, _, _ = run_node(focus, model, prompt, start_percent=1.0, end_percent=1.0)
    assert torch.equal(sample(comfy, late, pos, neg, path, steps=3), base)


@pytest.mark.parametrize("name", ["qwen_image_edit", "flux_kontext"])
def test_blocks_beyond_the_model_are_refused_or_clamped(comfy, focus, cases, name):
    """A block range naming no block of the model is an error (it would change nothing); a range reaching past the
    last block is clamped, with a warning naming the part beyond."""
    model, pos, neg, prompt, layout, path = cases[name]
    with pytest.raises(ValueError, match="blocks '5-9' select no block of this model .* use 'all'"):
        run_node(focus, model, prompt, layout=layout, blocks="5-9")
    clamped, report, _ = run_node(focus, model, prompt, layout=layout, blocks="0-9")
    assert re.search("warning: blocks double [12]-9", report) and "clamped" in report
    everything, _, _ = run_node(focus, model, prompt, layout=layout, blocks="all")
    assert torch.equal(sample(comfy, clamped, pos, neg, path), sample(comfy, everything, pos, neg, path))


# Qwen-Image (positions from the start): the focus phrases sit beyond the 9 tokens the conditioning has
NOT_ENCODED = "look closely at this photo of a garden in spring and then make the cat red"


def test_focus_outside_the_conditioning_is_reported_after_sampling(comfy, focus, cases, caplog):
    """A prompt that is not what was encoded: the focus tokens fall outside the text that reaches the model. The
    node's report must not claim focus ("x20 on 2 tokens"); after sampling, the log says loudly that nothing was
    applied, and the output is exactly the unpatched one."""
    model, pos, neg, _, layout, path = cases["qwen_image"]
    patched, report, directives = run_node(focus, model, NOT_ENCODED, layout=layout, strength=20.0)
    assert "planned" in report and "counted while sampling" in report
    assert "planned" in directives["focus_patch"].description
    caplog.clear()
    with caplog.at_level(logging.INFO):
        out = sample(comfy, patched, pos, neg, path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("FOCUS NOT APPLIED: none of the 2 focus tokens is inside the 9-token text" in w for w in warnings)
    assert torch.equal(out, sample(comfy, model, pos, neg, path))
    caplog.clear()
    good, _, _ = run_node(focus, model, QWEN_PROMPT, layout=layout, strength=20.0)
    with caplog.at_level(logging.INFO):
        sample(comfy, good, pos, neg, path)
    infos = [r.getMessage() for r in caplog.records if "CogniEdit Token Focus" in r.getMessage()]
    assert len(infos) == 1 and "2 of 2 tokens hit" in infos[0] and " 0 of" not in infos[0], infos


def test_the_report_stays_bounded_for_a_huge_instruction(focus, cases):
    """A 10,000-character instruction used as prompt and phrase list gave an 11 MB, 357,077-line report."""
    model, _, _, _, layout, _ = cases["qwen_image_edit"]
    prompt = "make the red cat blue and the green cup yellow, " * 209  # 10,032 characters
    phrases = ", ".join(f"{word} {i}" for i, word in enumerate(prompt.split()[:400])) + ", red cat, " + prompt
    _, report, directives = run_node(focus, model, prompt, layout=layout, phrases=phrases)
    assert len(report) < 6000 and report.count("\n") < 60, (len(report), report.count("\n"))
    assert "... and" in report and "more" in report
    assert len(directives["focus_patch"].description) < 200


@pytest.mark.parametrize("name", ["qwen_image_edit", "flux_kontext"])
def test_source_model_untouched_and_twice_equals_once(comfy, focus, cases, name):
    model, pos, neg, prompt, layout, path = cases[name]
    calls = []

    def foreign_override(func, *args, **kwargs):  # another pack's override: must be kept and still called
        calls.append(1)
        return func(*args, **kwargs)

    source = model.clone()
    source.model_options["transformer_options"]["optimized_attention_override"] = foreign_override
    before = (snapshot(source.model_options), snapshot(source.wrappers))
    once, _, _ = run_node(focus, source, prompt, layout=layout)
    assert (snapshot(source.model_options), snapshot(source.wrappers)) == before

    twice, _, _ = run_node(focus, once, prompt, layout=layout)
    assert len(twice.get_wrappers(focus.DIFFUSION_MODEL, focus.PATCH_KEY)) == 1
    assert twice.model_options["transformer_options"]["optimized_attention_override"].cogniedit_prev is foreign_override
    out_once = sample(comfy, once, pos, neg, path)
    calls.clear()
    assert torch.equal(sample(comfy, twice, pos, neg, path), out_once)
    assert calls, "the override set before the focus node was not called"

    # strength 0 on a patched model takes our patch off again and restores the foreign override
    off, _, _ = run_node(focus, twice, prompt, layout=layout, strength=0.0)
    assert off.model_options["transformer_options"]["optimized_attention_override"] is foreign_override
    assert not off.get_wrappers(focus.DIFFUSION_MODEL, focus.PATCH_KEY)


@pytest.fixture()
def cogniedit_folder(comfy, tmp_path):
    loader = pack_module("nodes.loader")
    folder = tmp_path / "cogniedit"
    folder.mkdir()
    comfy.folder_paths.add_model_folder_path(loader.MODELS_FOLDER, str(folder))
    yield loader, folder
    comfy.folder_paths.folder_names_and_paths[loader.MODELS_FOLDER][0].remove(str(folder))


@pytest.mark.parametrize("name,family", [("qwen_image_edit", "qwen_image_edit"), ("flux_kontext", "flux_kontext")])
def test_learned_focus_from_the_registered_folder(comfy, focus, core, cases, cogniedit_folder, name, family):
    loader, folder = cogniedit_folder
    model, pos, neg, prompt, layout, path = cases[name]
    dit = model.model.diffusion_model
    module = core.learned.LearnedFocus.for_model(dit, blocks="all", xi=2, window=8)
    torch.nn.init.normal_(module.soft_tokens, std=1.0)
    core.weights.save_focus_weights(folder / "fits.safetensors", module,
                                    {"family": family, "base_hash": core.weights.base_model_hash(dit)})
    other = tiny_qwen_image(comfy, seed=7) if name.startswith("qwen") else tiny_flux_kontext(comfy, seed=7)
    core.weights.save_focus_weights(folder / "other.safetensors", module,
                                    {"family": family, "base_hash": core.weights.base_model_hash(
                                        other.model.diffusion_model)})

    _, weights, _ = loader.CogniEditLoader.execute(model, "(none)", 1.0, "fits.safetensors").args
    before = snapshot(model.model_options)
    patched, report, _ = run_node(focus, model, prompt, layout=layout, mode="learned", focus_weights=weights)
    assert snapshot(model.model_options) == before
    assert "learned focus: blocks" in report
    assert not torch.equal(sample(comfy, patched, pos, neg, path), sample(comfy, model, pos, neg, path))
    again, _, _ = run_node(focus, patched, prompt, layout=layout, mode="learned", focus_weights=weights)
    assert torch.equal(sample(comfy, again, pos, neg, path), sample(comfy, patched, pos, neg, path))

    _, wrong, _ = loader.CogniEditLoader.execute(model, "(none)", 1.0, "other.safetensors").args
    with pytest.raises(core.weights.FocusWeightsError, match="mismatch: base_hash.*load the focus weights trained "
                       "for this model"):
        run_node(focus, model, prompt, layout=layout, mode="learned", focus_weights=wrong)
    with pytest.raises(ValueError, match="needs focus_weights"):
        run_node(focus, model, prompt, layout=layout, mode="learned")


def test_directives_give_prompt_and_phrases_and_carry_the_patch(comfy, focus, core, cases):
    model, pos, neg, _, layout, path = cases["qwen_image_edit"]
    Decomposition, FocusPhrase = core.decompose.Decomposition, core.decompose.FocusPhrase
    directives = Decomposition(enriched_instruction=QWEN_PROMPT, targets=["the cat"],
                               focus=[FocusPhrase("red", "colour", 13, 16)], instruction="cat red").to_dict()
    patched, report, out = run_node(focus, model, "ignored prompt", phrases="ignored", directives=directives)
    assert "'red' -> tokens -6..-6" in report and "tokens to focus: 1" in report
    common = pack_module("nodes.common")
    via_directives, note = common.apply_focus(model, out)
    assert "training_free_bias" in note
    assert torch.equal(sample(comfy, via_directives, pos, neg, path), sample(comfy, patched, pos, neg, path))
    assert out["enriched_instruction"] == QWEN_PROMPT


def test_clear_errors(comfy, focus, cases):
    model, _, _, prompt, _, _ = cases["qwen_image"]
    with pytest.raises(ValueError, match="does not fit this model"):
        run_node(focus, model, prompt, layout="flux")
    with pytest.raises(ValueError, match="block spec"):
        run_node(focus, model, prompt, blocks="first-ten")
    with pytest.raises(ValueError, match="prompt is empty"):
        run_node(focus, model, "  ")


def test_schema_validates_and_every_input_has_a_tooltip(focus):
    focus.CogniEditTokenFocus.VALIDATE_CLASS()
    assert focus.CogniEditTokenFocus.GET_NODE_INFO_V1()["name"] == "CogniEditTokenFocus"
    schema = focus.CogniEditTokenFocus.define_schema()
    assert all(item.tooltip for item in schema.inputs)
    nodes = pack_module("nodes")
    assert focus.CogniEditTokenFocus in nodes.all_nodes()
