"""The shipped decomposer folder: a plain transformers model folder (loads offline with the stock
``from_pretrained`` classes, ``AutoProcessor`` and the pack's ``transformers_vlm`` backend).

Files: ``config.json`` (Qwen2_5_VLForConditionalGeneration, dtype float32), ``generation_config.json``,
``model.safetensors`` (embedding table bfloat16, everything else float32), ``processor_config.json``,
``chat_template.jinja``, ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` (the real Qwen2.5 tokenizer)
and ``decomposer.json`` (how it was trained: command, steps, the prompt it was trained with, held-out accuracy).
Writes are atomic at the folder level: everything goes to a temp folder beside it, which then replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "weights" / "decomposer"
INFO_FILE = "decomposer.json"
EMBED_KEY_SUFFIX = "embed_tokens.weight"
TRAIN_HINT = "python -m cogniedit.shapes.decomposer.train"


class DecomposerFolderError(RuntimeError):
    """The folder is missing or not a trained ShapeEdit decomposer."""


def prompt_fingerprint() -> str:
    """sha256 of the system prompt and user template the backend sends (a retrain is due when it changes)."""
    from ...decompose.prompt import PROMPT_VERSION, SYSTEM_PROMPT, USER_TEMPLATE

    return hashlib.sha256(f"{PROMPT_VERSION}\n{SYSTEM_PROMPT}\n{USER_TEMPLATE}".encode()).hexdigest()[:16]


def _write_into(model, processor, folder: Path, info: dict) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from .config import write_tokenizer

    model.save_pretrained(str(folder))
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    for key in state:
        if key.endswith(EMBED_KEY_SUFFIX):
            state[key] = state[key].to(torch.bfloat16)  # 19.4 MB instead of 38.9; rows are either 0 or trained
    save_file(state, str(weights), metadata={"format": "pt"})
    processor.save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink(missing_ok=True)  # 11 MB; vocab.json + merges.txt hold the same tokenizer
    write_tokenizer(folder)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
    for path in folder.iterdir():
        os.chmod(path, 0o644)


def save_folder(model, processor, folder, info: dict) -> Path:
    """Write the whole folder next to ``folder`` and swap it in (a crash leaves the old folder or the new one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_into(model, processor, staging, {**info, "prompt_fingerprint": prompt_fingerprint()})
        os.chmod(staging, 0o755)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_info(folder=DEFAULT_FOLDER) -> dict:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DecomposerFolderError(f"{folder} holds no trained decomposer (no config.json); train it with: {TRAIN_HINT}")
    path = folder / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_backend(folder=DEFAULT_FOLDER, **kwargs):
    """The pack's ``transformers_vlm`` backend on the folder (the model loads on first use)."""
    from ...decompose.backends.transformers_vlm import TransformersVLMBackend

    read_info(folder)
    return TransformersVLMBackend(model_path=str(folder), **kwargs)
