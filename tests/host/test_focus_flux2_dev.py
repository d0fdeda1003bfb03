"""Token Focus and the CogniEdit samplers on FLUX.2 dev, in-process against the real ComfyUI 0.33.

FLUX.2 dev's Mistral-3 tokenizer lives in the text-encoder file, so the node reads it from the CLIP that encodes the
prompt. Here: a tiny FLUX.2 dev DiT (text width 15360, through ComfyUI's detection) and its text encoder as a real
``comfy.sd.CLIP`` of ComfyUI's classes (``Flux2Tokenizer`` with a tekken blob built from mistral-common's packaged
Tekken vocabulary, tests/fixtures/tekken_blob.py; ``Mistral3_24BModel`` tiny and token-revealing, its conditioning
zero-padded in its features to 15360). ``model_base.Flux2`` left-pads the text to 512 tokens, as it does for real.

Contract: our tokenizer's ids equal ComfyUI's own tekken tokenizer's on the same blob; the spans hold the phrase in
what the DiT receives, checked against the ids ComfyUI's Mistral3Tokenizer produces; strength 0 samples bit-identically
to the unpatched model and the attention mass on the phrase rises with strength; the sampler and guider with focus
off equal the core graph; without the CLIP (or with another family's) the node says which CLIP to connect.
"""

from __future__ import annotations

import types

import pytest
import torch

from comfy_inprocess import pack_module
from tests.fixtures.tekken_blob import tekken_test_blob
from tiny_families import (DEV_WIDTH, assert_focus_off_sampling_is_the_core_graph, dev_width, first_step_phrase_mass,
                           received_contexts, sample, tiny_clip, tiny_flux2, tiny_flux2_dev_clip, token_ids_of)

pytestmark = pytest.mark.host

PROMPT = 'make the "left" cup red'
PHRASES = "left, red"
# accents, digits, punctuation, CJK; and a prompt longer than 512 tokens (no left padding then)
VARIED = ("paint the crème brûlée red, add 12 stars; 把杯子变成红色!", ["crème brûlée", "12 stars", "红色"])
LONG = ("a very long preamble " * 150 + PROMPT, ["left", "red"])
TOKENIZER_PROMPTS = [PROMPT, VARIED[0], "Café naïve résumé: 3.14159, 2024年 (weights:1.2) [x] {y} a/b", "don't WON'T",
                     "tabs\tand\nnewlines\n\n  end  ", "emoji 🎉 and [INST]inside[/INST] <s>", "日本語のテキスト、カタカナ"]


@pytest.fixture(scope="module")
def focus(comfy):
    return pack_module("nodes.focus")


@pytest.fixture(scope="module")
def dev(comfy):
    """namespace(model, clip, te, positive, negative, latent): CLIPTextEncode's conditioning, two ReferenceLatent."""
    clip = tiny_flux2_dev_clip(comfy, tekken_test_blob())
    refs = [torch.randn(1, 128, 8, 8, generator=torch.Generator().manual_seed(k)) for k in (1, 2)]

    def encoded(text):
        conditioning = dev_width(comfy.nodes.CLIPTextEncode().encode(clip, text)[0])
        for ref in refs:  # FLUX.2 multi-reference: one ReferenceLatent node per image
            conditioning = comfy.edit.ReferenceLatent.execute(conditioning, {"samples": ref}).args[0]
        return conditioning

    return types.SimpleNamespace(model=tiny_flux2(comfy, text_width=DEV_WIDTH), clip=clip, te=clip.cond_stage_model,
                                 encoded=encoded, positive=encoded(PROMPT), negative=encoded("blurry"),
                                 latent={"samples": torch.zeros(1, 128, 8, 8)})


def run_node(focus, case, **kwargs):
    settings = dict(prompt=PROMPT, phrases=PHRASES, layout="auto", mode="training_free_bias", strength=3.0,
                    blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True, clip=case.clip)
    settings.update(kwargs)
    return focus.CogniEditTokenFocus.execute(case.model, **settings).args[:3]  # [3]: the attention maps


def comfy_ids(clip, text) -> list[int]:
    """What ComfyUI's own Mistral3Tokenizer gives the encoder for ``text`` (start token, template, prompt)."""
    return [t for t, _ in clip.tokenizer.tokenize_with_weights(text)["mistral3_24b"][0]]


def test_our_tokenizer_gives_comfyuis_ids(comfy, dev):
    """Same blob, same ids as ComfyUI's BPETokenizer, alone and through the whole flux2_dev layout."""
    tekken, layout = pack_module("cogniedit.text.tekken"), pack_module("cogniedit.focus.text_layout")
    ours = tekken.tekken_tokenizer(tekken_test_blob())  # the node's cache: built once for the module
    theirs = dev.clip.tokenizer.mistral3_24b.tokenizer
    for text in TOKENIZER_PROMPTS:
        assert layout.encode(ours, text)[0] == theirs(text)["input_ids"], text
        ids, _ = layout.encoder_tokens(text, ours, layout.layout_for("flux2_dev"))
        assert ids == comfy_ids(dev.clip, text), text


