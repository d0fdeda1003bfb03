"""The shipped ShapeEdit editor as ComfyUI objects: a MODEL built on ComfyUI's own Qwen-Image DiT class, a CLIP of
its small text encoder, and a VAE-like codec of its exact pixel-patch latent (docs/shapeedit-editor.md).

* MODEL: ``ShapeEditDiT`` is ComfyUI's ``QwenImageTransformer2DModel`` (the editor's diffusers weights load under
  their own key names) at the editor's shapes (192 token channels, text width 64), inside a ``BaseModel`` of
  type FLOW with shift 1 and multiplier 1, so ComfyUI's sampler machinery (KSampler, SamplerCustomAdvanced, the
  CogniEdit Sampler, Token Focus patches) runs it. The editor predicts the clean latent minus the source's
  (``x0_residual``); the DiT returns the flow velocity ``(x - x0) / sigma`` that a FLOW model's output means.
* LATENT: ``[B, 48, 12, 12]`` holding the editor's packed tokens in their own order (``tokens_as_comfy_latent``),
  so ComfyUI's seeded noise equals the command-line editor's: the same seed gives the same edit. The DiT unpacks
  it to the spatial latent ComfyUI's Qwen-Image code expects, and back.
* CLIP: ``comfy.sd.CLIP`` around the editor's tokenizer (the real Qwen2.5 ids in Qwen-Image's template) and text
  encoder, so CLIPTextEncode (and the CogniEdit Sampler's re-encoding) produce the editor's conditioning.
* VAE: ``ShapeEditLatentCodec`` encodes a 48x48 IMAGE exactly as ``cogniedit.shapes.editor.latent`` does.
"""

from __future__ import annotations

import math

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base
import torch
from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

from ..cogniedit.shapes.editor import text as editor_text
from ..cogniedit.shapes.editor.latent import (IMAGE_SIZE, LATENT_CHANNELS, UNSHUFFLE, comfy_latent_as_tokens,
                                              images_to_tokens, pack_latent, tokens_as_comfy_latent,
                                              tokens_to_images, unpack_latent)
from ..cogniedit.shapes.editor.model import encode_instruction_ids
from ..cogniedit.shapes.editor.weights import EditorWeightsError

TOKENS_KEY = "shapeedit"  # the tokenizer's output key (one sequence of (id, weight) pairs)


class ShapeEditLatentFormat(comfy.latent_formats.LatentFormat):
    latent_channels = LATENT_CHANNELS
    spacial_downscale_ratio = UNSHUFFLE  # scale 1, no shift: the latent is the pixels in [-1, 1]


