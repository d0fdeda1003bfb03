"""ComfyUI's single-file components read into the diffusers / transformers classes the trainer uses.

* ``vae/qwen_image_vae.safetensors``: ComfyUI's Wan 2.1 layout (``encoder.downsamples.N.residual.2.weight``,
  ``decoder.upsamples.N...``, ``conv1`` / ``conv2``) -> diffusers' ``AutoencoderKLQwenImage``; the architecture is
  read from the shapes (base width, channel multipliers, residual blocks per level, temporal down-sampling).
* ``text_encoders/qwen_2.5_vl_7b(_fp8_scaled).safetensors``: ``model.layers.N...`` (the language model) and
  ``visual...`` (the vision tower) -> transformers' ``Qwen2_5_VLForConditionalGeneration`` (``model.language_model``,
  ``model.visual``). Widths and depths come from the shapes; the head sizes, which no weight shows, are
  Qwen2.5-VL-7B's (text 128, vision 80), as ComfyUI's own class fixes them.
* fp8 weights: a plain ``float8_e4m3fn`` cast (``qwen_image_edit_2509_fp8_e4m3fn.safetensors``) is widened; a
  "scaled" file is dequantised with its per-tensor scales, ``weight = fp8 * scale``, in either of ComfyUI's
  layouts: the older ``scaled_fp8`` marker with ``<layer>.scale_weight`` (and ``scale_input``), or the newer
  ``<layer>.weight_scale`` with a ``<layer>.comfy_quant`` format tag.

The name maps go from the diffusers / transformers parameter names to ComfyUI's (``comfy_vae_name``,
``comfy_text_encoder_name``); loading inverts them over the model's own keys, so a key the model does not have,
or one it lacks, is an error naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .models import ModelLoadError

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")  # old scaled_fp8 layout, newer comfy_quant layout
DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")  # activation scales: bf16 compute needs none
SCALED_FP8_MARKER = "scaled_fp8"
TEXT_HEAD_DIM = 128  # Qwen2.5-VL-7B (ComfyUI's Qwen25_7BVLI_Config.head_dim)
VISION_HEAD_DIM = 80  # Qwen2.5-VL's vision tower: 1280 wide, 16 heads
VISION_FULL_ATTENTION = (7, 15, 23, 31)  # its full-attention blocks (the others attend in 112-px windows)
VAE_MARKER = "decoder.middle.0.residual.0.gamma"  # what ComfyUI's VAE loader looks for (Wan 2.1 / Qwen-Image)
TEXT_MARKER = "model.layers.0.self_attn.k_proj.weight"  # and its text-encoder detection


class ComfyFileError(ModelLoadError):
    """A ComfyUI component file cannot be read; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------------ fp8
def _quant_format(tag, layer: str, path) -> str:
    if tag is None:
        return "float8_e4m3fn"
    fmt = json.loads(bytes(tag.to(torch.uint8).tolist()).decode()).get("format")
    if fmt not in FP8_FORMATS:
        raise ComfyFileError(f"{path}: layer {layer} is quantised as {fmt!r}; only per-tensor fp8 "
                             f"({', '.join(FP8_FORMATS)}) files are read: use the bf16 or fp8_scaled file")
    return fmt


def is_stored_weight(key: str) -> bool:
    """False for ComfyUI's quantisation side entries (scales, format tags, the scaled_fp8 marker)."""
    return key != SCALED_FP8_MARKER and not key.endswith(SCALE_SUFFIXES + DROPPED_SUFFIXES)


