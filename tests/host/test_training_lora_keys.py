"""The trainer's LoRA file loads into ComfyUI's own Qwen-Image model with every key consumed and zero
"lora key not loaded" warnings, and the patched weights equal base + scale * B @ A."""

from __future__ import annotations

import logging

import pytest
import torch

from comfy_inprocess import QWEN_CONFIG, bootstrap, tiny_qwen_image

pytestmark = pytest.mark.host

# every nn.Linear family of a Qwen-Image block (diffusers names): attention, text-stream attention, MLPs, modulation
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
           "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2", "img_mod.1", "txt_mod.1"]


def test_trainer_lora_file_has_zero_not_loaded_keys(comfyui_root, tmp_path, caplog):
    comfy = bootstrap(comfyui_root)
    from diffusers import QwenImageTransformer2DModel
    from safetensors.torch import load_file

    from training.lora import inject_lora, merged_weight_delta, save_lora_file

    torch.manual_seed(0)
    dit = QwenImageTransformer2DModel(**{k: v for k, v in QWEN_CONFIG.items() if k != "image_model"})
    layers = inject_lora(dit, rank=4, alpha=2.0, targets=TARGETS, seed=0)
    for layer in layers.values():
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    path = save_lora_file(tmp_path / "lora.safetensors", dit, {"base_model_family": "qwen_image"})
    tensors = load_file(str(path))
    assert len(tensors) == 3 * len(layers) == 3 * 2 * len(TARGETS)

    patcher = tiny_qwen_image(comfy)
    import comfy.lora as comfy_lora

    key_map = comfy_lora.model_lora_keys_unet(patcher.model, {})

    with caplog.at_level(logging.WARNING):
        patches = comfy_lora.load_lora(tensors, key_map)
    not_loaded = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
    assert not_loaded == []
    assert len(patches) == len(layers)
    # the check can fail: a key ComfyUI does not know is reported
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        comfy_lora.load_lora({**tensors, "diffusion_model.no_such_block.lora_A.weight": torch.zeros(1)}, key_map)
    assert any("not loaded" in r.getMessage() for r in caplog.records)

    # the patch lands on the matching ComfyUI weight and adds exactly scale * B @ A
    patcher.add_patches(patches, 1.0)
    comfy_sd = {k: v.clone() for k, v in patcher.model.state_dict().items()}
    patcher.patch_model()
    patched = patcher.model.state_dict()
    for name, layer in layers.items():
        key = f"diffusion_model.{name}.weight"
        assert key in comfy_sd, key
        torch.testing.assert_close(patched[key] - comfy_sd[key], merged_weight_delta(layer).detach(),
                                   rtol=1e-4, atol=1e-6)
    patcher.unpatch_model()
