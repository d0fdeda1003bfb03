"""CogniEdit Loader in-process against the real ComfyUI: a LoRA written by the trainer (training/lora.py) loads with
zero "not loaded" keys and changes the output; a LoRA for another base model is refused; focus weights written by
cogniedit.focus.weights_file are loaded with its file checks and handed on."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import torch
from safetensors.torch import save_file

from comfy_inprocess import (flux_conditioning, pack_module, qwen_conditioning, random_image,
                             tiny_diffusers_qwen_image, tiny_flux_kontext, tiny_qwen_image, tiny_taef1_vae,
                             tiny_wan_vae)

pytestmark = pytest.mark.host

RANK = 4


@pytest.fixture(scope="module")
def loader(comfy):
    return pack_module("nodes.loader")


@pytest.fixture(scope="module")
def sampler(comfy):
    return pack_module("nodes.sampler")


@pytest.fixture()
def folders(comfy, loader, tmp_path):
    """Temporary loras/ and cogniedit/ folders registered with ComfyUI for one test, removed afterwards."""
    fp = comfy.folder_paths
    paths = {"loras": tmp_path / "loras", loader.MODELS_FOLDER: tmp_path / "cogniedit"}
    for name, path in paths.items():
        path.mkdir()
        fp.add_model_folder_path(name, str(path))
    yield paths
    for name, path in paths.items():
        fp.folder_names_and_paths[name][0].remove(str(path))


def lora_state(model, modules, seed=0, prefix="diffusion_model."):
    """A LoRA in the trainer's key format: ``diffusion_model.<module>.lora_A/B.weight`` + ``.alpha``."""
    weights = model.model.diffusion_model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module in modules:
        out_features, in_features = weights[f"{module}.weight"].shape
        state[f"{prefix}{module}.lora_A.weight"] = torch.randn(RANK, in_features, generator=generator) * 0.5
        state[f"{prefix}{module}.lora_B.weight"] = torch.randn(out_features, RANK, generator=generator) * 0.5
        state[f"{prefix}{module}.alpha"] = torch.tensor(float(RANK))
    return state


QWEN_MODULES = [f"transformer_blocks.{i}.{m}" for i in range(2)
                for m in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "img_mlp.net.0.proj", "img_mlp.net.2")]
FLUX_MODULES = ["double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv", "single_blocks.0.linear1",
                "single_blocks.0.linear2"]


@pytest.fixture(scope="module")
def qwen(comfy):
    return tiny_qwen_image(comfy), tiny_wan_vae(comfy)


def sample(sampler, model, vae, conditioning):
    positive, negative = conditioning(seed=1)
    latent, _ = sampler.CogniEditSampler.execute(model, positive, negative, 3, 3, 2.0, 1.0, 0.0,
                                                 source_image=random_image(64, 64, seed=2), vae=vae).args
    return latent["samples"]


@pytest.fixture()
def trained(comfy, folders):
    """What a CogniEdit training run leaves behind, for a tiny Qwen-Image-Edit base: the trainer's LoRA file
    (training/lora.py on diffusers' QwenImageTransformer2DModel) and its focus-weights file
    (cogniedit.focus.weights_file), both in the registered folders. Returns the ComfyUI model of that base."""
    from cogniedit.focus.learned import LearnedFocus
    from cogniedit.focus.weights_file import base_model_hash, save_focus_weights
    from training.lora import inject_lora, save_lora_file

    dit = tiny_diffusers_qwen_image(seed=3)
    base_hash = base_model_hash(dit)
    model = tiny_qwen_image(comfy, state={k: v.clone() for k, v in dit.state_dict().items()})
    layers = inject_lora(dit, rank=RANK, alpha=float(RANK), targets=TRAINER_TARGETS, seed=0)
    for layer in layers.values():  # a trained LoRA: B is no longer zero
        torch.nn.init.normal_(layer.lora_B.weight, std=0.5)
    save_lora_file(folders["loras"] / "cogniedit_lora.safetensors", dit,
                   {"base_model_family": "qwen_image_edit", "base_model_hash": base_hash})
    focus = LearnedFocus(64, [0, 1], xi=8, window=16)
    meta = {"family": "qwen_image_edit", "base_hash": base_hash}
    save_focus_weights(folders["cogniedit"] / "cogniedit_focus.safetensors", focus, meta)
    save_focus_weights(folders["cogniedit"] / "other_base_focus.safetensors", focus, dict(meta, base_hash="0" * 16))
    return model, base_hash, len(layers)


