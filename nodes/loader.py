"""CogniEdit Loader: the trained LoRA (through ComfyUI's own LoRA machinery) plus the focus weights, in one step.

The LoRA comes from ComfyUI's ``loras`` folder, the focus weights from ``models/cogniedit``. Before applying,
every LoRA key is checked against the model's LoRA key map (``comfy.lora.model_lora_keys_unet``) and the shape of
the weight it patches: a LoRA for another base model or variant is refused with a message naming the fix instead
of ComfyUI's "lora key not loaded" warnings or shape errors and an unchanged model. Files are read after the
core's header check (``cogniedit.safetensors_io``): a file that is not safetensors or is truncated is one line.
"""

from __future__ import annotations

import math

import comfy.lora
import comfy.lora_convert
import comfy.sd
import comfy.utils
import comfy.weight_adapter
import safetensors
from comfy_api.latest import io

from ..cogniedit.focus.weights_file import base_model_hash, load_focus_weights
from ..cogniedit.safetensors_io import read_safetensors_metadata, unreadable
from .common import MODELS_FOLDER, capped, register_models_folder, resolve_safetensors, safetensors_files
from .types import FocusWeights

NO_FILE = "(none)"
LORA_HASH_KEY = "base_model_hash"  # LoRA metadata written by the trainer (training/grpo.py)
FOCUS_HASH_KEY = "base_hash"  # focus-weights metadata (cogniedit.focus.weights_file)

register_models_folder()


def module_prefix(key: str, key_map: dict) -> str | None:
    """The longest prefix of a LoRA key (cut at a "." or "_lora.") that ComfyUI's key map names, or None."""
    cuts = [i for i, ch in enumerate(key) if ch == "."]
    cuts += [i for i in range(len(key)) if key.startswith("_lora.", i)]
    return next((key[:i] for i in sorted(cuts, reverse=True) if key[:i] in key_map), None)


def patch_misfit(target, patch, shapes: dict) -> str | None:
    """Why ComfyUI could not apply ``patch`` to the weight ``target`` (a key, or ``(key, (dim, start, size))`` for a
    slice of a fused weight), or None when it fits. The rules are the ones ComfyUI's merge applies
    (comfy.lora.calculate_weight: ``up @ down`` reshaped to the weight, a diff added as is); other adapter kinds
    (LoHa, LoKr, OFT) are left to ComfyUI."""
    key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
    if key not in shapes:
        return f"the layer {key} is not in this model"
    shape = list(shapes[key])
    if offset is not None:
        shape[offset[0]] = offset[2]
    if isinstance(patch, comfy.weight_adapter.LoRAAdapter):
        up, down, _, mid, _, reshape = patch.weights
        shape = list(reshape) if reshape is not None else shape
        columns = down.shape[1:].numel() * (mid.shape[2:].numel() if mid is not None else 1)
        if up.shape[0] != shape[0] or columns != math.prod(shape[1:]) or (mid is None and up.shape[1] != down.shape[0]):
            return (f"shape: LoRA down {list(down.shape)} / up {list(up.shape)} does not fit the layer's weight "
                    f"{shape}")
    elif isinstance(patch, tuple) and patch[0] in ("diff", "set") and list(patch[1][0].shape) != shape:
        return f"shape: {patch[0]} {list(patch[1][0].shape)} does not fit the layer's weight {shape}"
    return None


def lora_key_status(model, lora: dict) -> tuple[list[str], dict[str, str]]:
    """(loaded, not_loaded {key: reason}) for the keys of a LoRA state dict on ``model``. A key loads when its
    module prefix (``<prefix>.lora_A.weight``, ``<prefix>.alpha``, ``<prefix>_lora.up.weight``...) is in ComfyUI's
    key map, ComfyUI's own reader makes a patch of that module's keys, and the patch has the shape of the
    model's weight (a name match with the wrong shape only makes ComfyUI log an error and change nothing)."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    converted = comfy.lora_convert.convert_lora(dict(lora))
    shapes = {key: tuple(value.shape) for key, value in model.model.state_dict().items()}
    by_module: dict[str | None, list[str]] = {}
    for key in converted:
        by_module.setdefault(module_prefix(key, key_map), []).append(key)
    loaded, not_loaded = [], {}
    for prefix, keys in by_module.items():
        reason = "no layer of this model has this name" if prefix is None else None
        if prefix is not None:
            try:
                patches = comfy.lora.load_lora(converted, {prefix: key_map[prefix]}, log_missing=False)
            except KeyError as missing:  # e.g. a lora_A without its lora_B
                patches, reason = {}, f"incomplete: {missing} is missing"
            if not patches:
                reason = reason or "incomplete: no up/down (A/B) pair ComfyUI can read"
            reason = reason or next(filter(None, (patch_misfit(t, p, shapes) for t, p in patches.items())), None)
        if reason is None:
            loaded += keys
        else:
            not_loaded.update(dict.fromkeys(keys, reason))
    return loaded, not_loaded


def example_misfits(not_loaded: dict[str, str], limit: int = 2) -> str:
    """A bounded, one-line sample of the keys that do not fit and why."""
    return "; ".join(capped([f"{key}: {reason}" for key, reason in not_loaded.items()], limit))


def check_lora_fits(model, lora: dict, name: str, strict: bool) -> tuple[list[str], dict[str, str]]:
    loaded, not_loaded = lora_key_status(model, lora)
    arch = type(model.model).__name__
    if not loaded:
        raise ValueError(
            f"LoRA {name!r} is not a LoRA for this model ({arch}): none of its {len(not_loaded)} keys fit "
            f"(e.g. {example_misfits(not_loaded)}). It was trained for another base model or variant; load the "
            f"LoRA trained for {arch} (or connect the base model this LoRA was trained on).")
    if not_loaded and strict:
        raise ValueError(
            f"{len(not_loaded)} of {len(loaded) + len(not_loaded)} keys of LoRA {name!r} do not fit this model "
            f"({arch}), e.g. {example_misfits(not_loaded)}: it was trained on a different variant (layer count, "
            "width). Use the LoRA trained for this model, or turn 'strict' off to apply the fitting keys only.")
    return loaded, not_loaded


def base_hash_of(model) -> str:
    """The base-model hash the trainer records (``cogniedit.focus.weights_file.base_model_hash`` of the DiT)."""
    return base_model_hash(model.model.diffusion_model)


def load_lora_file(path: str) -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a LoRA file through ComfyUI's loader, after the core's header check, so a file
    that is not safetensors or is truncated gets one line (file, problem, fix) instead of a raw SafetensorError."""
    read_safetensors_metadata(path, "LoRA")
    try:
        lora, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except (safetensors.SafetensorError, ValueError) as exc:  # what the header check cannot see
        raise unreadable("LoRA", path, exc) from None
    return lora, metadata or {}


