"""Save / load the editor as one safetensors file with metadata (config JSON, training command, seed, version).

Keys: ``transformer.*`` (diffusers QwenImageTransformer2DModel; same names as ComfyUI's class),
``text_encoder.*`` (transformers Qwen2Model), ``vocab.real_ids`` (the real-Qwen2.5-id remap table).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...safetensors_io import save_safetensors_atomic
from .config import FORMAT, EditorConfig

VERSION = "shapeedit-editor 1.0"
TRAIN_HINT = "python -m cogniedit.shapes.editor.train --out cogniedit/shapes/weights/shapeedit_editor.safetensors"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "weights" / "shapeedit_editor.safetensors"


class EditorWeightsError(RuntimeError):
    """The weights file is missing, corrupt or not a ShapeEdit editor file."""


def save_editor(editor, path, extra_metadata: dict | None = None) -> Path:
    """Write the editor atomically (temp file in the same folder + os.replace)."""
    state = {k: v.detach().contiguous().cpu() for k, v in editor.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "config": editor.config.to_json()}
    for key, value in (extra_metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return save_safetensors_atomic(path, state, meta)


def read_editor_file(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a weights file, with clear errors for a missing/corrupt/foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EditorWeightsError(f"ShapeEdit editor weights not found at {path}; train them with: {TRAIN_HINT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for truncated / non-safetensors files
        raise EditorWeightsError(
            f"{path} is not a readable safetensors file ({exc}); delete it and retrain with: {TRAIN_HINT}"
        ) from exc
    if meta.get("format") != FORMAT:
        raise EditorWeightsError(
            f"{path} is not a ShapeEdit editor file (metadata format {meta.get('format')!r}, expected {FORMAT!r}); "
            f"pass the editor's weights, or retrain with: {TRAIN_HINT}"
        )
    return state, meta


def load_editor(path=None, device="cpu"):
    """Build a ShapeEditor from a weights file (default: the shipped file)."""
    from .model import ShapeEditor
    from .text import TextVocab

    path = Path(path) if path is not None else DEFAULT_PATH
    state, meta = read_editor_file(path)
    try:
        config = EditorConfig.from_json(meta["config"])
        vocab = TextVocab(state["vocab.real_ids"])
        editor = ShapeEditor(config, vocab)
        missing, unexpected = editor.load_state_dict(state, strict=False)
    except EditorWeightsError:
        raise
    except Exception as exc:
        raise EditorWeightsError(f"{path} does not match the ShapeEdit editor architecture ({exc}); "
                                 f"retrain with: {TRAIN_HINT}") from exc
    if missing or unexpected:
        raise EditorWeightsError(
            f"{path} does not match the ShapeEdit editor architecture (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}); retrain with: {TRAIN_HINT}"
        )
    editor.metadata = dict(meta)
    return editor.to(device).eval()