def dequantized(key: str, tensor: torch.Tensor, get, dtype: torch.dtype, path) -> torch.Tensor:
    """One stored tensor as ``dtype``: an fp8 weight times its per-tensor scale (``get(name)`` -> the file's tensor
    or None), anything else cast."""
    if tensor.dtype in (torch.int8, torch.uint8) and key.endswith(".weight"):
        raise ComfyFileError(f"{path}: {key} is stored as {tensor.dtype} (an integer quantisation); only "
                             "bf16/fp16/fp32 and per-tensor fp8 files are read")
    if not tensor.is_floating_point():
        return tensor
    value = tensor.float()
    if tensor.dtype in FP8_DTYPES and key.endswith(".weight"):
        layer = key[: -len(".weight")]
        _quant_format(get(f"{layer}.comfy_quant"), layer, path)
        scale = next((s for s in (get(layer + suffix) for suffix in SCALE_SUFFIXES) if s is not None), None)
        if scale is not None:
            if scale.numel() != 1:
                raise ComfyFileError(f"{path}: {layer} has a block-wise scale {tuple(scale.shape)}; only "
                                     "per-tensor fp8 scales are read")
            value = value * scale.float().reshape(())
    return value.to(dtype)


def dequantize(state: dict, dtype: torch.dtype, path="state dict") -> dict:
    """ComfyUI's stored weights -> plain ``dtype`` tensors (side entries dropped), see ``dequantized``."""
    return {k: dequantized(k, v, state.get, dtype, path) for k, v in state.items() if is_stored_weight(k)}


class StateFile:
    """A safetensors file read lazily: shapes for the architecture, then one dequantised tensor at a time (a 7B
    text encoder is never held twice)."""

    def __init__(self, path, what: str):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise ComfyFileError(f"{what} file {self.path} not found; point the config at the .safetensors file")
        try:
            self._file = safe_open(str(self.path), framework="pt")
            self._keys = set(self._file.keys())
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line naming it
            raise ComfyFileError(f"{self.path}: not a readable safetensors file ({exc}); download it again") from exc
        self.shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in self._keys if is_stored_weight(k)}

    def _get(self, key):
        return self._file.get_tensor(key) if key in self._keys else None

    def items(self, dtype: torch.dtype):
        for key in sorted(self.shapes):
            yield key, dequantized(key, self._file.get_tensor(key), self._get, dtype, self.path)


def load_named(model: torch.nn.Module, source: StateFile, comfy_name, dtype, optional=()) -> torch.nn.Module:
    """Copy the file's tensors (ComfyUI names) into ``model`` through ``comfy_name`` (model name -> ComfyUI's)."""
    targets = model.state_dict()
    names = {comfy_name(k): k for k in targets}
    unexpected = sorted(set(source.shapes) - set(names))
    missing = sorted(k for k in set(names) - set(source.shapes) if names[k] not in optional)
    wrong = [k for k in source.shapes if k in names and tuple(targets[names[k]].shape) != source.shapes[k]]
    if unexpected or missing or wrong:
        example = (missing or unexpected or wrong)[0]
        raise ComfyFileError(f"{source.path}: {len(missing)} missing, {len(unexpected)} unexpected and {len(wrong)} "
                             f"mis-shaped keys (e.g. {example}); it is not the ComfyUI file of this component")
    with torch.no_grad():
        for key, value in source.items(dtype):
            targets[names[key]].copy_(value)
    return model


def built_in(dtype: torch.dtype, build):
    """``build()`` with its parameters created directly in ``dtype`` and not initialised (every one is loaded
    next): a 7B or 20B model is not allocated twice. Buffers computed from explicit float32 (rotary tables) stay."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with no_init_weights():
            return build()
    finally:
        torch.set_default_dtype(previous)


# ------------------------------------------------------------------------------------------------ VAE
_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}
_HEAD = {"norm_out": "head.0", "conv_out": "head.2", "conv_in": "conv1"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}


def _residual(rest: str) -> str:
    first, _, tail = rest.partition(".")
    return f"{_RESIDUAL.get(first, first)}.{tail}"


def comfy_vae_name(name: str, num_res_blocks: int) -> str:
    """diffusers ``AutoencoderKLQwenImage`` parameter name -> ComfyUI's Wan 2.1 VAE name."""
    part, _, rest = name.partition(".")
    if part in _TOP:
        return f"{_TOP[part]}.{rest}"
    first, _, tail = rest.partition(".")
    if first in _HEAD:
        return f"{part}.{_HEAD[first]}.{tail}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", rest):
        index = {"resnets": [0, 2], "attentions": [1]}[m.group(1)][int(m.group(2))]
        inner = _residual(m.group(3)) if m.group(1) == "resnets" else m.group(3)
        return f"{part}.middle.{index}.{inner}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):  # one flat list, as ComfyUI's
        return f"{part}.downsamples.{m.group(1)}.{_residual(m.group(2))}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", rest):
        # ComfyUI's decoder is flat too: per level num_res_blocks + 1 residual blocks, then the upsampler
        level, kind, index, inner = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        flat = level * (num_res_blocks + 2) + (index if kind == "resnets" else num_res_blocks + 1)
        return f"{part}.upsamples.{flat}.{_residual(inner) if kind == 'resnets' else inner}"
    raise ComfyFileError(f"no ComfyUI name for VAE parameter {name}")


