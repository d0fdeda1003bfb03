"""Attention-dependent focus shapes (``bias.row_bias``: sharpen, text-renormalised) and value scaling on the diffusers
processor: the properties each promises, checked on attention computed by hand, and strength 0 still exact."""

import math

import numpy as np
import pytest
import torch

from cogniedit.focus.bias import combine_masks, row_bias
from cogniedit.focus.diffusers_adapter import FocusAttnProcessor, FocusState
from cogniedit.shapes.evaluate import sign_test_p as sign_test
from cogniedit.shapes.focus_study import paired


def attention(logits, bias=None):
    return (logits if bias is None else logits + bias).softmax(-1)


@pytest.fixture
def rows():
    torch.manual_seed(0)
    b, h, r, n_txt, n_img = 2, 3, 6, 5, 4
    logits = torch.randn(b, h, r, n_txt + n_img) * 2
    weights = torch.zeros(b, n_txt)
    weights[0, 1] = weights[1, 3:5] = 1.0
    return logits, weights, n_txt


def test_uniform_shape_is_the_plain_bias_on_every_row(rows):
    logits, weights, n_txt = rows
    p = attention(logits)[..., :n_txt]
    got = row_bias(p, weights, 2.0, "uniform")
    assert torch.allclose(got, torch.log1p(2.0 * weights)[:, None, None, :].expand_as(p))


def test_sharpen_gives_full_strength_only_where_the_phrase_is_attended_most(rows):
    logits, weights, n_txt = rows
    p = attention(logits)[..., :n_txt]
    s = 3.0
    got = row_bias(p, weights, s, "sharpen")
    focus = weights.bool()[:, None, None, :].expand_as(p)
    assert (got[~focus] == 0).all()
    assert (got[focus] <= math.log1p(s) + 1e-6).all() and (got[focus] > 0).all()
    top = p.argmax(dim=-2)                                                      # [B, H, text]: the row attending most
    for bi in range(p.shape[0]):
        for hi in range(p.shape[1]):
            for j in torch.nonzero(weights[bi]).flatten().tolist():
                assert got[bi, hi, top[bi, hi, j], j] == pytest.approx(math.log1p(s), rel=1e-6)
                others = [i for i in range(p.shape[2]) if i != top[bi, hi, j]]
                assert all(got[bi, hi, i, j] < math.log1p(s) for i in others)


def test_text_shape_moves_mass_among_text_tokens_only(rows):
    logits, weights, n_txt = rows
    p0 = attention(logits)
    bias = torch.zeros_like(logits)
    bias[..., :n_txt] = row_bias(p0[..., :n_txt], weights, 2.0, "text")
    p1 = attention(logits, bias)
    assert torch.allclose(p1[..., n_txt:], p0[..., n_txt:], atol=1e-6)          # image keys untouched
    assert torch.allclose(p1[..., :n_txt].sum(-1), p0[..., :n_txt].sum(-1), atol=1e-6)
    w = weights[:, None, None, :]
    f0, f1 = (p0[..., :n_txt] * w).sum(-1), (p1[..., :n_txt] * w).sum(-1)
    assert (f1 > f0).all()
    # odds of the focus tokens within the text rise by exactly 1 + s
    t0, t1 = p0[..., :n_txt].sum(-1), p1[..., :n_txt].sum(-1)
    assert torch.allclose((f1 / (t1 - f1)) / (f0 / (t0 - f0)), torch.full_like(f0, 3.0), rtol=1e-5)


def test_row_bias_identity_and_bad_shape(rows):
    logits, weights, n_txt = rows
    p = attention(logits)[..., :n_txt]
    assert row_bias(p, weights, 0.0, "sharpen") is None and row_bias(p, weights * 0, 1.0, "text") is None
    with pytest.raises(ValueError, match="shape must be one of"):
        row_bias(p, weights, 1.0, "peaky")
    with pytest.raises(ValueError, match="value"):
        FocusState(None, 1.0, shape="sharpen", mode="value")


# ----------------------------------------------------------------------------------- on the diffusers processor
@pytest.fixture(scope="module")
def block():
    from cogniedit.shapes.editor import EditorConfig, new_editor
    from cogniedit.shapes.editor.text import TextVocab

    torch.manual_seed(0)
    vocab = TextVocab.from_texts(["make the purple circle red"])
    config = EditorConfig(num_layers=1, num_attention_heads=2, text_layers=1, text_vocab_rows=vocab.size)
    model = new_editor(config, vocab, seed=0)
    d = model.transformer.inner_dim
    img, txt = torch.randn(2, 72, d), torch.randn(2, 9, d)
    txt_mask = torch.ones(2, 9, dtype=torch.bool)
    txt_mask[1, 7:] = False
    weights = torch.zeros(2, 9)
    weights[0, 2] = weights[1, 4:6] = 1.0
    return model.transformer.transformer_blocks[0].attn, img, txt, txt_mask, weights


def by_hand(attn, q, k, v, mask, n_txt):
    """``reference_attention`` per row on ``[B, L, H, D]`` tensors, then the processor's output projections."""
    from cogniedit.focus.bias import reference_attention

    out = reference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
    out = out.flatten(2, 3)
    return attn.to_out[0](out[:, n_txt:]), attn.to_add_out(out[:, :n_txt])


