"""LoRA injection on a tiny diffusers QwenImageTransformer2DModel, the ComfyUI-format file, and base-model loading
from a ComfyUI-style single file."""

import pytest
import torch
from safetensors.torch import save_file

from training.lora import (inject_lora, load_lora_state_dict, lora_disabled, lora_layers, merged_weight_delta,
                           read_lora_file, save_lora_file)
from training.models import ModelLoadError, load_single_file

KW = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=32, num_attention_heads=2,
          joint_attention_dim=32, axes_dims_rope=(8, 12, 12))


def tiny_dit(seed=0):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(**KW).eval()


def run(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 16, generator=g)
    txt = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=txt, encoder_hidden_states_mask=torch.ones(1, 5),
                     timestep=torch.tensor([0.5]), img_shapes=[[(1, 4, 4)]], return_dict=False)[0]


def test_keys_are_comfyui_lora_format_and_file_round_trips(tmp_path):
    model = tiny_dit()
    base_out = run(model)
    layers = inject_lora(model, rank=4, alpha=8.0, targets=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj"], seed=0)
    assert len(layers) == 2 * 5
    assert torch.equal(run(model), base_out)  # B = 0 at init: the adapted model starts as the base
    for layer in layers.values():
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    adapted = run(model)
    assert not torch.allclose(adapted, base_out)
    with lora_disabled(model):
        assert torch.equal(run(model), base_out)
    path = save_lora_file(tmp_path / "lora.safetensors", model, {"base_model_family": "qwen_image", "rank": 4})
    tensors, meta = read_lora_file(path)
    assert "diffusion_model.transformer_blocks.0.attn.to_out.0.lora_A.weight" in tensors
    assert "diffusion_model.transformer_blocks.1.attn.add_q_proj.alpha" in tensors
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in tensors)
    assert {k.rsplit(".", 2)[-2] if k.endswith("weight") else "alpha" for k in tensors} == {"lora_A", "lora_B", "alpha"}
    assert float(tensors["diffusion_model.transformer_blocks.0.attn.to_q.alpha"]) == 8.0
    assert meta["format"] == "cogniedit.lora" and meta["rank"] == "4" and meta["base_model_family"] == "qwen_image"
    # merging the file's delta into the base weights (what ComfyUI does) reproduces the adapted output
    merged = tiny_dit()
    with torch.no_grad():
        for name, layer in layers.items():
            merged.get_submodule(name).weight += merged_weight_delta(layer)
    assert torch.allclose(run(merged), adapted, atol=1e-5)
    # load into a fresh injected model
    fresh = tiny_dit()
    inject_lora(fresh, rank=4, alpha=8.0, targets=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj"])
    load_lora_state_dict(fresh, tensors)
    assert torch.equal(run(fresh), adapted)


def test_only_lora_parameters_train():
    model = tiny_dit()
    inject_lora(model, rank=2, alpha=2.0, targets=["to_k"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(n.endswith("to_k") for n in lora_layers(model))


def test_unknown_target_names_the_fix():
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        inject_lora(tiny_dit(), targets=["to_qkv"])


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model.", ""])
def test_single_file_checkpoint_loads_with_host_prefixes(tmp_path, prefix):
    model = tiny_dit(seed=3)
    path = tmp_path / "qwen_tiny.safetensors"
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    if prefix:
        state["vae.decoder.weight"] = torch.zeros(2)  # other components in the same file are ignored
    save_file(state, str(path))
    loaded = load_single_file(path, {"axes_dims_rope": [8, 12, 12]})
    assert loaded.config.num_layers == 2 and loaded.config.joint_attention_dim == 32
    assert torch.equal(run(loaded.eval()), run(model))


def test_single_file_needs_rope_axes_for_unusual_head_dims(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_dit().state_dict().items()}, str(path))
    with pytest.raises(ModelLoadError, match="axes_dims_rope"):
        load_single_file(path)