def vae_config(shapes: dict, path="state dict") -> dict:
    """``AutoencoderKLQwenImage`` kwargs from a ComfyUI-layout VAE's tensor shapes (name -> shape)."""
    if VAE_MARKER not in shapes or "decoder.upsamples.0.upsamples.0.residual.2.weight" in shapes:
        raise ComfyFileError(f"{path} is not a Qwen-Image (Wan 2.1 layout) VAE: use "
                             "models/vae/qwen_image_vae.safetensors")
    blocks = {}
    for key in shapes:
        if m := re.match(r"encoder\.downsamples\.(\d+)\.(\w+)", key):
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
    if any("to_qkv" in k and "downsamples" in k for k in shapes):
        raise ComfyFileError(f"{path}: attention inside the down blocks is not Qwen-Image's VAE")
    base = shapes["encoder.conv1.weight"][0]
    mults, temporal, res_blocks, current = [], [], [], 0
    for index in sorted(blocks):
        if "resample" in blocks[index]:
            temporal.append("time_conv" in blocks[index])
            res_blocks.append(current)
            current = 0
        else:
            if current == 0:
                mults.append(shapes[f"encoder.downsamples.{index}.residual.2.weight"][0] // base)
            current += 1
    res_blocks.append(current)
    if len(set(res_blocks)) != 1:
        raise ComfyFileError(f"{path}: levels with {res_blocks} residual blocks; not a Qwen-Image VAE")
    channels = shapes["encoder.conv1.weight"][1]
    if shapes["decoder.head.2.weight"][0] != channels:
        raise ComfyFileError(f"{path}: the decoder writes {shapes['decoder.head.2.weight'][0]} channels for "
                             f"{channels} input channels; not a Qwen-Image VAE")
    return dict(base_dim=int(base), z_dim=int(shapes["conv2.weight"][0]), dim_mult=[int(m) for m in mults],
                num_res_blocks=int(res_blocks[0]), temperal_downsample=temporal, input_channels=int(channels))


def load_comfy_vae(path, dtype: torch.dtype = torch.float32):
    """diffusers ``AutoencoderKLQwenImage`` (eval, frozen) from ComfyUI's VAE file."""
    from diffusers import AutoencoderKLQwenImage

    source = StateFile(path, "VAE")
    config = vae_config(source.shapes, path)
    vae = AutoencoderKLQwenImage(**config)
    vae = vae if dtype == torch.float32 else vae.to(dtype)
    load_named(vae, source, lambda k: comfy_vae_name(k, config["num_res_blocks"]), dtype)
    return vae.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ text encoder
def comfy_text_encoder_name(name: str) -> str:
    """transformers ``Qwen2_5_VLForConditionalGeneration`` parameter name -> ComfyUI's ``Qwen25_7BVLI`` name."""
    for ours, theirs in (("model.language_model.", "model."), ("model.visual.", "visual.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name  # lm_head.weight


def _count(shapes: dict, pattern: str) -> int:
    return len({m.group(1) for k in shapes if (m := re.match(pattern, k))})


def text_encoder_config(shapes: dict, path="state dict"):
    """``Qwen2_5_VLConfig`` from a ComfyUI-layout Qwen2.5-VL's tensor shapes (head sizes: the 7B's)."""
    import transformers

    if TEXT_MARKER not in shapes or "visual.patch_embed.proj.weight" not in shapes:
        raise ComfyFileError(f"{path} is not a ComfyUI Qwen2.5-VL text encoder (no {TEXT_MARKER} / visual tower): "
                             "use models/text_encoders/qwen_2.5_vl_7b(_fp8_scaled).safetensors")
    vocab, hidden = shapes["model.embed_tokens.weight"]
    patch = shapes["visual.patch_embed.proj.weight"]
    vision_hidden = patch[0]
    merge_in = shapes["visual.merger.mlp.0.weight"][1]
    depth = _count(shapes, r"visual\.blocks\.(\d+)\.")
    for width, head, what in ((hidden, TEXT_HEAD_DIM, "text"), (vision_hidden, VISION_HEAD_DIM, "vision")):
        if width % head:
            raise ComfyFileError(f"{path}: {what} width {width} is not a multiple of Qwen2.5-VL's head size {head}")
    text = dict(vocab_size=int(vocab), hidden_size=int(hidden),
                intermediate_size=int(shapes["model.layers.0.mlp.gate_proj.weight"][0]),
                num_hidden_layers=_count(shapes, r"model\.layers\.(\d+)\."),
                num_attention_heads=int(hidden) // TEXT_HEAD_DIM,
                num_key_value_heads=int(shapes[TEXT_MARKER][0]) // TEXT_HEAD_DIM,
                rms_norm_eps=1e-6, max_position_embeddings=128000,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24], "rope_theta": 1e6})
    vision = dict(depth=depth, hidden_size=int(vision_hidden), num_heads=int(vision_hidden) // VISION_HEAD_DIM,
                  intermediate_size=int(shapes["visual.blocks.0.mlp.gate_proj.weight"][0]),
                  out_hidden_size=int(shapes["visual.merger.mlp.2.weight"][0]), in_channels=int(patch[1]),
                  patch_size=int(patch[-1]), temporal_patch_size=int(patch[2]),
                  spatial_merge_size=round((merge_in / vision_hidden) ** 0.5), window_size=112,
                  fullatt_block_indexes=[i for i in VISION_FULL_ATTENTION if i < depth])
    return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                         tie_word_embeddings="lm_head.weight" not in shapes)


