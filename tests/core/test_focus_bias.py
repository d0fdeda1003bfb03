"""Focus bias math: hand-computed attention, identity at strength 0, masks, schedule, block gating."""

import math

import pytest
import torch

from cogniedit.focus.bias import (
    FocusSchedule, as_additive_mask, block_active, combine_masks, dense_bias, focus_weights, key_bias,
    reference_attention, select_blocks, tokens_inside, value_scale,
)


def hand_attention(q, k, v, bias):
    """Loop-by-loop softmax attention, written without matrix ops, for a [1,1,L,D] case."""
    lq, lk, d = q.shape[2], k.shape[2], q.shape[3]
    out = torch.zeros_like(q)
    for i in range(lq):
        scores = [sum(float(q[0, 0, i, c] * k[0, 0, j, c]) for c in range(d)) / math.sqrt(d) + float(bias[i][j]) for j in range(lk)]
        m = max(scores)
        e = [math.exp(s - m) for s in scores]
        z = sum(e)
        for c in range(d):
            out[0, 0, i, c] = sum(e[j] / z * float(v[0, 0, j, c]) for j in range(lk))
    return out


def test_bias_through_reference_attention_equals_hand_computation():
    torch.manual_seed(0)
    L, n_img, d = 3, 4, 5  # 3 text tokens then 4 image tokens
    q, k, v = (torch.randn(1, 1, L + n_img, d, dtype=torch.float64) for _ in range(3))
    strength = 2.0
    bias = dense_bias([[1]], L, L + n_img, L + n_img, strength, dtype=torch.float64)
    hand = [[0.0] * (L + n_img) for _ in range(L + n_img)]
    for i in range(L, L + n_img):
        hand[i][1] = math.log(1 + strength)  # image query -> focused text key 1
    assert torch.equal(bias[0, 0], torch.tensor(hand, dtype=torch.float64))
    got = reference_attention(q, k, v, bias)
    assert torch.allclose(got, hand_attention(q, k, v, hand), atol=1e-12)
    # the text rows are exactly the unbiased attention; image rows differ
    plain = reference_attention(q, k, v)
    assert torch.equal(got[:, :, :L], plain[:, :, :L])
    assert not torch.allclose(got[:, :, L:], plain[:, :, L:])