@pytest.mark.parametrize("prompt,phrases", [(PROMPT, ["left", "red"]), VARIED, LONG], ids=["quoted", "varied", "long"])
def test_spans_land_on_the_phrase_in_what_the_model_receives(comfy, focus, dev, prompt, phrases):
    """The DiT receives ComfyUI's ids, left-padded to 512 by model_base.Flux2; the node's positions, resolved against
    that context, hold exactly each phrase's tokens (ComfyUI's ids decoded by ComfyUI's tokenizer)."""
    bias = pack_module("cogniedit.focus.bias")
    case = types.SimpleNamespace(**dict(vars(dev), positive=dev.encoded(prompt)))
    plan, report = focus.build_plan(dev.model, prompt, ", ".join(phrases), "auto", "training_free_bias", 3.0, "all",
                                    0.0, 1.0, True, clip=dev.clip)
    assert "layout: flux2_dev" in report and "counted from the end" in report
    cond = received_contexts(comfy, dev.model, case)[0]
    expected = comfy_ids(dev.clip, prompt)
    received = [None] * max(512 - len(expected), 0) + expected  # the model's real left padding
    assert cond.shape[1] == max(512, len(expected)) and token_ids_of(dev.te, cond) == received
    names, entries = plan.tokens.phrases
    assert names == phrases, report
    decode = dev.clip.tokenizer.decode
    for name, entry in zip(names, entries):
        positions = bias.focus_weights([entry], cond.shape[1])[0].nonzero().flatten().tolist()
        assert decode([received[p] for p in positions]).strip() == name, (name, positions, report)
    start, length = plan.tokens.prompt_range  # the whole instruction: every prompt token, nothing else
    start += cond.shape[1]
    assert decode(received[start:start + length]) == prompt


def test_strength_zero_is_bit_identical_and_strength_raises_the_mass(comfy, focus, dev):
    base = sample(comfy, dev.model, dev)
    off, report, _ = run_node(focus, dev, strength=0.0)
    assert torch.equal(sample(comfy, off, dev), base) and "returned unpatched" in report
    on, report, _ = run_node(focus, dev)
    assert not torch.equal(sample(comfy, on, dev), base)
    masses = {}
    for strength in (0.0, 3.0):
        plan, _ = focus.build_plan(dev.model, PROMPT, PHRASES, "auto", "training_free_bias", strength, "all", 0.0,
                                   1.0, True, clip=dev.clip)
        masses[strength] = first_step_phrase_mass(comfy, focus, dev.model, dev, plan)
    assert masses[3.0] > 1.5 * masses[0.0], masses


def test_sampler_and_guider_with_focus_off_equal_the_core_graph(comfy, focus, dev):
    """CogniEdit Sampler (source as a LATENT, the ReferenceLatent references kept) and Guider with Token Focus at
    strength 0 in the directives = KSampler / CFGGuider on the same conditioning; focus on = the focused MODEL."""
    _, _, off = run_node(focus, dev, strength=0.0)
    focused, _, on = run_node(focus, dev)
    assert_focus_off_sampling_is_the_core_graph(comfy, pack_module("nodes.sampler"), dev.model, dev, off, focused, on)


def test_dev_names_the_clip_to_connect(comfy, focus, dev):
    """Without a CLIP, or with another family's, one line saying which CLIP to connect, before anything is planned."""
    for clip, fix in ((None, "needs its clip input: connect the CLIP that encodes the prompt"),
                      (tiny_clip(comfy, "mage_flow"), "no Mistral tekken tokenizer.*connect the CLIP that encodes")):
        with pytest.raises(ValueError, match=fix) as error:
            run_node(focus, dev, clip=clip)
        assert "\n" not in str(error.value)


def test_other_families_ignore_the_clip(comfy, focus, dev):
    """klein plans the same with dev's CLIP connected as without it (its tokenizer is ComfyUI's Qwen files)."""
    klein = tiny_flux2(comfy, text_width=7680)
    without, report = focus.build_plan(klein, PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0,
                                       True)
    with_clip, same = focus.build_plan(klein, PROMPT, PHRASES, "auto", "training_free_bias", 1.0, "all", 0.0, 1.0,
                                       True, clip=dev.clip)
    assert same == report and "layout: flux2_klein" in report
    assert with_clip.tokens.entry.positions == without.tokens.entry.positions
