"""CogniEdit Token Focus on an SD-family UNet (tiny InstructPix2Pix with ComfyUI's real classes), sampled with
ComfyUI's own KSampler: the cross-attention (attn2) path.

Contract as for the DiTs: strength 0 or no focus token is bit-identical to the unpatched model; nonzero strength
changes the output and raises the measured attention mass on the focused tokens; the source MODEL is untouched;
twice equals once; another node's attn2 patch is left alone and reported; positions are ComfyUI's CLIP positions.
"""

from __future__ import annotations

import importlib
import logging

import pytest
import torch

from comfy_inprocess import pack_module, sd_conditioning, tiny_instructpix2pix

pytestmark = pytest.mark.host

PROMPT = "make the left cup red"  # CLIP: <start> make the left cup red <end> ...
SITES = {("input", 1, 0), ("middle", 0, 0), ("output", 0, 0), ("output", 1, 0)}  # the tiny UNet's attn2 layers


@pytest.fixture(scope="module")
def focus(comfy):
    return pack_module("nodes.focus")


@pytest.fixture(scope="module")
def unet(comfy):
    return tiny_instructpix2pix(comfy)


@pytest.fixture(scope="module")
def conditioning():
    return sd_conditioning(seed=1)


def sample(comfy, model, conditioning, steps=3, cfg=3.0):
    positive, negative = conditioning
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfy.nodes.KSampler().sample(model, 5, steps, cfg, "euler", "normal", positive, negative,
                                         latent)[0]["samples"]


def run_node(focus, model, **kwargs):
    settings = dict(prompt=PROMPT, phrases="left cup, red", layout="auto", mode="training_free_bias", strength=4.0,
                    blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True)
    settings.update(kwargs)
    return focus.CogniEditTokenFocus.execute(model, **settings).args[:3]  # [3]: the attention maps


def attn2_patches(model):
    return model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})


def test_positions_are_comfyuis_clip_positions(comfy, focus):
    tokens = focus.focus_tokens(PROMPT, ["left cup", "red", "giraffe"], "sd_clip")
    assert tokens.entry.positions == [3, 4, 5] and tokens.entry.text_len == 77
    assert any("'giraffe'" in w for w in tokens.warnings)
    # a prompt over 75 tokens continues in a second 77-token chunk, after that chunk's own start token
    long_prompt = "a " * 80 + "red cup"
    found = focus.focus_tokens(long_prompt, ["red cup"], "sd_clip").entry
    assert found.text_len == 154 and found.positions == [77 + 1 + 5, 77 + 1 + 6]
    clip = importlib.import_module("comfy.sd1_clip").SDTokenizer()
    ids = [t for chunk in clip.tokenize_with_weights(long_prompt) for t, _ in chunk]
    red_cup = clip.tokenizer("red cup")["input_ids"][1:-1]
    assert ids[found.positions[0]:found.positions[-1] + 1] == red_cup


def test_strength_zero_and_absent_phrase_are_bit_identical(comfy, focus, unet, conditioning):
    base = sample(comfy, unet, conditioning)
    off, report, _ = run_node(focus, unet, strength=0.0)
    assert torch.equal(sample(comfy, off, conditioning), base)
    assert "returned unpatched" in report and not attn2_patches(off)
    absent, report, _ = run_node(focus, unet, phrases="giraffe")
    assert torch.equal(sample(comfy, absent, conditioning), base)
    # patched, but outside its step window: the replaced attn2 makes the layer's own call, bit for bit
    late, _, _ = run_node(focus, unet, start_percent=1.0, end_percent=1.0)
    assert attn2_patches(late)
    assert torch.equal(sample(comfy, late, conditioning), base)


@pytest.mark.parametrize("mode", ["training_free_bias", "value_scale"])
def test_focus_changes_the_output_and_raises_attention_mass(comfy, focus, unet, conditioning, mode):
    base = sample(comfy, unet, conditioning)
    patched, report, _ = run_node(focus, unet, mode=mode)
    assert "model: sd_unet, layout: sd_clip" in report and "'left cup' -> tokens 3..4" in report
    assert set(attn2_patches(patched)) == SITES
    assert not torch.equal(sample(comfy, patched, conditioning), base)
    if mode != "training_free_bias":
        return
    override = pack_module("cogniedit.focus.override")
    masses = {}
    for strength in (0.0, 4.0):
        plan, _ = focus.build_plan(unet, PROMPT, "left cup, red", "auto", mode, strength, "all", 0.0, 1.0, True)
        probe = override.FocusProbe()
        sample(comfy, focus.apply_plan(unet, plan, probe), conditioning, steps=1)
        assert {r["block_index"] for r in probe.records} == SITES
        masses[strength] = probe.mean_mass()
    # one step: both runs see the same inputs, so the bias alone moves the mass (3 of 77 keys: ~4 % unfocused)
    assert masses[4.0] > 2.0 * masses[0.0], masses


