"""The ComfyUI-compatible attention override, driven with a plain attention callable as ``func``.

``sdpa`` below is just an attention function with the (q, k, v, heads, mask=..., skip_reshape=...)
calling convention; the override's output is checked against an independently built dense bias.
"""

import math

import pytest
import torch

from cogniedit.focus.bias import FocusSchedule, reference_attention
from cogniedit.focus.override import TXT_LEN_KEY, FocusProbe, FocusTally, make_attention_override

H, D = 2, 4


def sdpa(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kwargs):
    if not skip_reshape:
        b, n, _ = q.shape
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        mask = mask.unsqueeze(1) if mask.ndim == 3 else mask
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    out = reference_attention(q, k, v, mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def qkv(b=1, n=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, H, n, D, generator=g, dtype=torch.float64) for _ in range(3)]


def expected(q, k, v, text_len, positions, strength, rows, mask=None, samples=None):
    bias = torch.zeros(q.shape[0], 1, q.shape[2], k.shape[2], dtype=q.dtype)
    for b in range(q.shape[0]) if samples is None else samples:
        for p in positions[b] if isinstance(positions[0], list) else positions:
            bias[b, 0, rows[0]:rows[1], p] = math.log1p(strength)
    if mask is not None:
        bias = bias + mask
    return sdpa(q, k, v, H, mask=bias, skip_reshape=True)


def opts(**extra):
    return {TXT_LEN_KEY: 4, **extra}


@pytest.mark.parametrize("structured", [True, False])
def test_qwen_positional_mask_matches_dense_bias(structured):
    q, k, v = qkv()
    mask = torch.zeros(1, 1, 11, dtype=torch.float64)
    mask[0, 0, 3] = -2.0  # Qwen-Image's [B, 1, L] additive text-padding mask, passed positionally
    ov = make_attention_override([[1, 2]], 2.0, structured=structured)
    got = ov(sdpa, q, k, v, H, mask, transformer_options=opts(), skip_reshape=True)
    want = expected(q, k, v, 4, [1, 2], 2.0, (4, 11), mask=mask[:, None])
    assert torch.allclose(got, want, atol=1e-12)
    plain = sdpa(q, k, v, H, mask, transformer_options=opts(), skip_reshape=True)
    assert torch.equal(got[:, :4], plain[:, :4]) or torch.allclose(got[:, :4], plain[:, :4], atol=1e-14)
    assert not torch.allclose(got[:, 4:], plain[:, 4:])


def test_flux_keyword_mask_and_unreshaped_layout():
    q, k, v = qkv(b=2)
    flat = [t.transpose(1, 2).reshape(2, 11, H * D) for t in (q, k, v)]
    ov = make_attention_override([[0], [3]], 1.0)
    got = ov(sdpa, *flat, H, mask=None, transformer_options=opts())
    want = expected(q, k, v, 4, [[0], [3]], 1.0, (4, 11))
    assert got.shape == (2, 11, H * D) and torch.allclose(got, want, atol=1e-12)
    got4 = ov(sdpa, q, k, v, H, mask=None, transformer_options=opts(), skip_reshape=True, skip_output_reshape=True)
    assert torch.allclose(got4.transpose(1, 2).reshape(2, 11, -1), want, atol=1e-12)


def test_identity_paths_are_bit_identical():
    q, k, v = qkv()
    plain = sdpa(q, k, v, H, mask=None, skip_reshape=True)
    cases = [
        (make_attention_override([[1]], 0.0), opts()),                             # strength 0
        (make_attention_override([[]], 3.0), opts()),                              # empty span
        (make_attention_override([[1]], 3.0), {}),                                 # no text length stored
        (make_attention_override([[1]], 3.0, blocks="5-9"), opts(block_index=2)),  # block off
        (make_attention_override([[1]], 3.0, schedule=FocusSchedule(0.5, 1.0)),
         opts(sigmas=torch.tensor([1.0]), sample_sigmas=torch.linspace(1, 0, 5))),  # schedule off
        (make_attention_override([[1]], 3.0), opts(cond_or_uncond=[1])),           # uncond-only batch
    ]
    for ov, to in cases:
        assert torch.equal(ov(sdpa, q, k, v, H, mask=None, transformer_options=to, skip_reshape=True), plain)


def test_cond_only_and_reference_rows_untouched():
    q, k, v = qkv(b=2)
    to = opts(cond_or_uncond=[1, 0], reference_image_num_tokens=[3])  # sample 0 = uncond, 1 = cond
    got = make_attention_override([[2]], 2.0)(sdpa, q, k, v, H, mask=None, transformer_options=to, skip_reshape=True)
    want = expected(q, k, v, 4, [2], 2.0, (4, 8), samples=[1])  # image rows 4..7, reference 8..10 excluded
    assert torch.allclose(got, want, atol=1e-12)
    plain = sdpa(q, k, v, H, skip_reshape=True)
    assert torch.allclose(got[0], plain[0], atol=1e-14) and torch.allclose(got[1, 8:], plain[1, 8:], atol=1e-14)
    both = make_attention_override([[2]], 2.0, cond_only=False, exclude_reference=False)
    got = both(sdpa, q, k, v, H, mask=None, transformer_options=to, skip_reshape=True)
    assert torch.allclose(got, expected(q, k, v, 4, [2], 2.0, (4, 11)), atol=1e-12)


