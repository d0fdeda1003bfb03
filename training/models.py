"""Loading the base editor: the embedded ShapeEdit editor, a diffusers folder, or a ComfyUI-style single file.

Single files are safetensors whose keys equal diffusers' ``QwenImageTransformer2DModel`` keys, optionally behind
a host prefix (``model.diffusion_model.``, ``diffusion_model.``, ``transformer.``), as ComfyUI's split files for
Qwen-Image(-Edit) are. Edit-2511's empty ``__index_timestep_zero__`` marker turns on ``zero_cond_t`` (reference
tokens modulated at timestep 0), as it does in ComfyUI. The architecture is read from the tensor shapes; ``axes_dims_rope`` (not stored in any
weight) defaults to Qwen-Image's (16, 56, 56) when the head dim is 128 and must otherwise be given in
``model.transformer_config``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
TIMESTEP_ZERO_MARKER = "__index_timestep_zero__"  # Qwen-Image-Edit-2511: reference tokens are modulated at t = 0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The base model file or folder cannot be used; the message names the fix."""


def strip_prefixes(state: dict) -> dict:
    """Drop one known host prefix shared by all transformer keys (other keys, e.g. a bundled VAE, are dropped;
    the 2511 marker is kept, without its prefix)."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()
                    if k.startswith(prefix) or k.endswith(TIMESTEP_ZERO_MARKER)}
    return dict(state)


def infer_qwen_image_config(state: dict, overrides: dict | None = None) -> dict:
    """``QwenImageTransformer2DModel`` kwargs from a state dict's shapes (+ overrides)."""
    try:
        inner, in_channels = state["img_in.weight"].shape
        joint = state["txt_in.weight"].shape[1]
        head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
        proj_out = state["proj_out.weight"].shape[0]
    except KeyError as exc:
        raise ModelLoadError(f"not a Qwen-Image transformer state dict (no {exc.args[0]}); pass the diffusion model "
                             "file (models/diffusion_models/qwen_image_edit_*.safetensors)") from exc
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}
    patch = 2
    config = dict(patch_size=patch, in_channels=int(in_channels), out_channels=int(proj_out) // (patch * patch),
                  num_layers=len(blocks), attention_head_dim=int(head_dim),
                  num_attention_heads=int(inner) // int(head_dim), joint_attention_dim=int(joint))
    if head_dim == 128:
        config["axes_dims_rope"] = (16, 56, 56)
    if any(k.endswith(TIMESTEP_ZERO_MARKER) for k in state):
        config["zero_cond_t"] = True  # as ComfyUI's detection reads the marker (default_ref_method index_timestep_zero)
    config.update(overrides or {})
    if "axes_dims_rope" not in config:
        raise ModelLoadError(f"head dim {head_dim}: set model.transformer_config.axes_dims_rope=[a,b,c] "
                             f"(three numbers that sum to {head_dim})")
    config["axes_dims_rope"] = tuple(config["axes_dims_rope"])
    return config


def load_single_file(path, overrides: dict | None = None, dtype: torch.dtype = torch.float32):
    """A diffusers ``QwenImageTransformer2DModel`` from one safetensors file (diffusers keys, host prefix ok; fp8
    weights widened or dequantised with their scales). Read one tensor at a time into a model built in ``dtype``:
    a 20B DiT is never held twice, nor in float32 when ``dtype`` is bf16."""
    from diffusers import QwenImageTransformer2DModel

    from .comfy_files import ComfyFileError, StateFile, built_in, load_named

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} not found; set model.path to the .safetensors diffusion model")
    source = StateFile(path, "diffusion model")
    marked = any(k.endswith(TIMESTEP_ZERO_MARKER) for k in source.shapes)
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in source.shapes)), "")
    # other components bundled in the file (a VAE, a text encoder) and the 2511 marker are not the DiT's weights
    source.shapes = {k: v for k, v in source.shapes.items() if k.startswith(prefix) and not k.endswith(TIMESTEP_ZERO_MARKER)}
    shapes = {k[len(prefix):]: torch.empty(v, device="meta") for k, v in source.shapes.items()}
    config = infer_qwen_image_config(dict(shapes, **({TIMESTEP_ZERO_MARKER: None} if marked else {})), overrides)
    model = built_in(dtype, lambda: QwenImageTransformer2DModel(**config))
    try:
        return load_named(model, source, lambda k: prefix + k, dtype)
    except ComfyFileError as exc:
        raise ModelLoadError(f"{exc}: not a Qwen-Image transformer of this shape") from exc


def load_diffusers_folder(path, dtype: torch.dtype = torch.float32):
    from diffusers import QwenImageTransformer2DModel

    path = Path(path)
    sub = "transformer" if (path / "transformer").is_dir() else None
    if not (path / (sub or "") / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a diffusers folder (no config.json, nor transformer/config.json)")
    return QwenImageTransformer2DModel.from_pretrained(str(path), subfolder=sub, torch_dtype=dtype)


def load_transformer(model_config: dict):
    """The bare DiT for ``model.kind`` diffusers / single_file."""
    dtype = DTYPES[model_config.get("dtype", "float32")]
    if model_config["kind"] == "single_file":
        return load_single_file(model_config["path"], model_config.get("transformer_config"), dtype)
    if model_config["kind"] == "diffusers":
        return load_diffusers_folder(model_config["path"], dtype)
    raise ModelLoadError(f"load_transformer: model.kind {model_config['kind']!r} is not a bare DiT")