def test_block_selection_and_repeated_conditioning(comfy, focus, unet):
    middle_only, _, _ = run_node(focus, unet, blocks="1")
    assert set(attn2_patches(middle_only)) == {("middle", 0, 0)}
    last, _, _ = run_node(focus, unet, blocks="last:2")
    assert set(attn2_patches(last)) == {("output", 0, 0), ("output", 1, 0)}
    # a 2-chunk positive batched with a 1-chunk negative: ComfyUI repeats the short one; sampling must work
    long_cond = sd_conditioning(seed=2, chunks=2)
    base = sample(comfy, unet, long_cond)
    patched, _, _ = run_node(focus, unet)
    assert not torch.equal(sample(comfy, patched, long_cond), base)
    # sites beyond the 4 the UNet has: none selected is an error, a range past the last site is clamped
    with pytest.raises(ValueError, match="blocks '4-9' select no block of this model .sd_unet: 4 cross-attention"):
        run_node(focus, unet, blocks="4-9")
    _, report, _ = run_node(focus, unet, blocks="2-9")
    assert "warning: blocks 4-9 are beyond this model's 4 cross-attention sites (0-3): clamped" in report


def test_what_the_patch_applied_is_counted_while_sampling(comfy, focus, unet, conditioning, caplog):
    """The cross-attention patch counts the calls it biased; a phrase found only past the conditioning's 77 tokens
    (a prompt longer than what was encoded) is an all-miss, logged loudly, with the output unchanged."""
    patched, _, _ = run_node(focus, unet)
    with caplog.at_level(logging.INFO):
        sample(comfy, patched, conditioning)
    lines = [r.getMessage() for r in caplog.records if "CogniEdit Token Focus" in r.getMessage()]
    assert len(lines) == 1 and "3 of 3 tokens hit" in lines[0] and "FOCUS NOT APPLIED" not in lines[0]
    caplog.clear()
    beyond, _, _ = run_node(focus, unet, prompt="a " * 80 + "make the left cup red")  # 2 chunks, 1 encoded
    with caplog.at_level(logging.INFO):
        out = sample(comfy, beyond, conditioning)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("FOCUS NOT APPLIED: none of the 3 focus tokens is inside the 77-token text" in w for w in warnings)
    assert torch.equal(out, sample(comfy, unet, conditioning))


def test_source_untouched_twice_equals_once_and_foreign_patch_kept(comfy, focus, unet, conditioning):
    calls = []
    attention = importlib.import_module("comfy.ldm.modules.attention")

    def foreign_attn2(q, k, v, extra_options):  # another node's cross-attention replacement on one block
        calls.append(1)
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    source = unet.clone()
    source.set_model_attn2_replace(foreign_attn2, "middle", 0, 0)
    before = dict(attn2_patches(source))
    once, report, _ = run_node(focus, source)
    assert attn2_patches(source) == before
    assert "block ('middle', 0, 0) was replaced by another node" in report
    assert attn2_patches(once)[("middle", 0, 0)] is foreign_attn2

    twice, _, _ = run_node(focus, once)
    assert set(attn2_patches(twice)) == set(attn2_patches(once))
    out_once = sample(comfy, once, conditioning)
    calls.clear()
    assert torch.equal(sample(comfy, twice, conditioning), out_once)
    assert calls, "the other node's attn2 patch was not called"

    off, _, _ = run_node(focus, twice, strength=0.0)
    assert attn2_patches(off) == {("middle", 0, 0): foreign_attn2}


def test_learned_mode_is_refused_on_a_unet(focus, unet):
    with pytest.raises(ValueError, match="learned' needs a DiT .* use training_free_bias or value_scale"):
        run_node(focus, unet, mode="learned", focus_weights=({}, {}))
    with pytest.raises(ValueError, match="does not fit this model"):
        run_node(focus, unet, layout="flux")
