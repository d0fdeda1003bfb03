"""Decomposition backends: rules (no model), a host callable, a local transformers VLM, an OpenAI server."""

from __future__ import annotations

from .base import Backend, BackendError, CancelCheck, Cancelled
from .comfy_text_encoder import ComfyTextEncoderBackend, GenerationRequest
from .openai_http import OpenAIHTTPBackend
from .rules import RulesBackend
from .transformers_vlm import TransformersVLMBackend

BACKENDS = {
    "rules": RulesBackend,
    "comfy_text_encoder": ComfyTextEncoderBackend,
    "transformers_vlm": TransformersVLMBackend,
    "openai_http": OpenAIHTTPBackend,
}


def make_backend(name: str, **kwargs) -> Backend:
    """Build a backend by name: make_backend("openai_http", base_url=..., model=...)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown decomposition backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return cls(**kwargs)


__all__ = ["Backend", "BackendError", "BACKENDS", "CancelCheck", "Cancelled", "ComfyTextEncoderBackend", "GenerationRequest",
           "OpenAIHTTPBackend", "RulesBackend", "TransformersVLMBackend", "make_backend"]