class ShapeEditDiT(QwenImageTransformer2DModel):
    """ComfyUI's Qwen-Image DiT on the editor's LATENT, returning the flow velocity (see the module docstring)."""

    def __init__(self, prediction: str = "x0_residual", min_sigma: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.prediction, self.min_sigma = prediction, float(min_sigma)

    def forward(self, x, timestep, context, attention_mask=None, ref_latents=None, additional_t_cond=None,
                transformer_options={}, **kwargs):
        if not ref_latents or len(ref_latents) != 1:
            raise ValueError(f"the ShapeEdit editor edits one source image, given as one reference latent; got "
                             f"{len(ref_latents or [])}: use the CogniEdit Sampler (it adds it), or ReferenceLatent "
                             "with the VAE Encode of the scene before KSampler")
        tokens, ref = comfy_latent_as_tokens(x), comfy_latent_as_tokens(ref_latents[0]).to(x)
        spatial = [unpack_latent(t).unsqueeze(2) for t in (tokens, ref)]  # [B, 48, 1, 12, 12], as ComfyUI packs
        out = super().forward(spatial[0], timestep, context, attention_mask, [spatial[1]], additional_t_cond,
                              transformer_options, **kwargs)
        x0 = pack_latent(out.squeeze(2))
        if self.prediction == "x0_residual":
            x0 = ref + x0
        sigma = timestep.to(x.dtype).reshape(-1, 1, 1).clamp(min=self.min_sigma)  # multiplier 1: timestep = sigma
        return tokens_as_comfy_latent((tokens - x0) / sigma)


class ShapeEditModel(comfy.model_base.BaseModel):
    """A FLOW model around ShapeEditDiT; conditioning as ComfyUI's Qwen-Image (text, mask, reference latents)."""

    def __init__(self, model_config, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device, unet_model=ShapeEditDiT)
        self.memory_usage_factor_conds = ("ref_latents",)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        if kwargs.get("attention_mask") is not None:
            out["attention_mask"] = comfy.conds.CONDRegular(kwargs["attention_mask"])
        if kwargs.get("cross_attn") is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(kwargs["cross_attn"])
        references = kwargs.get("reference_latents")
        if references is not None:
            out["ref_latents"] = comfy.conds.CONDList([self.process_latent_in(ref) for ref in references])
        return out

    def extra_conds_shapes(self, **kwargs):
        references = kwargs.get("reference_latents")
        if references is None:
            return {}
        return {"ref_latents": [1, LATENT_CHANNELS, sum(math.prod(r.size()) for r in references) // LATENT_CHANNELS]}


class ShapeEditModelConfig(comfy.supported_models_base.BASE):
    """Not registered with ComfyUI's model detection: only the CogniEdit ShapeEdit Loader builds it."""

    unet_config = {"image_model": "cogniedit_shapeedit"}
    unet_extra_config = {}  # BASE's default adds UNet keys (num_heads) the DiT does not take
    sampling_settings = {"shift": 1.0, "multiplier": 1.0}  # sigma = t, as the editor was trained
    latent_format = ShapeEditLatentFormat
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    def get_model(self, state_dict, prefix="", device=None):
        return ShapeEditModel(self, device=device)


def comfy_model(editor) -> comfy.model_patcher.ModelPatcher:
    """The editor's DiT as a ComfyUI MODEL (its weights copied; the editor stays usable on its own)."""
    config = editor.config
    unet_config = {**ShapeEditModelConfig.unet_config, **config.transformer_kwargs(),
                   "prediction": config.prediction, "min_sigma": config.min_sigma}
    model_config = ShapeEditModelConfig(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    base = model_config.get_model({})
    state = {key: value.detach().clone() for key, value in editor.transformer.state_dict().items()}
    missing, unexpected = base.diffusion_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EditorWeightsError(f"the editor's transformer does not fit ComfyUI's Qwen-Image DiT (missing "
                                 f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); retrain it with "
                                 "python -m cogniedit.shapes.editor.train")
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


# ---------------------------------------------------------------- CLIP

class ShapeEditTokenizer:
    """ComfyUI tokenizer interface over the editor's tokenizer (real Qwen2.5 ids, Qwen-Image's chat template)."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        pass

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        ids, _ = editor_text.tokenize([text])
        return {TOKENS_KEY: [[(int(i), 1.0) for i in ids[0]]]}

    def untokenize(self, token_weight_pair):
        return [(pair, editor_text.tokenizer().decode([pair[0]])) for pair in token_weight_pair]

    def state_dict(self):
        return {}


class ShapeEditTextModel(torch.nn.Module):
    """ComfyUI text-encoder interface over the editor's Qwen2 text encoder and id remap (weights shared)."""

    def __init__(self, editor=None, device=None, dtype=None, model_options={}):
        super().__init__()
        self.vocab, self.text_encoder, self.prefix_len = editor.vocab, editor.text_encoder, editor.prefix_len
        self.dtypes = {torch.float32}
        self.disable_offload = True  # 0.1 M parameters: a plain ModelPatcher, no dynamic offloading
        self.execution_device = None

    def reset_clip_options(self):
        self.execution_device = None

    def set_clip_options(self, options):
        self.execution_device = options.get("execution_device", self.execution_device)

    def encode_token_weights(self, tokens):
        device = self.vocab.real_ids.device
        ids = torch.tensor([[token for token, _ in tokens[TOKENS_KEY][0]]], dtype=torch.long, device=device)
        with torch.no_grad():
            hidden, _ = encode_instruction_ids(self.vocab, self.text_encoder, self.prefix_len, ids, torch.ones_like(ids))
        return hidden.float(), None, {}  # one prompt, no padding: the mask is all ones, so none is passed

    def load_sd(self, sd):
        return self.load_state_dict(sd, strict=False)


def comfy_clip(editor) -> comfy.sd.CLIP:
    target = comfy.supported_models_base.ClipTarget(ShapeEditTokenizer, ShapeEditTextModel)
    target.params = {"editor": editor}
    return comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32})


# ---------------------------------------------------------------- VAE-like codec

class ShapeEditLatentCodec:
    """What VAE Encode / VAE Decode need: IMAGE [B, 48, 48, 3] (0..1) <-> the editor's LATENT, exactly (the image
    is rounded to 8 bits first, as the editor reads uint8 renders)."""

    latent_channels, latent_dim, output_channels = LATENT_CHANNELS, 2, 3
    downscale_ratio = upscale_ratio = UNSHUFFLE

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or tuple(pixels.shape[1:3]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"the ShapeEdit editor's VAE encodes {IMAGE_SIZE}x{IMAGE_SIZE} images, got IMAGE "
                             f"{list(pixels.shape)}; connect a CogniEdit ShapeEdit Scene (or scale the image to "
                             f"{IMAGE_SIZE}x{IMAGE_SIZE} px first)")
        images = (pixels[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return tokens_as_comfy_latent(images_to_tokens(images))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        images = tokens_to_images(comfy_latent_as_tokens(latent.float().cpu()))
        return torch.from_numpy(images).float() / 255.0

    def spacial_compression_encode(self) -> int:
        return UNSHUFFLE

    def spacial_compression_decode(self) -> int:
        return UNSHUFFLE

    def temporal_compression_decode(self):
        return None