def load_focus_file(path: str):
    """``(tensors, metadata)`` of a focus-weights file, with the core's file checks (format, version, readable).
    Whether it fits the model is the Token Focus node's check (it refuses another base); the loader reports it."""
    return load_focus_weights(path)


class CogniEditLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditLoader",
            display_name="CogniEdit Loader",
            category="CogniEdit/loaders",
            description="Applies a CogniEdit-trained LoRA with ComfyUI's LoRA loader (refusing a LoRA made for "
            "another base model) and loads the matching focus weights for the Token Focus node.",
            inputs=[
                io.Model.Input("model", tooltip="The base edit model the LoRA was trained on."),
                io.Combo.Input("lora_name", options=[NO_FILE] + safetensors_files("loras"),
                               tooltip="LoRA file in models/loras (.safetensors only). (none) = no LoRA."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="LoRA strength on the diffusion model; 0 leaves the model unchanged."),
                io.Combo.Input("focus_weights", options=[NO_FILE] + safetensors_files(MODELS_FOLDER),
                               tooltip="Focus-weights file in models/cogniedit (.safetensors), written by the "
                               "CogniEdit trainer next to the LoRA. (none) = no learned focus."),
                io.Boolean.Input("strict", default=True,
                                 tooltip="Refuse a LoRA with any key this model cannot take. Off: apply the "
                                 "matching keys and list the others in the report."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the LoRA applied (a clone)."),
                FocusWeights.Output(display_name="focus_weights",
                                    tooltip="Learned focus weights for the Token Focus node (None without a file)."),
                io.String.Output(display_name="report", tooltip="What was loaded, key counts, file metadata."),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name, strength, focus_weights=NO_FILE, strict=True) -> io.NodeOutput:
        base_hash = base_hash_of(model)  # of the input: the base the files must have been trained on
        lines = [f"model: {type(model.model).__name__}, base hash {base_hash}"]
        lora_hash = None
        if lora_name == NO_FILE:
            lines.append("lora: none")
        else:
            lora, lora_metadata = load_lora_file(resolve_safetensors("loras", lora_name))
            lora = comfy.lora_convert.convert_lora(lora)  # the names ComfyUI's loader reads (converting is idempotent)
            loaded, not_loaded = check_lora_fits(model, lora, lora_name, strict)
            if strength != 0:  # only the keys that fit: the others would only make ComfyUI log errors
                fitting = {key: lora[key] for key in loaded}
                model, _ = comfy.sd.load_lora_for_models(model, None, fitting, strength, 0,
                                                         lora_metadata=lora_metadata)
            lines.append(f"lora: {lora_name}, strength {strength}, {len(loaded)} keys loaded, {len(not_loaded)} not "
                         "loaded" + ("" if strength else " (not applied: strength 0)"))
            lines += [f"  not loaded: {item}" for item in capped(
                [f"{key}: {reason}" for key, reason in not_loaded.items()], 5)]
            lora_hash = lora_metadata.get(LORA_HASH_KEY)
            if lora_hash and lora_hash != base_hash:  # the keys fit, so only a note: fp8/other copies hash apart
                lines.append(f"note: the LoRA was trained on base hash {lora_hash}, not this model's; expect "
                             "weaker edits if this is another base (a re-quantised copy of the same base is fine)")

        focus = None
        if focus_weights == NO_FILE:
            lines.append("focus weights: none")
        else:
            focus = load_focus_file(resolve_safetensors(MODELS_FOLDER, focus_weights))
            focus_hash = focus[1].get(FOCUS_HASH_KEY)
            if lora_hash and focus_hash and lora_hash != focus_hash:
                raise ValueError(f"focus weights {focus_weights!r} were trained on base {focus_hash} but LoRA "
                                 f"{lora_name!r} on base {lora_hash}: load the pair written by the same training run")
            lines.append(f"focus weights: {focus_weights} (family {focus[1].get('family', '?')}, "
                         f"{len(focus[0])} tensors)")
            if focus_hash != base_hash:
                lines.append(f"warning: the focus weights were trained on base hash {focus_hash}, not this model's "
                             f"{base_hash}; the Token Focus node will refuse them. Load the focus weights trained "
                             "for this model.")
        return io.NodeOutput(model, focus, "\n".join(lines))


NODES = [CogniEditLoader]
