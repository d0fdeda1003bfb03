"""Focus-weights file: safetensors tensors of a ``LearnedFocus`` + metadata that names the base model.

Metadata (all strings, safetensors header): ``format`` = "cogniedit.focus", ``format_version``,
``family`` (one of FAMILIES), ``base_hash`` (``base_model_hash`` of the DiT it was trained on),
``blocks`` (comma list), ``xi``, ``window``, ``hidden_size``. Loading refuses a file made for another
model and says which model the file fits and which it was given.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..safetensors_io import SafetensorsFileError, read_safetensors, read_safetensors_metadata, save_safetensors_atomic

FORMAT = "cogniedit.focus"
FORMAT_VERSION = "1"
FAMILIES = ("qwen_image", "qwen_image_edit", "flux_kontext", "shapeedit", "flux2_klein", "longcat_image", "mage_flow")
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")


class FocusWeightsError(ValueError):
    """The file is unreadable or made for another base model."""


def base_model_hash(state_dict_or_module, n_values: int = 4) -> str:
    """Stable 16-hex-digit hash of a DiT: every key (host prefixes stripped) and shape, plus a few values.

    Values come from the first and last tensors (sorted keys), rounded to 2 significant digits so fp32,
    fp16 and bf16 copies of one checkpoint hash the same; dtype is left out for the same reason.
    """
    sd = state_dict_or_module.state_dict() if hasattr(state_dict_or_module, "state_dict") else state_dict_or_module
    items = []
    for key, t in sd.items():
        if key.endswith("__index_timestep_zero__"):
            continue  # Edit-2511's empty marker (a buffer in ComfyUI's model, a config flag in diffusers'): no weight
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                break
        items.append((key, t))
    items.sort(key=lambda kv: kv[0])
    h = hashlib.sha256()
    for key, t in items:
        h.update(f"{key}:{tuple(t.shape)};".encode())
    for key, t in (items[:2] + items[-2:]) if items else []:
        vals = t.detach().reshape(-1)[:n_values].float().cpu().tolist()
        h.update((key + ":" + ",".join(f"{v:.2g}" for v in vals)).encode())
    return h.hexdigest()[:16]


def _describe(meta: dict) -> str:
    return (f"family={meta.get('family', '?')}, base_hash={meta.get('base_hash', '?')}, "
            f"hidden_size={meta.get('hidden_size', '?')}")


def save_focus_weights(path, module, meta: dict, tensors: dict | None = None) -> Path:
    """Write ``module``'s tensors and ``meta`` atomically (temp file in the same folder + os.replace).

    ``meta`` needs ``family`` and ``base_hash``; ``blocks``, ``xi``, ``window``, ``hidden_size`` are
    filled from the module when it has them. ``tensors``: its state dict when the caller already has it
    (e.g. gathered from shards).
    """
    if meta.get("family") not in FAMILIES:
        raise ValueError(f"meta['family'] must be one of {FAMILIES}, got {meta.get('family')!r}")
    if not meta.get("base_hash"):
        raise ValueError("meta['base_hash'] is required: compute it with base_model_hash(<the base DiT>)")
    full = {"format": FORMAT, "format_version": FORMAT_VERSION}
    for name in ("xi", "window", "hidden_size"):
        if hasattr(module, name):
            full[name] = str(getattr(module, name))
    if hasattr(module, "block_indices"):
        full["blocks"] = ",".join(str(b) for b in module.block_indices)
    full.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in (tensors or module.state_dict()).items()}
    return save_safetensors_atomic(path, tensors, full)


def read_focus_metadata(path) -> dict:
    path = Path(path)
    try:
        meta = read_safetensors_metadata(path, "focus weights")
    except SafetensorsFileError as exc:  # one line: the file, the problem (not safetensors, truncated), the fix
        raise FocusWeightsError(str(exc)) from None
    if meta.get("format") != FORMAT:
        raise FocusWeightsError(f"{path.name!r} is not a CogniEdit focus weights file (format={meta.get('format')!r}); "
                                "pick the focus weights file the CogniEdit trainer wrote (focus.safetensors in its "
                                "output)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FocusWeightsError(
            f"{path.name!r} has focus format version {meta.get('format_version')!r}; this CogniEdit reads version "
            f"{FORMAT_VERSION}: re-export it with this version's trainer"
        )
    return meta


def check_focus_fit(meta: dict, what: str, family=None, base_hash=None, hidden_size=None,
                    accepted_families=None) -> None:
    """Refuse focus weights made for another base model. ``family`` / ``base_hash`` / ``hidden_size`` describe the
    model they are given to (None: not checked); ``accepted_families``: the file families that fit that model
    (default: ``family`` itself). ``what`` names the weights in the message."""
    fits = {"family": family is None or meta.get("family") in (accepted_families or (str(family),)),
            "base_hash": base_hash is None or meta.get("base_hash") == str(base_hash),
            "hidden_size": hidden_size is None or meta.get("hidden_size") == str(hidden_size)}
    wrong = [name for name, ok in fits.items() if not ok]
    if wrong:
        given = ", ".join(f"{name}={value}" for name, value in
                          (("family", family), ("base_hash", base_hash), ("hidden_size", hidden_size))
                          if value is not None)
        raise FocusWeightsError(
            f"{what} fit the model ({_describe(meta)}) but were given a model with {given} "
            f"(mismatch: {', '.join(wrong)}); load the focus weights trained for this model"
        )


def learned_focus_from(tensors: dict, meta: dict, what: str):
    """The ``LearnedFocus`` module a focus-weights file's tensors and metadata describe."""
    from .learned import LearnedFocus

    try:
        blocks = [int(b) for b in str(meta["blocks"]).split(",") if b]
        gate = 0.0 if "gate" in tensors else None  # gated files (a warm-started run) carry their gate logits
        module = LearnedFocus(int(meta["hidden_size"]), blocks, xi=int(meta["xi"]), window=int(meta["window"]),
                              gate_init=gate)
        module.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise FocusWeightsError(f"{what} do not describe a LearnedFocus module ({exc}); re-export them with the "
                                "CogniEdit trainer") from None
    return module


def load_focus_weights(path, expect_family=None, expect_hash=None, expect_hidden=None):
    """Return ``(state_dict, meta)``; refuse a file made for another base model or a corrupt file."""
    path = Path(path)
    meta = read_focus_metadata(path)
    check_focus_fit(meta, f"focus weights {path.name}", expect_family, expect_hash, expect_hidden)
    try:
        tensors, _ = read_safetensors(path, "focus weights")
    except SafetensorsFileError as exc:
        raise FocusWeightsError(str(exc)) from None
    return tensors, meta


def load_learned_focus(path, **expect):
    """Build a ``LearnedFocus`` from a weights file (checks as ``load_focus_weights``)."""
    tensors, meta = load_focus_weights(path, **expect)
    return learned_focus_from(tensors, meta, f"the focus weights in {path}")