def test_value_mode_scales_focused_values_for_image_rows():
    q, k, v = qkv()
    got = make_attention_override([[1]], 1.0, mode="value")(sdpa, q, k, v, H, mask=None, transformer_options=opts(), skip_reshape=True)
    v2 = v.clone()
    v2[:, :, 1] *= 2
    plain, scaled = sdpa(q, k, v, H, skip_reshape=True), sdpa(q, k, v2, H, skip_reshape=True)
    assert torch.allclose(got[:, :4], plain[:, :4], atol=1e-14) and torch.allclose(got[:, 4:], scaled[:, 4:], atol=1e-12)


def test_gating_by_block_and_schedule_and_chaining():
    q, k, v = qkv()
    calls = []

    def prev(func, *args, **kwargs):
        calls.append(kwargs.get("mask") is not None)
        return func(*args, **kwargs)

    ov = make_attention_override([[1]], 2.0, blocks="double:1", schedule=FocusSchedule(0.0, 0.5), prev_override=prev,
                                 structured=False)
    sig = torch.linspace(1, 0, 5)
    plain = sdpa(q, k, v, H, skip_reshape=True)
    for block, sigma, changed in [(1, 1.0, True), (0, 1.0, False), (1, 0.5, False)]:
        to = opts(block_index=block, block_type="double", sigmas=torch.tensor([sigma]), sample_sigmas=sig)
        out = ov(sdpa, q, k, v, H, None, transformer_options=to, skip_reshape=True)
        assert (not torch.equal(out, plain)) == changed
    assert calls == [True, False, False]  # prev_override saw every call, the bias only when active
    single = opts(block_index=1, block_type="single")
    assert torch.equal(ov(sdpa, q, k, v, H, None, transformer_options=single, skip_reshape=True), plain)


def test_probe_records_more_mass_on_focused_tokens():
    q, k, v = qkv()
    probes = {}
    for s in (0.0, 4.0):
        probes[s] = FocusProbe()
        ov = make_attention_override([[1, 2]], s, probe=probes[s])
        ov(sdpa, q, k, v, H, None, transformer_options=opts(block_index=0), skip_reshape=True)
    assert probes[0.0].records[0]["strength"] == 0.0
    assert probes[4.0].mean_mass() > probes[0.0].mean_mass() > 0
    # and the probe's baseline is the real mass under plain attention
    p = (q[:, :, 4:] @ k.transpose(-1, -2) / 2).softmax(-1)
    assert probes[0.0].mean_mass() == pytest.approx(float(p[..., 1:3].sum(-1).mean()), rel=1e-9)


def test_span_count_must_fit_the_batch():
    q, k, v = qkv(b=2)
    ov = make_attention_override([[1], [2], [3]], 1.0)
    with pytest.raises(ValueError, match="focus spans given for 3 samples"):
        ov(sdpa, q, k, v, H, None, transformer_options=opts(), skip_reshape=True)
    with pytest.raises(ValueError, match="mode"):
        make_attention_override([[1]], 1.0, mode="scale")


def test_tally_counts_what_was_applied_at_run_time():
    """The report says what the patch did (calls biased, tokens hit), not what was planned."""
    q, k, v = qkv()
    tally = FocusTally(planned_tokens=2)
    ov = make_attention_override([[1, 2]], 2.0, blocks="0", tally=tally)
    for block in (0, 1, 0):
        ov(sdpa, q, k, v, H, None, transformer_options=opts(block_index=block), skip_reshape=True)
    assert (tally.seen, tally.selected, tally.biased, tally.tokens_hit) == (3, 2, 2, 2)
    line, warnings = tally.summary()
    assert line == "2 of 2 attention calls in the selected blocks and steps biased (3 seen), 2 of 2 tokens hit"
    assert warnings == []
    tally.reset()
    assert (tally.seen, tally.biased, tally.planned_tokens) == (0, 0, 2)


@pytest.mark.parametrize("positions", [[6, 7], [-9, -8]])  # from the start / from the end of a longer prompt
def test_positions_outside_the_text_are_an_all_miss(positions):
    """A prompt that is not what was encoded: its token positions fall outside the 4-token text that reaches the
    model, so nothing is biased: an all-miss, loudly, and the output is the unpatched one."""
    q, k, v = qkv()
    tally = FocusTally(planned_tokens=2)
    out = make_attention_override([positions], 20.0, tally=tally)(sdpa, q, k, v, H, None,
                                                                   transformer_options=opts(), skip_reshape=True)
    assert torch.equal(out, sdpa(q, k, v, H, skip_reshape=True))
    assert (tally.selected, tally.biased, tally.tokens_hit) == (1, 0, 0) and tally.all_miss
    line, warnings = tally.summary()
    assert "0 of 1 attention calls" in line and "0 of 2 tokens hit" in line
    assert warnings[0].startswith("FOCUS NOT APPLIED: none of the 2 focus tokens is inside the 4-token text")
    assert "prompt" in warnings[0]


def test_partial_miss_and_nothing_selected_are_reported():
    q, k, v = qkv()
    tally = FocusTally(planned_tokens=3)
    make_attention_override([[2, 3, 8]], 1.0, tally=tally)(sdpa, q, k, v, H, None, transformer_options=opts(),
                                                          skip_reshape=True)
    line, warnings = tally.summary()
    assert "2 of 3 tokens hit" in line and "1 of the 3 focus tokens lie outside the 4-token text" in warnings[0]
    unselected = FocusTally(planned_tokens=1)
    make_attention_override([[1]], 1.0, blocks="5", tally=unselected)(
        sdpa, q, k, v, H, None, transformer_options=opts(block_index=0), skip_reshape=True)
    assert unselected.all_miss and "no attention call was in the selected blocks" in unselected.summary()[1][0]
    assert "saw no attention call" in FocusTally(planned_tokens=1).summary()[1][0]
