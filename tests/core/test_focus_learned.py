"""Learned Token Focus Relocation: shapes from real tiny DiTs, code-faithful hard mode, gradients."""

import pytest
import torch

from cogniedit.focus.learned import LearnedFocus, count_blocks, text_hidden_size
from cogniedit.focus.override import TXT_LEN_KEY, make_attention_override
from cogniedit.focus.bias import reference_attention


@pytest.fixture(scope="module")
def tiny_qwen():
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=5, attention_head_dim=16,
                                       num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6))


def test_layers_and_width_come_from_the_model(tiny_qwen):
    from diffusers import FluxTransformer2DModel

    assert count_blocks(tiny_qwen) == {"double": 5} and text_hidden_size(tiny_qwen) == 32
    lf = LearnedFocus.for_model(tiny_qwen, blocks="last:2", xi=3, window=8)
    assert lf.block_indices == [3, 4] and lf.soft_tokens.shape == (2, 3, 32)
    assert LearnedFocus.for_model(tiny_qwen, blocks="all", xi=3, window=8).soft_tokens.shape[0] == 5
    flux = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=8, axes_dims_rope=(2, 3, 3))
    assert count_blocks(flux) == {"double": 2, "single": 3} and text_hidden_size(flux) == 16
    assert sorted(k.split(".")[0] for k in lf.state_dict()) == ["predictors"] * 4 + ["soft_tokens"]
    with pytest.raises(ValueError, match="selects none"):
        LearnedFocus.for_model(tiny_qwen, blocks="7-9", xi=3, window=8)
    with pytest.raises(ValueError, match="pass a DiT"):
        count_blocks(torch.nn.Linear(2, 2))


def test_hard_mode_is_the_authors_replacement_inside_the_instruction():
    torch.manual_seed(1)
    lf = LearnedFocus(8, [0], xi=3, window=6)
    txt = torch.randn(2, 20, 8)
    start = 5  # e.g. vision tokens before the instruction: never touched
    new, w = lf(txt, 0, text_start=start, text_len=9, hard=True)
    probs = lf.start_distribution(txt, 0, start, 9)
    for b in range(2):
        s = start + int(probs[b].argmax())
        expect = txt[b].clone()
        expect[s:s + 3] = lf.soft_tokens[0]
        assert torch.allclose(new[b], expect, atol=1e-6)
        assert w[b].tolist() == [1.0 if s <= j < s + 3 else 0.0 for j in range(20)]
    untouched, zero = lf(txt, 7)  # a block the module does not serve
    assert untouched is txt and torch.count_nonzero(zero) == 0


def test_starts_never_leave_the_instruction():
    lf = LearnedFocus(4, [0], xi=3, window=8)
    probs = lf.start_distribution(torch.randn(1, 12, 4), 0, 2, 5)  # 5 instruction tokens: starts 0..2
    assert torch.count_nonzero(probs[0, 3:]) == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    _, w = lf(torch.randn(1, 12, 4), 0, text_start=2, text_len=5)
    assert torch.count_nonzero(w[0, :2]) == 0 and torch.count_nonzero(w[0, 7:]) == 0


@pytest.mark.parametrize("hard", [False, True])
def test_gradients_reach_predictor_and_soft_tokens(hard):
    torch.manual_seed(2)
    lf = LearnedFocus(8, [3, 4], xi=2, window=6)
    txt = torch.randn(2, 10, 8)
    new, w = lf(txt, 4, text_start=1, text_len=7, hard=hard)
    # attention forcing: the window weights drive the focus bias through the attention override
    L, n_img, heads = 10, 5, 2
    q, k, v = (torch.randn(2, heads, L + n_img, 4) for _ in range(3))
    k = k.clone()
    k[:, :, :L] = k[:, :, :L] + new[..., :4].unsqueeze(1)  # text keys come from the relocated tokens

    def attn(q, k, v, heads, mask=None, skip_reshape=False, **kw):
        out = reference_attention(q, k, v, mask)  # [B, H, L, D] -> the host convention [B, L, H*D]
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)

    ov = make_attention_override([w[0], w[1]], 2.0)
    out = ov(attn, q, k, v, heads, None, transformer_options={TXT_LEN_KEY: L}, skip_reshape=True)
    loss = (out[:, L:] * torch.randn_like(out[:, L:])).sum() + (new * torch.randn_like(new)).sum()
    loss.backward()
    assert lf.soft_tokens.grad[1].abs().sum() > 0 and lf.soft_tokens.grad[0].abs().sum() == 0  # layer of block 4
    assert lf.predictors[1].weight.grad.abs().sum() > 0 and lf.predictors[0].weight.grad is None


