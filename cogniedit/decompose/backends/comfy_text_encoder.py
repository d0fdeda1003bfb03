"""Generation through a host-provided callable, e.g. the Qwen3 text encoder of FLUX.2 klein that ComfyUI has loaded.

The core cannot import ComfyUI, so the adapter node passes a function that runs the host's own
generation (`clip.tokenize(...)`, `clip.generate(...)`, `clip.decode(...)`) and returns text. The
function receives a `GenerationRequest` with both the chat messages and the same conversation
rendered as Qwen chat text, so it can use whichever the host's tokenizer wants. A text-only encoder
(`sees_images=False`) gets the conversation without the image: no vision markers, no pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..prompt import message_text, render_qwen_chat, with_image_url
from ..settings import DecomposeSettings
from .base import BackendError


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict]
    prompt: str                   # Qwen chat text ending with "<|im_start|>assistant\n"
    system: str                   # the system prompt alone
    user: str                     # the user turn's text alone (no image markers)
    image: np.ndarray | None      # uint8 [H, W, 3], already shrunk to settings.image_max_pixels
    settings: DecomposeSettings


TextGenerateFn = Callable[[GenerationRequest], str]


class ComfyTextEncoderBackend:
    """`generate_fn(request) -> str`; `model_id` names the loaded model for the cache (e.g. its file name);
    `sees_images=False` for a text-only model (the image and its markers are left out of the request)."""

    name = "comfy_text_encoder"
    uses_model = True

    def __init__(self, generate_fn: TextGenerateFn, model_id: str = "unknown", sees_images: bool = True):
        if not callable(generate_fn):
            raise TypeError("generate_fn must be callable: request -> generated text")
        self.generate_fn = generate_fn
        self.model_id = model_id
        self.sees_images = sees_images

    def identity(self) -> dict:
        text_only = {} if self.sees_images else {"sees_images": False}  # keys of seeing models stay as they were
        return {"backend": self.name, "model": self.model_id, **text_only}

    def generate(self, messages, image, settings) -> str:
        if not self.sees_images:
            messages, image = with_image_url(messages, None), None  # without an image the placeholder is dropped
        request = GenerationRequest(
            messages=messages, prompt=render_qwen_chat(messages), system=message_text(messages, "system"),
            user=message_text(messages, "user"), image=image, settings=settings,
        )
        text = self.generate_fn(request)
        if not isinstance(text, str):
            raise BackendError(f"the host generate function returned {type(text).__name__}, expected str")
        return text
