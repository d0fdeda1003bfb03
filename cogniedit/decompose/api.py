"""`decompose(image, instruction, backend, settings, cache, progress, cancel)`: the single entry point.

Whatever the backend does (fails, times out, answers garbage), the caller gets a Decomposition;
model trouble shows up as source "fallback" plus warnings, never as an exception, unless
`settings.strict` asks for one. Two exceptions always propagate: bad *input* (not an image, not a
string) raises a ValueError that says how to fix it, and `cancel` returning True raises Cancelled
(the user pressed Cancel; falling back would hide that).

Tags and special tokens typed into the instruction are neutralised here, before the rules or any
prompt see it (neutralise.py).
"""

from __future__ import annotations

import inspect
import time
from typing import Callable

import numpy as np

from .backends import Backend, RulesBackend, make_backend
from .backends.base import CancelCheck, Cancelled
from .cache import DecompositionCache, cache_key
from .neutralise import neutralise_instruction, removal_warning
from .parser import decomposition_from_answer
from .prompt import build_messages
from .rules import decompose_rules
from .settings import DecomposeSettings
from .types import Decomposition

ProgressFn = Callable[[int, int, str], None]
_STEPS = 3
MAX_WARNINGS = 16
MAX_WARNING_CHARS = 500


class DecomposeError(RuntimeError):
    """Raised only with settings.strict: the model failed or gave no usable answer."""


def as_uint8_image(image) -> np.ndarray | None:
    """numpy uint8 [H, W, 3] (the core's image convention) from uint8 arrays or PIL images."""
    if image is None:
        return None
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy uint8 array [H, W, 3] or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"image dtype is {image.dtype}; convert 0..1 floats with (image * 255).round().astype(np.uint8)"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"image shape {image.shape} is not [H, W, 3]; pass one RGB image, not a batch")
    return np.ascontiguousarray(image[:, :, :3])


def condition_image(image: np.ndarray | None, max_pixels: int) -> np.ndarray | None:
    """Shrink to at most `max_pixels` (aspect kept); smaller images pass through untouched."""
    if image is None or max_pixels <= 0 or image.shape[0] * image.shape[1] <= max_pixels:
        return image
    from PIL import Image

    scale = (max_pixels / (image.shape[0] * image.shape[1])) ** 0.5
    size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def _resolve_backend(backend) -> Backend:
    if backend is None:
        return RulesBackend()
    if isinstance(backend, str):
        return make_backend(backend)
    if not callable(getattr(backend, "generate", None)):
        raise ValueError(f"backend must be a backend name or object with generate(), got {type(backend).__name__}")
    return backend


def _cancel_check(cancel) -> CancelCheck | None:
    if cancel is None or callable(cancel):
        return cancel
    if callable(getattr(cancel, "is_set", None)):  # threading.Event
        return cancel.is_set
    raise ValueError(f"cancel must be a function returning True to stop, or a threading.Event, got {type(cancel).__name__}")


def _generate(backend: Backend, messages, image, settings, cancel: CancelCheck | None) -> str:
    if cancel is None:
        return backend.generate(messages, image, settings)
    if cancel():
        raise Cancelled("cancelled before the model was asked")
    if "cancel" in inspect.signature(backend.generate).parameters:
        return backend.generate(messages, image, settings, cancel=cancel)
    answer = backend.generate(messages, image, settings)  # a backend that cannot stop early
    if cancel():
        raise Cancelled("cancelled while the model answered")
    return answer


def _bounded_warnings(warnings: list[str]) -> list[str]:
    short = [w if len(w) <= MAX_WARNING_CHARS else w[:MAX_WARNING_CHARS - 1] + "…" for w in dict.fromkeys(warnings)]
    if len(short) > MAX_WARNINGS:
        short = short[:MAX_WARNINGS - 1] + [f"... and {len(short) - MAX_WARNINGS + 1} more warnings"]
    return short


def decompose(image, instruction: str, backend: Backend | str | None = "rules",
              settings: DecomposeSettings | None = None, cache: DecompositionCache | None = None,
              progress: ProgressFn | None = None, cancel=None) -> Decomposition:
    """Turn a source image + instruction into directives (enriched instruction, targets, focus phrases).

    cancel: a function returning True (or a threading.Event set) when the caller wants to stop; checked
    while the model works. Raises Cancelled then."""
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
    instruction, removed = neutralise_instruction(instruction)
    result = _decompose(image, instruction, _resolve_backend(backend), settings or DecomposeSettings(), cache,
                        progress or (lambda step, total, message: None), _cancel_check(cancel))
    if removed:
        result.warnings.insert(0, removal_warning(removed))
    result.warnings = _bounded_warnings(result.warnings)
    return result


def model_request(image, instruction: str, settings: DecomposeSettings | None = None):
    """(messages, image) exactly as ``decompose`` sends them to a model backend for this image and instruction;
    for a caller that asks the same backend for more (the ShapeEdit editor's beams, ``shapes.decomposer.beams``)."""
    instruction, _ = neutralise_instruction(instruction)
    return _request(as_uint8_image(image), instruction, settings or DecomposeSettings())


def _request(image, instruction: str, settings: DecomposeSettings):
    return build_messages(instruction, with_image=image is not None), condition_image(image, settings.image_max_pixels)


def _decompose(image, instruction: str, backend: Backend, settings: DecomposeSettings,
               cache: DecompositionCache | None, report: ProgressFn, cancel: CancelCheck | None) -> Decomposition:
    image = as_uint8_image(image)
    if not instruction.strip():
        result = decompose_rules(instruction)
        result.warnings.append("the instruction is empty; nothing to decompose")
        return result
    if not getattr(backend, "uses_model", True):
        report(_STEPS, _STEPS, "decomposed with rules")
        return decompose_rules(instruction)

    key = None
    if cache is not None:
        key = cache_key(image, instruction, backend.identity(), settings.identity())
        hit = cache.get(key)
        if hit is not None:
            report(_STEPS, _STEPS, "decomposition from cache")
            return hit

    report(1, _STEPS, f"generating with {backend.name}")
    started = time.perf_counter()
    try:
        raw = _generate(backend, *_request(image, instruction, settings), settings, cancel)
    except Cancelled:
        raise
    except Exception as error:
        if settings.strict:
            raise DecomposeError(f"{backend.name} failed: {error}") from error
        result = decompose_rules(instruction)
        result.source = "fallback"
        result.warnings.append(f"{backend.name} failed ({type(error).__name__}: {error}); used the rule-based decomposition")
        report(_STEPS, _STEPS, "model failed; used rules")
        return result  # not cached: the failure may be transient

    report(2, _STEPS, f"parsing the answer ({time.perf_counter() - started:.1f} s)")
    result = decomposition_from_answer(raw, instruction)
    if settings.strict and result.source == "fallback":
        raise DecomposeError("; ".join(result.warnings))
    if cache is not None:
        try:
            cache.put(key, result)
        except OSError as error:
            result.warnings.append(f"could not write the decomposition cache: {error}")
    report(_STEPS, _STEPS, f"decomposed ({result.source})")
    return result