@pytest.mark.parametrize("hard", [False, True])
def test_the_papers_window_on_a_short_instruction_keeps_a_choice(hard):
    """xi = 64 (the paper) on instructions of 12 and 5 tokens: the window shrinks to half the instruction (6 and 3
    tokens, the first soft tokens), so the predictor still chooses among starts and gets gradient, and at least half
    of each instruction keeps its own tokens. (A window covering the whole instruction leaves one start: the
    predictor would get no gradient and the instruction would be replaced by prompt-independent tokens.)"""
    torch.manual_seed(4)
    lf = LearnedFocus(16, [0], xi=64, window=128)
    txt = torch.randn(2, 40, 16)
    starts, lens = torch.tensor([10, 20]), torch.tensor([12, 5])
    new, w = lf(txt, 0, text_start=starts, text_len=lens, hard=hard)
    probs = lf.start_distribution(txt, 0, starts, lens).detach()
    assert torch.count_nonzero(probs, dim=1).tolist() == [7, 3]  # usable starts 0 .. n - ceil(n / 2)
    assert w.detach().sum(1).tolist() == pytest.approx([6.0, 3.0])
    for b, (s, n) in enumerate(zip(starts.tolist(), lens.tolist())):
        assert torch.count_nonzero(w[b, :s]) == 0 and torch.count_nonzero(w[b, s + n:]) == 0
        if hard:  # the authors' replacement of a half-instruction window; the rest of the instruction is kept
            first = s + int(probs[b].argmax())
            expect = txt[b].clone()
            expect[first:first + (n + 1) // 2] = lf.soft_tokens[0, :(n + 1) // 2]
            assert torch.allclose(new[b], expect, atol=1e-6)
    (new * torch.randn_like(new)).sum().backward()
    assert lf.predictors[0].weight.grad.abs().sum() > 0
    assert lf.soft_tokens.grad[0, 6:].abs().sum() == 0  # soft tokens past the longest fitted window are unused


def test_bad_sizes_refused():
    with pytest.raises(ValueError, match="xi <= window"):
        LearnedFocus(8, [0], xi=10, window=6)


def test_per_sample_instruction_starts():
    torch.manual_seed(3)
    lf = LearnedFocus(4, [0], xi=2, window=4)
    txt = torch.randn(2, 9, 4)
    new, w = lf(txt, 0, text_start=torch.tensor([1, 6]), hard=True)  # sample 1: only 3 instruction tokens
    assert torch.equal(new[0, :1], txt[0, :1]) and torch.equal(new[1, :6], txt[1, :6])
    assert w.sum(-1).tolist() == [2.0, 2.0] and torch.count_nonzero(w[1, :6]) == 0


def test_gate_scales_the_whole_relocation_and_its_absence_is_the_paper():
    """sigmoid(gate) scales the written tokens and the window weights: a very negative gate is the identity,
    a very positive one the ungated (paper's) module; the gate still gets gradient near the identity."""
    torch.manual_seed(0)
    plain = LearnedFocus(16, [0, 1], xi=2, window=4)
    txt = torch.randn(2, 7, 16)
    want_txt, want_w = plain(txt, 1, 1, 5)
    for logit, expect_identity in ((-40.0, True), (40.0, False)):
        gated = LearnedFocus(16, [0, 1], xi=2, window=4, gate_init=logit)
        gated.load_state_dict({**plain.state_dict(), "gate": torch.full((2,), logit)})
        new_txt, w = gated(txt, 1, 1, 5)
        if expect_identity:
            assert torch.allclose(new_txt, txt, atol=1e-12) and w.abs().max() < 1e-12
        else:
            assert torch.allclose(new_txt, want_txt) and torch.allclose(w, want_w)
    warm = LearnedFocus(16, [0, 1], xi=2, window=4, gate_init=-4.0)
    new_txt, w = warm(txt, 0, 1, 5)
    (new_txt.sum() + w.sum()).backward()
    assert warm.gate.grad[0] != 0 and warm.soft_tokens.grad[0].abs().sum() > 0
    assert float(w.detach().sum(1).max()) == pytest.approx(2 * torch.sigmoid(torch.tensor(-4.0)).item(), rel=1e-5)


def test_gated_focus_files_round_trip(tmp_path):
    from cogniedit.focus.weights_file import learned_focus_from, load_focus_weights, save_focus_weights

    torch.manual_seed(1)
    module = LearnedFocus(16, [2, 5], xi=2, window=4, gate_init=-1.5)
    path = save_focus_weights(tmp_path / "f.safetensors", module, {"family": "shapeedit", "base_hash": "abc"})
    tensors, meta = load_focus_weights(path)
    loaded = learned_focus_from(tensors, meta, "the test file")
    assert loaded.gate is not None and torch.equal(loaded.gate, module.gate)
    txt = torch.randn(1, 6, 16)
    assert all(torch.equal(a, b) for a, b in zip(loaded(txt, 5, 0, 6), module(txt, 5, 0, 6)))
    ungated = learned_focus_from({k: v for k, v in tensors.items() if k != "gate"}, meta, "the test file")
    assert ungated.gate is None  # files without a gate (the paper's module, older runs) load as before
