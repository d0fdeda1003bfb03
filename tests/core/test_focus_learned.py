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
