"""Instruction Decompose: source image + instruction -> explicit directives and focus phrases.

    from cogniedit.decompose import decompose, DecomposeSettings
    result = decompose(image_uint8, "make the left cup red", backend="rules")
    result.to_dict()   # the DIRECTIVES payload (versioned JSON)

See docs/decompose.md for backends, settings, the DIRECTIVES format and the fallbacks.
"""

from .api import DecomposeError, as_uint8_image, condition_image, decompose
from .neutralise import neutralise_instruction
from .backends import (BACKENDS, BackendError, Cancelled, ComfyTextEncoderBackend, GenerationRequest, OpenAIHTTPBackend,
                       RulesBackend, TransformersVLMBackend, make_backend)
from .cache import DecompositionCache, cache_key, image_hash
from .parser import decomposition_from_answer, parse_answer
from .rules import decompose_rules, find_focus, split_clauses
from .settings import DecomposeSettings
from .types import DIRECTIVES_FORMAT, DIRECTIVES_VERSION, FOCUS_KINDS, Decomposition, FocusPhrase

__all__ = [
    "BACKENDS", "BackendError", "Cancelled", "ComfyTextEncoderBackend", "DIRECTIVES_FORMAT", "DIRECTIVES_VERSION", "DecomposeError",
    "DecomposeSettings", "Decomposition", "DecompositionCache", "FOCUS_KINDS", "FocusPhrase", "GenerationRequest",
    "OpenAIHTTPBackend", "RulesBackend", "TransformersVLMBackend", "as_uint8_image", "cache_key", "condition_image",
    "decompose", "decompose_rules", "decomposition_from_answer", "find_focus", "image_hash", "make_backend",
    "neutralise_instruction",
    "parse_answer", "split_clauses",
]