TRAINER_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "img_mlp.net.2")


def test_trainer_lora_loads_every_key_and_changes_the_output(loader, sampler, qwen, trained, caplog):
    model, base_hash, modules = trained
    _, vae = qwen
    with caplog.at_level(logging.WARNING):
        patched, focus, report = loader.CogniEditLoader.execute(model, "cogniedit_lora.safetensors", 1.0).args
    not_loaded = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage().lower()]
    assert not_loaded == []  # ComfyUI's own loader logged no "lora key not loaded"
    assert f"{3 * modules} keys loaded, 0 not loaded" in report and focus is None
    assert f"base hash {base_hash}" in report and "note:" not in report  # trained on this very base
    assert len(patched.patches) == modules == 12 and not model.patches  # the clone is patched, the input is not
    assert patched.get_attachment("lora_metadata")["base_model_hash"] == base_hash
    assert not torch.equal(sample(sampler, patched, vae, qwen_conditioning),
                           sample(sampler, model, vae, qwen_conditioning))
    unchanged, _, report = loader.CogniEditLoader.execute(model, "cogniedit_lora.safetensors", 0.0).args
    assert unchanged is model and "not applied" in report


def test_focus_weights_are_loaded_with_the_file_checks(loader, trained, folders):
    model, base_hash, _ = trained
    _, focus, report = loader.CogniEditLoader.execute(model, "cogniedit_lora.safetensors", 1.0,
                                                      "cogniedit_focus.safetensors").args
    tensors, meta = focus  # what the Token Focus node takes (cogniedit.focus.weights_file's form)
    assert meta["base_hash"] == base_hash and meta["family"] == "qwen_image_edit" and tensors
    assert "focus weights: cogniedit_focus.safetensors (family qwen_image_edit" in report
    _, focus, report = loader.CogniEditLoader.execute(model, "(none)", 1.0, "cogniedit_focus.safetensors").args
    assert focus is not None and "lora: none" in report
    assert "warning" not in report
    # another base: handed on (the Token Focus node refuses it where it is used) but flagged here already
    _, focus, report = loader.CogniEditLoader.execute(model, "(none)", 1.0, "other_base_focus.safetensors").args
    assert focus[1]["base_hash"] == "0" * 16
    assert f"warning: the focus weights were trained on base hash {'0' * 16}, not this model's {base_hash}" in report
    good = (folders["cogniedit"] / "cogniedit_focus.safetensors").read_bytes()
    (folders["cogniedit"] / "truncated.safetensors").write_bytes(good[:50])
    with pytest.raises(ValueError, match="'truncated.safetensors' is truncated"):  # the core's file checks
        loader.CogniEditLoader.execute(model, "(none)", 1.0, "truncated.safetensors")
    (folders["cogniedit"] / "random.safetensors").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ValueError, match="^focus weights 'random.safetensors' is not a safetensors file .*convert"):
        loader.CogniEditLoader.execute(model, "(none)", 1.0, "random.safetensors")


def test_focus_weights_of_another_run_are_refused(comfy, loader, trained, folders):
    """The pair check: LoRA and focus file must name the same base (the model itself here has a third hash)."""
    model, base_hash, _ = trained
    lora = lora_state(model, QWEN_MODULES[:1])
    save_file(lora, str(folders["loras"] / "run2.safetensors"), metadata={"base_model_hash": "f" * 16})
    _, _, report = loader.CogniEditLoader.execute(model, "run2.safetensors", 1.0).args
    assert "note: the LoRA was trained on base hash ffff" in report  # keys fit: a note, not an error
    with pytest.raises(ValueError, match="same training run"):
        loader.CogniEditLoader.execute(model, "run2.safetensors", 1.0, "cogniedit_focus.safetensors")


