"""Qwen-Image-Edit as a policy on real images: the DiT (with the LoRA), its VAE and its Qwen2.5-VL text encoder.

Per record, the conditioning is computed once, the way diffusers' Qwen-Image-Edit pipelines compute it for
inference (their ``encode_prompt`` with the source image, and the VAE's normalised latents of the source packed
into 2x2 tokens), kept in the DiT's dtype and cached on disk keyed by the components and the records. The text
encoder is loaded only when that cache misses and dropped after encoding, so training holds only the DiT and the VAE. Rollouts decode their final latents with the VAE for the rewards.

``model.variant``: ``edit_plus`` (Qwen-Image-Edit-2509 / 2511: diffusers' ``QwenImageEditPlusPipeline`` template,
"Picture 1: <vision tokens>" before the instruction, as ComfyUI's TextEncodeQwenImageEditPlus) or ``edit`` (the
first Qwen-Image-Edit: ``QwenImageEditPipeline``, vision tokens without a label). The weights cannot tell them
apart, so the config says which; 2511's timestep-zero reference modulation comes with its weights.

Components (``training.qwen_components``): ComfyUI's single files (``model.vae``, ``model.text_encoder``; the processor
then built in code), or a Qwen-Image-Edit diffusers folder (``vae/``, ``text_encoder/``, ``processor/``): ``model.path``
itself for ``model.kind=diffusers``, or ``model.components`` beside a single-file DiT (``model.kind=single_file``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from .models import DTYPES, ModelLoadError, load_transformer
from .qwen_components import (Components, load_processor, load_text_encoder, load_vae, resolve_components,
                              text_width)
from .rollout import CachedConditioningPolicy

log = logging.getLogger(__name__)

VARIANTS = ("edit_plus", "edit")
PARTS = ("text", "mask", "ref", "instruction_len", "grid")  # one cached row; cache file keys are "<id>/<part>"


def load_qwen_edit(model_config: dict, with_text_encoder: bool = True):
    """(transformer, vae, text_encoder or None, processor, Components), the shapes checked against each other
    (the text encoder's width from its config or file header, so it need not be loaded: the trainer loads it
    only when the conditioning cache misses)."""
    components = resolve_components(model_config)
    dtype = DTYPES[model_config.get("dtype", "float32")]
    transformer = load_transformer(model_config)
    vae = load_vae(components, dtype)
    processor = load_processor(components)
    width = text_width(components)
    if transformer.config.joint_attention_dim != width:
        raise ModelLoadError(f"the DiT expects text width {transformer.config.joint_attention_dim}, the text encoder "
                             f"{components.text_encoder} gives {width}: use the components of the same base model")
    if transformer.config.in_channels != 4 * vae.config.z_dim:
        raise ModelLoadError(f"the DiT takes {transformer.config.in_channels} channels, the VAE {components.vae} "
                             f"packs {4 * vae.config.z_dim}: use the components of the same base model")
    for module in (transformer, vae):
        module.requires_grad_(False)
    text_encoder = load_text_encoder(components, dtype) if with_text_encoder else None
    return transformer, vae, text_encoder, processor, components


class QwenEditPolicy(CachedConditioningPolicy):
    """Velocity of a Qwen-Image-Edit DiT on cached (text embeddings, mask, source latent tokens)."""

    def __init__(self, transformer, vae, text_encoder, processor, components: Components, bf16: bool = False,
                 vlm_image_size: int = 384, variant: str = "edit_plus", text_encoder_loader=None):
        import diffusers

        super().__init__(bf16)
        if variant not in VARIANTS:
            raise ModelLoadError(f"model.variant={variant!r}: use edit_plus (Qwen-Image-Edit-2509/2511) or edit")
        self._transformer, self.vae, self.variant = transformer, vae, variant
        # the pipeline object is only used for its encode_prompt (its template and hidden-state slicing)
        pipeline_class = diffusers.QwenImageEditPlusPipeline if variant == "edit_plus" else diffusers.QwenImageEditPipeline
        self.pipeline = pipeline_class(diffusers.FlowMatchEulerDiscreteScheduler(), vae, text_encoder,
                                       processor.tokenizer, processor, transformer)
        self.scale = self.pipeline.vae_scale_factor  # each record's sides are checked against it when encoded
        self.channels = 4 * vae.config.z_dim
        self.components = components
        self.vlm_image_size = int(vlm_image_size)  # the authors' and ComfyUI's 384x384-area VLM condition image
        self.text_encoder_loader = text_encoder_loader  # () -> text encoder, when it is not given (loaded lazily)

    @property
    def transformer(self):
        return self._transformer

    # ---------------------------------------------------------------------------- conditioning
    def cache_key(self, records) -> str:
        identity = {"parts": PARTS, "components": self.components.identity(),
                    "vlm_image_size": self.vlm_image_size, "variant": self.variant,
                    "records": [[r.case_id, r.instruction, list(r.source_image.shape),
                                 hashlib.sha256(r.source_image.tobytes()).hexdigest()] for r in records]}
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def _latent_stats(self, device, dtype):
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(device, dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(device, dtype)
        return mean, std

    @torch.no_grad()
    def image_to_tokens(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> normalised VAE latent packed into 2x2 tokens [1, (H/16)*(W/16), 4*z] (scale 8)."""
        device, dtype = self.vae.device, self.vae.dtype
        pixels = torch.tensor(np.asarray(image, np.uint8)).to(device, dtype).permute(2, 0, 1)[None, :, None]
        latent = self.vae.encode(pixels / 127.5 - 1.0).latent_dist.mode()  # the pipeline's "argmax" sample
        mean, std = self._latent_stats(device, dtype)
        return rearrange((latent - mean) / std, "b c 1 (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)

    @torch.no_grad()
    def encode_record(self, record) -> tuple[torch.Tensor, ...]:
        """(text [L, D], mask [L], source tokens [T, C], instruction token count [], token grid [2] = (rows, cols))
        of one record."""
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_dimensions
        from PIL import Image

        h, w = record.source_image.shape[:2]
        if h % (2 * self.scale) or w % (2 * self.scale):
            raise ModelLoadError(f"record {record.case_id!r} is {w}x{h}; sides must be multiples of {2 * self.scale}")
        # the text encoder sees the source at about vlm_image_size**2 pixels, its aspect kept (as the pipeline does)
        vlm_w, vlm_h = calculate_dimensions(self.vlm_image_size ** 2, w / h)
        vlm_image = Image.fromarray(record.source_image).resize((vlm_w, vlm_h), Image.BICUBIC)
        images = [vlm_image] if self.variant == "edit_plus" else vlm_image  # Plus: one "Picture n:" per list item
        embeds, mask = self.pipeline.encode_prompt(record.instruction, image=images, device=self.vae.device)
        if mask is None:  # the pipeline drops an all-ones mask
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        # after <|vision_end|> and before <|im_end|> (special tokens) the instruction tokenizes as it does alone
        n_instruction = len(self.pipeline.tokenizer(record.instruction, add_special_tokens=False)["input_ids"])
        grid = torch.tensor([h // (2 * self.scale), w // (2 * self.scale)])
        dtype = self.transformer.dtype  # bf16 runs keep half the cache in memory and on disk
        return (embeds[0].to("cpu", dtype), mask[0].cpu(), self.image_to_tokens(record.source_image)[0].to("cpu", dtype),
                torch.tensor(n_instruction), grid)

    def precompute(self, records, cache_dir: Path | None) -> None:
        """Encode every record once (or read the cache file), then drop the text encoder."""
        from safetensors.torch import load_file, save_file

        from cogniedit.atomic_io import atomic_save

        path = cache_dir / f"conditioning-{self.cache_key(records)}.safetensors" if cache_dir else None
        if path is not None and path.is_file():
            tensors = load_file(str(path))
            for r in records:
                self._cache[r.case_id] = tuple(tensors[f"{r.case_id}/{part}"] for part in PARTS)
            log.info("conditioning of %d records read from %s", len(records), path)
        else:
            self._ensure_text_encoder()
            for r in records:
                self._cache[r.case_id] = self.encode_record(r)
            if path is not None:
                tensors = {f"{cid}/{part}": t.contiguous() for cid, row in self._cache.items()
                           for part, t in zip(PARTS, row)}
                atomic_save(path, lambda tmp: save_file(tensors, str(tmp)))
                log.info("conditioning of %d records cached in %s", len(records), path)
        self.pipeline.text_encoder = None  # not needed again: the conditioning is cached

    def _ensure_text_encoder(self) -> None:
        if self.pipeline.text_encoder is None:
            if self.text_encoder_loader is None:
                raise RuntimeError("the conditioning is not cached and no text encoder was given")
            self.pipeline.text_encoder = self.text_encoder_loader()

    def encode_cases(self, cases):
        missing = [c for c in cases if c.case_id not in self._cache]
        for case in missing:  # records added after precompute (sample grids of other records, tests)
            if self.pipeline.text_encoder is None:
                raise RuntimeError(f"record {case.case_id!r} was not precomputed and the text encoder is gone")
            self._cache[case.case_id] = self.encode_record(case)
        rows = [self._cache[c.case_id] for c in cases]
        grids = {tuple(int(v) for v in row[4]) for row in rows}
        if len(grids) != 1:
            raise ValueError(f"one batch needs one image size; got token grids {sorted(grids)} (draw from one bucket)")
        cond = self.collate([row[:4] for row in rows])
        cond.grid = grids.pop()
        return cond

    # ---------------------------------------------------------------------------- model calls
    def velocity(self, x, sigma, cond):
        n = x.shape[0]
        timestep = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(n)
        shapes = [[(1, *cond.grid), (1, *cond.grid)]] * n
        out = self.transformer(hidden_states=torch.cat([x, cond.ref.to(x.dtype)], 1), timestep=timestep,
                               encoder_hidden_states=cond.text.to(x.dtype), encoder_hidden_states_mask=cond.mask,
                               img_shapes=shapes, return_dict=False)[0]
        return out[:, :x.shape[1]]

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    def token_grid(self, cond) -> tuple[int, int]:
        return tuple(cond.grid)

    def latent_shape(self, n: int, cond=None) -> tuple:
        """Noisy latent tokens of ``n`` samples of ``cond``'s image size (its reference tokens' count)."""
        return (n, cond.ref.shape[1], self.channels)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, cond=None) -> np.ndarray:
        tokens = latents.detach().to(self.vae.device, self.vae.dtype)
        latent = rearrange(tokens, "b (h w) (c ph pw) -> b c 1 (h ph) (w pw)", h=cond.grid[0], ph=2, pw=2)
        mean, std = self._latent_stats(latent.device, latent.dtype)
        latent = latent * std + mean  # one image at a time: a 1024-px decode takes GBs of activations per image
        pixels = torch.cat([self.vae.decode(z[None], return_dict=False)[0][:, :, 0] for z in latent])
        pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()
