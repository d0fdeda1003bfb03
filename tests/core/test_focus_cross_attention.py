"""Focus through a UNet's cross-attention (attn2 replace signature), checked against attention built by hand.

``attention`` below is a plain attention function with ComfyUI's calling convention
(q, k, v, heads, mask=None, attn_precision=None, transformer_options=...), written independently of the patch.
"""

import math

import pytest
import torch

from cogniedit.focus.bias import FocusSchedule
from cogniedit.focus.cross_attention import make_cross_attention_patch
from cogniedit.focus.override import FocusProbe, FocusTally
from cogniedit.focus.spans import token_sequence_spans

HEADS, DIM, N_IMAGE, N_TEXT = 2, 4, 6, 5


class Recorder:
    """Hand-written softmax attention; remembers the keyword arguments of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, heads, mask=None, attn_precision=None, transformer_options=None):
        self.calls.append({"mask": mask, "attn_precision": attn_precision, "transformer_options": transformer_options})
        b = q.shape[0]
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            logits = logits + mask
        out = logits.softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, -1, heads * v.shape[-1])


def qkv(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, N_IMAGE, HEADS * DIM, generator=g, dtype=torch.float64)
    k = torch.randn(batch, N_TEXT, HEADS * DIM, generator=g, dtype=torch.float64)
    v = torch.randn(batch, N_TEXT, HEADS * DIM, generator=g, dtype=torch.float64)
    return q, k, v


def by_hand(q, k, v, positions_per_sample, strength, mode="bias"):
    """softmax(qk^T/sqrt(d) + log(1+s) on focused keys) v, one sample and head at a time."""
    out = torch.empty_like(q)
    for b, positions in enumerate(positions_per_sample):
        for h in range(HEADS):
            cols = slice(h * DIM, (h + 1) * DIM)
            logits = q[b, :, cols] @ k[b, :, cols].T / math.sqrt(DIM)
            values = v[b, :, cols].clone()
            for p in positions:
                if mode == "bias":
                    logits[:, p] += math.log(1 + strength)
                else:
                    values[p] *= 1 + strength
            out[b, :, cols] = logits.softmax(-1) @ values
    return out


def options(**extra):
    return {"n_heads": HEADS, "attn_precision": None, **extra}


@pytest.mark.parametrize("mode", ["bias", "value"])
def test_patch_equals_attention_computed_by_hand(mode):
    q, k, v = qkv()
    patch = make_cross_attention_patch([[1, 3]], 2.0, Recorder(), mode=mode)
    assert torch.allclose(patch(q, k, v, options()), by_hand(q, k, v, [[1, 3]], 2.0, mode), atol=1e-12)


def test_per_sample_positions_and_uncond_half_left_exact():
    q, k, v = qkv(batch=4, seed=1)
    # batch = [cond a, cond b, uncond a, uncond b]: two prompts, each with its own focus positions
    patch = make_cross_attention_patch([[0], [2, 4]], 1.5, Recorder())
    got = patch(q, k, v, options(cond_or_uncond=[0, 1]))
    want = by_hand(q, k, v, [[0], [2, 4], [], []], 1.5)
    assert torch.allclose(got, want, atol=1e-12)
    everywhere = make_cross_attention_patch([[0], [2, 4]], 1.5, Recorder(), cond_only=False)
    want_all = by_hand(q, k, v, [[0], [2, 4], [0], [2, 4]], 1.5)
    assert torch.allclose(everywhere(q, k, v, options(cond_or_uncond=[0, 1])), want_all, atol=1e-12)


def test_focus_spans_follow_repeated_conditioning():
    """ComfyUI repeats a 77-token conditioning to batch it with a longer one: every copy is focused."""
    q, k, v = qkv()
    spans = token_sequence_spans([7, 8, 9, 0, 0], ["b"], lambda text: [8])  # text_len 5, position 1
    k2, v2 = torch.cat([k, k], 1), torch.cat([v, v], 1)
    patch = make_cross_attention_patch([spans], 1.0, Recorder())
    got = patch(q, k2, v2, options())
    logits_bias = torch.zeros(2 * N_TEXT, dtype=torch.float64)
    logits_bias[[1, 1 + N_TEXT]] = math.log(2.0)
    want = Recorder()(q, k2, v2, HEADS, mask=logits_bias.view(1, 1, 1, -1))
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("case", ["strength_zero", "no_positions", "outside_schedule", "uncond_only"])
def test_inactive_focus_is_the_unpatched_call_bit_for_bit(case):
    q, k, v = qkv(seed=2)
    attention = Recorder()
    strength, spans, schedule, extra = 2.0, [[1]], None, {}
    if case == "strength_zero":
        strength = 0.0
    elif case == "no_positions":
        spans = [[]]
    elif case == "outside_schedule":
        schedule, extra = FocusSchedule(0.5, 1.0), {"sigmas": torch.tensor([1.0]),
                                                    "sample_sigmas": torch.tensor([1.0, 0.5, 0.0])}
    else:
        extra = {"cond_or_uncond": [1]}
    patch = make_cross_attention_patch(spans, strength, attention, schedule=schedule)
    got = patch(q, k, v, options(**extra))
    assert torch.equal(got, Recorder()(q, k, v, HEADS))
    assert attention.calls[-1]["mask"] is None


def test_host_options_reach_the_attention_function():
    """Precision and transformer options go through, so a host-level attention override still applies."""
    q, k, v = qkv()
    attention = Recorder()
    extra = options(attn_precision=torch.float32, marker="kept")
    make_cross_attention_patch([[1]], 1.0, attention)(q, k, v, extra)
    assert attention.calls[-1]["attn_precision"] is torch.float32
    assert attention.calls[-1]["transformer_options"]["marker"] == "kept"


def test_probe_measures_more_attention_on_focused_tokens():
    q, k, v = qkv(seed=3)
    masses = []
    for strength in (0.0, 3.0):
        probe = FocusProbe()
        make_cross_attention_patch([[2]], strength, Recorder(), probe=probe, block_name=("input", 1, 0))(
            q, k, v, options())
        masses.append(probe.mean_mass())
        assert probe.records[0]["block_index"] == ("input", 1, 0)
    logits = torch.stack([q[0, :, h * DIM:(h + 1) * DIM] @ k[0, :, h * DIM:(h + 1) * DIM].T / math.sqrt(DIM)
                          for h in range(HEADS)])
    assert masses[0] == pytest.approx(float(logits.softmax(-1)[..., 2].mean()), abs=1e-12)
    assert masses[1] > masses[0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="focus mode must be one of"):
        make_cross_attention_patch([[1]], 1.0, Recorder(), mode="learned")


def test_token_sequence_spans_finds_every_run_and_warns_on_absent_phrases():
    ids = [49406, 320, 736, 3617, 49407, 320, 736, 49407]
    vocab = {"a": [320], "red": [736], "red cup": [736, 3617], "giraffe": [9999]}
    found = token_sequence_spans(ids, ["red cup", "red", "giraffe", " "], vocab.get)
    assert [(s.phrase, s.start, s.end) for s in found.spans] == [("red cup", 2, 4), ("red", 2, 3), ("red", 6, 7)]
    assert found.positions == [2, 3, 6]
    assert found.text_len == len(ids)
    assert len(found.warnings) == 2 and "'giraffe'" in found.warnings[0]
    assert token_sequence_spans([None, 736], ["red"], vocab.get).positions == [1]  # embeddings never match


def test_tally_counts_biased_calls_and_an_all_miss_is_exact():
    q, k, v = qkv(seed=4)
    tally = FocusTally(planned_tokens=2)
    make_cross_attention_patch([[1, 3]], 2.0, Recorder(), tally=tally)(q, k, v, options())
    assert (tally.selected, tally.biased, tally.tokens_hit) == (1, 1, 2)
    miss = FocusTally(planned_tokens=2)
    attention = Recorder()
    got = make_cross_attention_patch([[N_TEXT + 3, N_TEXT + 4]], 2.0, attention, tally=miss)(q, k, v, options())
    assert torch.equal(got, Recorder()(q, k, v, HEADS)) and attention.calls[-1]["mask"] is None
    assert miss.all_miss and miss.summary()[1][0].startswith("FOCUS NOT APPLIED: none of the 2 focus tokens")