def test_native_key_lora_on_flux_kontext(comfy, loader, sampler, folders, caplog):
    """ComfyUI-native names on Flux's fused layers (qkv, linear1) load completely too."""
    model, vae = tiny_flux_kontext(comfy), tiny_taef1_vae(comfy)
    lora = lora_state(model, FLUX_MODULES)
    save_file(lora, str(folders["loras"] / "flux_lora.safetensors"))
    with caplog.at_level(logging.WARNING):
        patched, _, report = loader.CogniEditLoader.execute(model, "flux_lora.safetensors", 1.0).args
    assert not [r for r in caplog.records if "not loaded" in r.getMessage().lower()]
    assert f"{len(lora)} keys loaded, 0 not loaded" in report and len(patched.patches) == len(FLUX_MODULES)
    assert not torch.equal(sample(sampler, patched, vae, flux_conditioning),
                           sample(sampler, model, vae, flux_conditioning))
    # diffusers names patch a slice of the fused qkv (hidden 128): the slice's shape is what must fit
    sliced = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(RANK, 128),
              "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(128, RANK),
              "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": torch.zeros(RANK, 128),
              "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": torch.zeros(384, RANK)}
    loaded, not_loaded = loader.lora_key_status(model, sliced)
    assert len(loaded) == 2 and all("to_k" in key for key in not_loaded)
    assert "up [384, 4] does not fit the layer's weight [128, 128]" in not_loaded[next(iter(not_loaded))]


def test_lora_for_another_base_is_refused(comfy, loader, qwen, folders):
    model, _ = qwen
    flux = tiny_flux_kontext(comfy)
    save_file(lora_state(flux, FLUX_MODULES), str(folders["loras"] / "flux_lora.safetensors"))
    with pytest.raises(ValueError, match="not a LoRA for this model .QwenImage.*another base model"):
        loader.CogniEditLoader.execute(model, "flux_lora.safetensors", 1.0)


def test_partially_matching_lora_needs_strict_off(loader, qwen, folders):
    model, _ = qwen
    lora = lora_state(model, QWEN_MODULES[:2])
    lora["diffusion_model.transformer_blocks.7.attn.to_q.lora_A.weight"] = torch.zeros(RANK, 64)  # a deeper variant
    save_file(lora, str(folders["loras"] / "deeper.safetensors"))
    with pytest.raises(ValueError, match="1 of 7 keys .* different variant.*strict"):
        loader.CogniEditLoader.execute(model, "deeper.safetensors", 1.0)
    patched, _, report = loader.CogniEditLoader.execute(model, "deeper.safetensors", 1.0, strict=False).args
    assert len(patched.patches) == 2 and "1 not loaded" in report and "blocks.7" in report


def test_key_status_matches_comfy_key_map(loader, qwen):
    model, _ = qwen
    lora = lora_state(model, ["transformer_blocks.0.attn.to_q"], prefix="transformer.")  # diffusers naming
    lora["lora_unet_transformer_blocks_1_attn_to_k.lora_down.weight"] = torch.zeros(RANK, 64)  # kohya naming
    lora["lora_unet_transformer_blocks_1_attn_to_k.lora_up.weight"] = torch.zeros(64, RANK)
    lora["lora_unet_transformer_blocks_1_attn_to_v.lora_down.weight"] = torch.zeros(RANK, 64)  # its up is missing
    lora["unrelated.lora_A.weight"] = torch.zeros(RANK, 64)
    loaded, not_loaded = loader.lora_key_status(model, lora)
    assert len(loaded) == 5 and sorted(not_loaded) == ["lora_unet_transformer_blocks_1_attn_to_v.lora_down.weight",
                                                       "unrelated.lora_A.weight"]
    assert "no layer of this model" in not_loaded["unrelated.lora_A.weight"]
    assert "incomplete" in not_loaded["lora_unet_transformer_blocks_1_attn_to_v.lora_down.weight"]