@pytest.mark.parametrize("shape", ["sharpen", "text"])
def test_processor_shaped_bias_is_row_bias_on_the_noisy_image_rows(block, shape):
    attn, img, txt, txt_mask, weights = block
    n_ref, n_txt = 36, 9
    proc = FocusAttnProcessor(0, FocusState(weights, 2.0, shape=shape, n_reference=n_ref))
    got = proc(attn, img, txt, txt_mask)
    q, k, v = proc._joint_qkv(attn, img, txt, None)
    key_mask = torch.cat([txt_mask, torch.ones(2, 72, dtype=torch.bool)], 1)[:, None, None, :]
    additive = combine_masks(None, key_mask, torch.float32)
    logits = q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / math.sqrt(q.shape[-1]) + additive
    rows = slice(n_txt, n_txt + 72 - n_ref)
    bias = torch.zeros_like(logits)
    bias[:, :, rows, :n_txt] = row_bias(logits.softmax(-1)[:, :, rows, :n_txt], weights, 2.0, shape)
    want = by_hand(attn, q, k, v, additive + bias, n_txt)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_processor_value_mode_scales_the_focused_values_for_the_noisy_image_rows_only(block):
    attn, img, txt, txt_mask, weights = block
    n_ref, n_txt, s = 36, 9, 0.5
    proc = FocusAttnProcessor(0, FocusState(weights, s, mode="value", n_reference=n_ref))
    got_img, got_txt = proc(attn, img, txt, txt_mask)
    q, k, v = proc._joint_qkv(attn, img, txt, None)
    mask = combine_masks(None, torch.cat([txt_mask, torch.ones(2, 72, dtype=torch.bool)], 1)[:, None, None, :],
                         torch.float32)
    plain_img, plain_txt = by_hand(attn, q, k, v, mask, n_txt)
    scaled = v.clone()
    scaled[:, :n_txt] *= (1 + s * weights)[:, :, None, None]
    scaled_img, _ = by_hand(attn, q, k, scaled, mask, n_txt)
    n_noisy = 72 - n_ref
    torch.testing.assert_close(got_txt, plain_txt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_img[:, :n_noisy], scaled_img[:, :n_noisy], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_img[:, n_noisy:], plain_img[:, n_noisy:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got_img[:, :n_noisy], plain_img[:, :n_noisy], atol=1e-4)


@pytest.mark.parametrize("options", [{"focus_shape": "sharpen"}, {"focus_shape": "text"}, {"focus_mode": "value"}])
def test_strength_zero_stays_bit_identical_in_every_shape_and_mode(options):
    from cogniedit.shapes.cogniedit_editor import load_cogniedit_editor
    from cogniedit.shapes.editor import EditorConfig, new_editor
    from cogniedit.shapes.editor.text import TextVocab

    texts = ["make the purple circle red", "remove the blue square"]
    vocab = TextVocab.from_texts(texts)
    model = new_editor(EditorConfig(num_layers=2, num_attention_heads=2, text_layers=1, text_vocab_rows=vocab.size),
                       vocab, seed=0).eval()
    torch.nn.init.normal_(model.transformer.proj_out.weight, std=0.05)
    imgs = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3)).astype(np.uint8)
    base = model.edit(imgs, texts, seed=3, steps=3)
    editor = load_cogniedit_editor(base=model, focus="training_free", focus_strength=0.0, **options)
    editor.steps = 3
    assert np.array_equal(editor.edit(imgs, texts, seed=3), base)
    assert not np.array_equal(load_cogniedit_editor(base=model, focus="training_free", focus_strength=1.0,
                                                    **options).edit(imgs, texts, seed=3, steps=3), base)


def test_sign_test_and_paired_counts():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(4, 19) == pytest.approx(2 * sum(math.comb(23, i) for i in range(5)) / 2 ** 23)
    assert sign_test(19, 4) == sign_test(4, 19) and sign_test(10, 0) == pytest.approx(2 / 1024)
    got = paired([True, True, False, False, True], [True, False, True, True, True])
    assert got["wins"] == 2 and got["losses"] == 1 and got["delta_points"] == pytest.approx(20.0)


def test_parse_arm_keeps_block_specs_as_text():
    from cogniedit.shapes.focus_study import parse_arm

    assert parse_arm("b1:focus_blocks=1,focus_strength=2,focus_end=0.5") == (
        "b1", {"focus_blocks": "1", "focus_strength": 2, "focus_end": 0.5})


def test_a_numeric_block_spec_from_the_command_line_is_a_block_spec():
    """``--editor-option focus_blocks=1`` arrives as the JSON number 1; it must mean block 1, not crash."""
    from cogniedit.shapes.cogniedit_editor import load_cogniedit_editor
    from cogniedit.shapes.editor import EditorConfig, new_editor
    from cogniedit.shapes.editor.text import TextVocab

    texts = ["make the purple circle red"]
    vocab = TextVocab.from_texts(texts)
    model = new_editor(EditorConfig(num_layers=2, num_attention_heads=2, text_layers=1, text_vocab_rows=vocab.size),
                       vocab, seed=0).eval()
    imgs = np.random.default_rng(0).integers(0, 255, (1, 48, 48, 3)).astype(np.uint8)
    editor = load_cogniedit_editor(base=model, focus="training_free", focus_strength=1.0, focus_blocks=1)
    editor.probe = True
    editor.edit(imgs, texts, seed=0, steps=2)
    biased = {r["block_index"] for r in editor.last_records if r["mass"] != r["mass_base"]}
    assert biased == {1}