def load_comfy_text_encoder(path, dtype: torch.dtype = torch.float32):
    """transformers ``Qwen2_5_VLForConditionalGeneration`` (eval, frozen) from ComfyUI's text-encoder file, fp8
    "scaled" files dequantised. Without ``lm_head`` in the file (ComfyUI's class has none) the head is tied to the
    embeddings: the trainer reads hidden states only."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    source = StateFile(path, "text encoder")
    config = text_encoder_config(source.shapes, path)
    model = built_in(dtype, lambda: Qwen2_5_VLForConditionalGeneration(config))
    load_named(model, source, comfy_text_encoder_name, dtype, optional=("lm_head.weight",))
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval().requires_grad_(False)


def qwen25_vl_processor():
    """Qwen2.5-VL's processor built in code: the pack's offline Qwen2.5 tokenizer and the model's image processor
    settings (14-px patches, 2x2 merge, 2 frames, 3136..12845056 pixels, the OpenAI CLIP mean / std)."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from cogniedit.decompose.backends.transformers_vlm import image_only_processor
    from cogniedit.text.tokenizer import load_qwen25_tokenizer

    image_processor = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                               min_pixels=56 * 56, max_pixels=28 * 28 * 16384,
                                               image_mean=[0.48145466, 0.4578275, 0.40821073],
                                               image_std=[0.26862954, 0.26130258, 0.27577711])
    return image_only_processor(transformers.Qwen2_5_VLProcessor, image_processor, load_qwen25_tokenizer())