def wrong_width_lora(model, modules, wrong):
    """Right key names, but the modules in ``wrong`` made for a wider variant (in features + 32)."""
    lora = lora_state(model, modules)
    for module in wrong:
        lora[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(RANK, 96)
    return lora


def test_lora_with_matching_names_but_wrong_shapes(comfy, loader, sampler, qwen, folders, caplog):
    """Names that match with the wrong shapes used to report "4 keys loaded, 0 not loaded" while ComfyUI logged a
    shape error and the output was unchanged: now the shapes are checked against the model's weights."""
    model, vae = qwen
    modules = QWEN_MODULES[:2]
    save_file(wrong_width_lora(model, modules, modules), str(folders["loras"] / "wider.safetensors"))
    for strict in (True, False):  # nothing would load: refused either way
        with pytest.raises(ValueError) as info:
            loader.CogniEditLoader.execute(model, "wider.safetensors", 1.0, strict=strict)
        message = str(info.value)
        assert "\n" not in message and "'wider.safetensors'" in message and "none of its 6 keys fit" in message
        assert "[4, 96]" in message and "[64, 64]" in message  # the LoRA's shape and the layer's
    save_file(wrong_width_lora(model, modules, modules[1:]), str(folders["loras"] / "mixed.safetensors"))
    with pytest.raises(ValueError, match="3 of 6 keys of LoRA 'mixed.safetensors' do not fit.*shape.*strict"):
        loader.CogniEditLoader.execute(model, "mixed.safetensors", 1.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        patched, _, report = loader.CogniEditLoader.execute(model, "mixed.safetensors", 1.0, strict=False).args
        changed = not torch.equal(sample(sampler, patched, vae, qwen_conditioning),
                                  sample(sampler, model, vae, qwen_conditioning))
    assert "3 keys loaded, 3 not loaded" in report and "attn.to_k" in report and "[4, 96]" in report
    assert len(patched.patches) == 1 and changed  # only the fitting module is applied, and it acts
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if "ERROR" in m or "not loaded" in m.lower()], logged  # ComfyUI saw no misfit


def test_bad_files_get_clear_errors(loader, qwen, folders):
    model, _ = qwen
    (folders["loras"] / "old.ckpt").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors only"):
        loader.CogniEditLoader.execute(model, "old.ckpt", 1.0)
    with pytest.raises(FileNotFoundError, match="not found in the 'loras' model folders"):
        loader.CogniEditLoader.execute(model, "missing.safetensors", 1.0)
    (folders["loras"] / "random.safetensors").write_bytes(bytes(range(256)) * 64)
    save_file(lora_state(model, QWEN_MODULES[:1]), str(folders["loras"] / "good.safetensors"))
    (folders["loras"] / "cut.safetensors").write_bytes((folders["loras"] / "good.safetensors").read_bytes()[:-100])
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()  # 12 bytes in 8
    (folders["loras"] / "bad_tensor.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    for name, problem in (("random.safetensors", "is not a safetensors file"), ("cut.safetensors", "is truncated"),
                          ("bad_tensor.safetensors", "is not a valid safetensors file")):
        with pytest.raises(ValueError) as info:  # not safetensors' raw "header too large" / "incomplete metadata"
            loader.CogniEditLoader.execute(model, name, 1.0)
        message = str(info.value)
        assert message.startswith(f"LoRA {name!r} {problem}") and "\n" not in message, message
        assert "download" in message and str(folders["loras"]) not in message


def test_models_folder_registration_keeps_an_existing_one(comfy, loader):
    fp = comfy.folder_paths
    paths, extensions = fp.folder_names_and_paths[loader.MODELS_FOLDER]
    assert any(p.endswith("cogniedit") for p in paths) and ".safetensors" in extensions
    fp.folder_names_and_paths["cogniedit_test_folder"] = (["/elsewhere/weights"], {".bin"})
    try:
        pack_module("nodes.common").register_models_folder("cogniedit_test_folder")
        paths, extensions = fp.folder_names_and_paths["cogniedit_test_folder"]
        assert paths[0] == "/elsewhere/weights" and len(paths) == 2 and {".bin", ".safetensors"} <= extensions
    finally:
        del fp.folder_names_and_paths["cogniedit_test_folder"]


def test_every_input_has_a_tooltip(loader):
    loader.CogniEditLoader.VALIDATE_CLASS()
    assert loader.CogniEditLoader.GET_NODE_INFO_V1()["name"] == "CogniEditLoader"  # what /object_info serves
    schema = loader.CogniEditLoader.define_schema()
    assert schema.node_id == "CogniEditLoader"
    assert all(item.tooltip for item in schema.inputs)
