"""The trainer's ComfyUI name maps and fp8 reading checked against ComfyUI's own classes: the Qwen-Image VAE
(Wan 2.1 layout) and the Qwen2.5-VL-7B text encoder have exactly the keys and shapes the maps give (full size, built
on the meta device), ComfyUI's VAE loader reads the tiny file the trainer reads and encodes / decodes as diffusers'
model does, and ComfyUI dequantises a scaled fp8 layer to the trainer's weights bit for bit."""

from __future__ import annotations

import pytest
import torch

# imported before ComfyUI's own tests/ package can shadow ours
from tests.fixtures.comfy_files import (VAE_FILE, comfy_text_encoder_state, tiny_comfy_model_files,
                                        tiny_comfy_text_encoder, tiny_comfy_vae)

pytestmark = pytest.mark.host


def test_vae_names_are_comfyuis_wan_vae_keys(comfy):
    """Qwen-Image's VAE at full size: ComfyUI's WanVAE (the class its loader builds for this file) has exactly the
    keys and shapes of diffusers' AutoencoderKLQwenImage under the trainer's map, and the architecture read back
    from those shapes is diffusers' default (Qwen-Image's) config."""
    from comfy.ldm.wan.vae import WanVAE
    from diffusers import AutoencoderKLQwenImage

    from training.comfy_files import comfy_vae_name, vae_config

    with torch.device("meta"):
        theirs = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True], dropout=0.0).state_dict()
        ours = AutoencoderKLQwenImage()
    mapped = {comfy_vae_name(k, 2): tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mapped == {k: tuple(v.shape) for k, v in theirs.items()}
    config = vae_config(mapped)
    assert all(ours.config[k] == v for k, v in config.items())
    latent_format = comfy.comfy.latent_formats.Wan21()  # ComfyUI's normalisation of Qwen-Image latents
    assert latent_format.latents_mean.flatten().tolist() == pytest.approx(ours.config.latents_mean)
    assert latent_format.latents_std.flatten().tolist() == pytest.approx(ours.config.latents_std)


def test_comfyuis_vae_loader_reads_the_tiny_file_as_diffusers_does(comfy):
    """comfy.sd.VAE built from the file the trainer reads: its encoder mean and decoder equal diffusers' on the
    same weights."""
    from safetensors.torch import load_file

    state = load_file(str(tiny_comfy_model_files() / VAE_FILE))
    theirs = comfy.sd.VAE(sd=state).first_stage_model.float()
    ours = tiny_comfy_vae()
    pixels = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latent = ours.encode(pixels).latent_dist.mode()
        assert torch.allclose(theirs.encode(pixels), latent, atol=1e-5)
        assert torch.allclose(theirs.decode(latent), ours.decode(latent).sample, atol=1e-5)


def test_text_encoder_names_are_comfyuis_qwen25_vl_keys(comfy):
    """ComfyUI's Qwen25_7BVLI at its fixed 7B size (meta device): the config the trainer reads from those shapes
    builds a transformers Qwen2.5-VL whose parameters map onto exactly those keys and shapes (the lm_head, which
    ComfyUI's class lacks, aside)."""
    import comfy.text_encoders.llama as llama
    from transformers import Qwen2_5_VLForConditionalGeneration

    from training.comfy_files import comfy_text_encoder_name, text_encoder_config

    theirs = llama.Qwen25_7BVLI({}, dtype=torch.bfloat16, device="meta", operations=comfy.ops.disable_weight_init)
    shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    config = text_encoder_config(shapes)
    assert (config.text_config.num_attention_heads, config.text_config.num_key_value_heads) == (28, 4)
    assert (config.vision_config.num_heads, config.vision_config.fullatt_block_indexes) == (16, [7, 15, 23, 31])
    with torch.device("meta"):
        ours = Qwen2_5_VLForConditionalGeneration(config)
    mapped = {comfy_text_encoder_name(k): tuple(v.shape) for k, v in ours.state_dict().items() if k != "lm_head.weight"}
    assert mapped == shapes


def test_comfyui_dequantises_scaled_fp8_to_the_trainers_weights(comfy):
    """An old-layout scaled fp8 file, converted by ComfyUI's convert_old_quants and loaded into its mixed-precision
    Linear: ComfyUI's dequantised weight is the trainer's, and its full-precision forward matches."""
    from training.comfy_files import dequantize

    state = comfy_text_encoder_state(tiny_comfy_text_encoder(), "scaled_fp8")
    ours = dequantize(state, torch.float32)
    converted, _ = comfy.utils.convert_old_quants(dict(state), model_prefix="", metadata={})
    generator = torch.Generator().manual_seed(0)
    for prefix in ("model.layers.0.self_attn.q_proj.", "model.layers.1.mlp.down_proj.", "visual.blocks.0.attn.qkv."):
        weight, bias = ours[prefix + "weight"], ours.get(prefix + "bias")
        layer = comfy.ops.mixed_precision_ops({}, compute_dtype=torch.float32, full_precision_mm=True).Linear(
            weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.load_state_dict({k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)})
        assert torch.equal(layer.weight.dequantize().float(), weight)
        x = torch.randn(3, weight.shape[1], generator=generator)
        with torch.no_grad():
            assert torch.allclose(layer(x), torch.nn.functional.linear(x, weight, bias), atol=1e-5)
