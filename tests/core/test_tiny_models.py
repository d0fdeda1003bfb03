"""The tiny real-architecture fixtures (tests/fixtures/tiny_models.py): build, determinism, a forward pass with
conditioning of the real encoders' layout, and token counts from the real Qwen2.5 tokenizer."""

from __future__ import annotations

import torch

from tests.fixtures import tiny_models as tm


def test_narrow_qwen_image_forward_and_seed():
    torch.manual_seed(0)
    model = tm.narrow_qwen_image(seed=1)
    again = tm.narrow_qwen_image(seed=1)
    other = tm.narrow_qwen_image(seed=2)
    key = "transformer_blocks.0.attn.to_q.weight"
    assert torch.equal(model.state_dict()[key], again.state_dict()[key])
    assert not torch.equal(model.state_dict()[key], other.state_dict()[key])

    prompt = "make the red circle blue"
    context = tm.qwen_conditioning(prompt, width=64)
    tokens = context.shape[1]
    assert tokens == tm.qwen_token_count(prompt) and 3 < tokens < 20  # real BPE, not characters or words
    latent_hw = 4  # 2x2 patches of a 4x4 latent -> 4 image tokens of 64 channels
    hidden = torch.randn(1, latent_hw, 64)
    with torch.no_grad():
        out = model(hidden_states=hidden, encoder_hidden_states=context,
                    encoder_hidden_states_mask=torch.ones(1, tokens, dtype=torch.long),
                    timestep=torch.tensor([0.5]), img_shapes=[[(1, 2, 2)]],
                    return_dict=False)[0]
    assert out.shape == (1, latent_hw, 64)  # patch 2 x 2 x out_channels 16
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_narrow_flux_forward_uses_text_and_pooled():
    model = tm.narrow_flux(seed=0)
    context, pooled = tm.flux_conditioning(width=64, pooled_width=32, tokens=tm.FLUX_T5_MIN_TOKENS)
    assert context.shape == (1, 256, 64) and pooled.shape == (1, 32)
    hidden = torch.randn(1, 4, 64)

    def forward(ctx, pool):
        with torch.no_grad():
            return model(hidden_states=hidden, encoder_hidden_states=ctx, pooled_projections=pool,
                         timestep=torch.tensor([0.5]), guidance=torch.tensor([2.5]),
                         img_ids=torch.zeros(4, 3), txt_ids=torch.zeros(ctx.shape[1], 3), return_dict=False)[0]

    out = forward(context, pooled)
    assert out.shape == (1, 4, 64) and torch.isfinite(out).all()
    assert not torch.allclose(out, forward(context, torch.zeros_like(pooled)))  # the pooled vector is read