def test_bias_multiplies_unnormalised_attention_by_one_plus_strength():
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 6, 4, dtype=torch.float64), torch.randn(1, 1, 6, 4, dtype=torch.float64)
    logits = q @ k.transpose(-1, -2) / 2
    p0 = logits.softmax(-1)
    p1 = (logits + dense_bias([[0, 2]], 3, 6, 6, 3.0, dtype=torch.float64)).softmax(-1)
    ratio = (p1 / p0)[0, 0, 3:]  # image rows: focused keys gain x4 relative to the others
    four, one = torch.full((3,), 4.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert torch.allclose(ratio[:, 0] / ratio[:, 1], four) and torch.allclose(ratio[:, 2] / ratio[:, 1], four)
    assert torch.allclose(ratio[:, 3] / ratio[:, 1], one)
    assert torch.equal(p1[0, 0, :3], p0[0, 0, :3])  # text rows untouched


def test_strength_zero_or_empty_span_is_identity():
    assert dense_bias([[1, 2]], 3, 8, 8, 0.0) is None
    assert dense_bias([[]], 3, 8, 8, 2.0) is None
    assert key_bias([torch.zeros(3)], 3, 8, 2.0) is None
    assert value_scale(torch.randn(1, 8, 4), [[1]], 3, 0.0, 1) is None
    with pytest.raises(ValueError, match="> -1"):
        key_bias([[1]], 3, 8, -1.0)


def test_batched_bias_and_inactive_samples():
    b = key_bias([[0], [2]], 3, 7, 1.0, active=[True, False])
    assert b.shape == (2, 1, 1, 7)
    assert b[0, 0, 0].tolist() == pytest.approx([math.log(2), 0, 0, 0, 0, 0, 0])
    assert torch.count_nonzero(b[1]) == 0
    w = focus_weights([[1, 99], torch.tensor([0.5, 0.0])], 3)  # out-of-text positions dropped, soft padded
    assert w.tolist() == [[0, 1, 0], [0.5, 0, 0]]


def test_mask_combination_like_comfyui_attention():
    bias = torch.ones(2, 1, 4, 4)
    boolean = torch.tensor([[True, True, False, True]] * 4)  # 2-D [Lq, Lk]
    m = combine_masks(bias, boolean, torch.float32)
    assert m.shape == (2, 1, 4, 4) and torch.isinf(m[:, :, :, 2]).all() and (m[:, :, :, 0] == 1).all()
    qwen_mask = torch.zeros(2, 1, 4)  # Qwen-Image's [B, 1, Lk] additive mask -> [B, 1, 1, Lk]
    qwen_mask[1, 0, 3] = -5.0
    m = combine_masks(bias, qwen_mask, torch.float32)
    assert m[1, 0, :, 3].tolist() == [-4.0] * 4 and m[0, 0, :, 3].tolist() == [1.0] * 4
    assert as_additive_mask(torch.zeros(1, 2, 4, 4), torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="2-, 3- or 4-D"):
        as_additive_mask(torch.zeros(4), torch.float32)


def test_value_scaling_only_scales_focused_text_values():
    v = torch.ones(2, 5, 3)
    out = value_scale(v, [[1], [0, 2]], 3, 1.5, seq_dim=1)
    assert out[0, :, 0].tolist() == [1, 2.5, 1, 1, 1] and out[1, :, 0].tolist() == [2.5, 1, 2.5, 1, 1]


def test_schedule_uses_step_fraction():
    sched = FocusSchedule(0.0, 0.5)
    sigmas = torch.linspace(1, 0, 11)  # 10 steps
    on = [sched.active(torch.tensor([s]), sigmas) for s in sigmas[:-1]]
    assert on == [True] * 5 + [False] * 5
    late = FocusSchedule(0.8, 1.0)
    assert [late.active(s, sigmas) for s in sigmas[:-1]] == [False] * 8 + [True] * 2
    assert sched.active(torch.tensor(0.9))       # no schedule: progress = 1 - sigma = 0.1
    assert not sched.active(torch.tensor(0.2))
    assert sched.active()                        # no sampling context -> keep focus
    with pytest.raises(ValueError):
        FocusSchedule(0.7, 0.2)


def test_block_gating_specs():
    assert block_active(5, "all") and block_active(5, "")
    assert [i for i in range(15) if block_active(i, "0-3,12")] == [0, 1, 2, 3, 12]
    assert [i for i in range(60) if block_active(i, "last:9", total_blocks=60)] == list(range(51, 60))
    spec = "double:0-1;single:last:2"
    assert block_active(1, spec, "double") and not block_active(2, spec, "double")
    assert block_active(37, spec, "single", total_blocks=38) and not block_active(0, spec, "single", total_blocks=38)
    assert not block_active(0, "double:all", "single")
    with pytest.raises(ValueError, match="block spec"):
        block_active(0, "zero-nine")


def test_negative_positions_and_repeated_conditioning():
    from cogniedit.focus.spans import FocusSpans, TokenSpan

    assert focus_weights([[-1, -3]], 4).tolist() == [[0, 1, 0, 1]]
    spans = FocusSpans([TokenSpan("red", 1, 2, 0, 3)], [], text_len=3)
    # ComfyUI repeats a 3-token conditioning to 6 tokens to batch it with a 6-token one: focus both copies
    assert focus_weights([spans], 6).tolist() == [[0, 1, 0, 0, 1, 0]]
    assert focus_weights([spans], 5).tolist() == [[0, 1, 0, 0, 0]]  # not a multiple: positions as they are
    assert spans.from_end() == [-2]


def test_select_blocks_names_the_part_of_a_spec_beyond_the_model():
    assert select_blocks("all", {"double": 2}) == ({"double": [0, 1]}, [])
    assert select_blocks("5-9", {"double": 2}) == ({"double": []}, ["double 5-9"])
    assert select_blocks("0,1-30", {"double": 20}) == ({"double": list(range(20))}, ["double 20-30"])
    assert select_blocks("last:9", {"double": 2}) == ({"double": [0, 1]}, ["double last:9 (only 2)"])
    selected, outside = select_blocks("double:0-3;single:all", {"double": 2, "single": 1})
    assert selected == {"double": [0, 1], "single": [0]} and outside == ["double 2-3"]
    assert select_blocks("single:0", {"double": 2}) == ({"double": []}, ["single (the model has no single blocks)"])
    assert select_blocks("0-3", {None: 3}) == ({None: [0, 1, 2]}, ["3-3"])  # a UNet's cross-attention sites


def test_tokens_inside_counts_positions_within_the_text():
    assert tokens_inside([0, 3, 9], 4) == 2 and tokens_inside([-1, -5], 4) == 1
    assert tokens_inside(torch.tensor([0.0, 0.5, 1.0]), 2) == 1  # a soft window, cut to the text
