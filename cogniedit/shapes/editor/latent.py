"""The editor's latent scheme: a fixed, exact pixel "patch" latent instead of a learned VAE.

A 48x48 RGB image becomes a ``[B, 48, 12, 12]`` latent by pixel-unshuffle (factor 4) of the image scaled to
[-1, 1]; the transformer then packs 2x2 latent pixels per token exactly as diffusers' Qwen-Image pipelines do
(``_pack_latents``), so one token is one 8x8 pixel patch (192 values) and a 48x48 image is 6x6 = 36 tokens.
Decoding is the exact inverse (up to rounding to uint8), so the editor never loses detail to a VAE and needs
no VAE training time. Why: ShapeEdit images are flat-coloured shapes; an exact linear latent is cheap, lossless
and keeps the scorer measuring the editor alone (see docs/shapeedit-editor.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 48
UNSHUFFLE = 4  # pixels per latent pixel side
LATENT_CHANNELS = 3 * UNSHUFFLE * UNSHUFFLE  # 48
PACK = 2  # Qwen-Image's 2x2 latent patch
TOKEN_CHANNELS = LATENT_CHANNELS * PACK * PACK  # 192
GRID = IMAGE_SIZE // (UNSHUFFLE * PACK)  # 6 tokens per side


def check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"the ShapeEdit editor takes uint8 images [B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], got {images.dtype} "
            f"{tuple(images.shape)}; render scenes with cogniedit.shapes.render.render_scene"
        )
    return images


def image_to_latent(images) -> torch.Tensor:
    """uint8 ``[B, 48, 48, 3]`` (or one ``[48, 48, 3]``) -> float32 latent ``[B, 48, 12, 12]`` in [-1, 1]."""
    images = check_images(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return F.pixel_unshuffle(x, UNSHUFFLE)


def latent_to_image(latent: torch.Tensor) -> np.ndarray:
    """Exact inverse of ``image_to_latent`` (clamped, rounded): latent ``[B, 48, 12, 12]`` -> uint8 images."""
    x = F.pixel_shuffle(latent.detach().float().cpu(), UNSHUFFLE)
    x = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def pack_latent(latent: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> tokens ``[B, H/2 * W/2, C*4]`` in diffusers' QwenImage ``_pack_latents`` order."""
    b, c, h, w = latent.shape
    x = latent.view(b, c, h // PACK, PACK, w // PACK, PACK).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // PACK) * (w // PACK), c * PACK * PACK)


def unpack_latent(tokens: torch.Tensor, height: int = IMAGE_SIZE // UNSHUFFLE, width: int = IMAGE_SIZE // UNSHUFFLE):
    """Inverse of ``pack_latent``."""
    b, _, d = tokens.shape
    c = d // (PACK * PACK)
    x = tokens.view(b, height // PACK, width // PACK, c, PACK, PACK).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def images_to_tokens(images) -> torch.Tensor:
    return pack_latent(image_to_latent(images))


def tokens_to_images(tokens: torch.Tensor) -> np.ndarray:
    return latent_to_image(unpack_latent(tokens))


# ComfyUI's LATENT for this editor (nodes/shapeedit_model.py): the packed tokens' own memory order, reshaped to
# ``[B, 48, 12, 12]`` without reordering. Why: ComfyUI draws the seeded starting noise as one randn of the LATENT's
# shape and the command-line editor as one randn of the tokens' shape; with the same order the two are the same
# numbers, so a seed gives the same edit in both. (It is not a spatial image: the MODEL unpacks it first.)
def tokens_as_comfy_latent(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``[B, 36, 192]`` -> ComfyUI LATENT ``[B, 48, 12, 12]`` (a reshape: same values, same order)."""
    b = tokens.shape[0]
    return tokens.reshape(b, LATENT_CHANNELS, IMAGE_SIZE // UNSHUFFLE, IMAGE_SIZE // UNSHUFFLE)


def comfy_latent_as_tokens(latent: torch.Tensor) -> torch.Tensor:
    """Inverse of ``tokens_as_comfy_latent``; a clear error for a LATENT of another shape."""
    expected = (LATENT_CHANNELS, IMAGE_SIZE // UNSHUFFLE, IMAGE_SIZE // UNSHUFFLE)
    if latent.ndim != 4 or tuple(latent.shape[1:]) != expected:
        raise ValueError(f"the ShapeEdit editor's LATENT is [B, {', '.join(map(str, expected))}] (a 48x48 scene), "
                         f"got {list(latent.shape)}; encode a 48x48 CogniEdit ShapeEdit Scene with the editor's VAE")
    return latent.reshape(latent.shape[0], GRID * GRID, TOKEN_CHANNELS)
