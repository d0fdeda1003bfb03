"""CogniEdit Loader: the trained LoRA (through ComfyUI's own LoRA machinery) plus the focus weights, in one step.

The LoRA comes from ComfyUI's ``loras`` folder, the focus weights from ``models/cogniedit``. Before applying,
every LoRA key is checked against the model's LoRA key map (``comfy.lora.model_lora_keys_unet``): a LoRA for
another base model is refused with a message naming the fix instead of ComfyUI's silent "lora key not loaded"
warnings and an unchanged model.
"""

from __future__ import annotations

import comfy.lora
import comfy.lora_convert
import comfy.sd
import comfy.utils
from comfy_api.latest import io

from ..cogniedit.focus.weights_file import base_model_hash, load_focus_weights
from .common import MODELS_FOLDER, register_models_folder, resolve_safetensors, safetensors_files
from .types import FocusWeights

NO_FILE = "(none)"
LORA_HASH_KEY = "base_model_hash"  # LoRA metadata written by the trainer (training/grpo.py)
FOCUS_HASH_KEY = "base_hash"  # focus-weights metadata (cogniedit.focus.weights_file)

register_models_folder()


def lora_key_status(model, lora: dict) -> tuple[list[str], list[str]]:
    """(loaded, not_loaded) keys of a LoRA state dict for ``model``: a key loads when its module prefix
    (``<prefix>.lora_A.weight``, ``<prefix>.alpha``, ``<prefix>_lora.up.weight``...) is in ComfyUI's key map."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    converted = comfy.lora_convert.convert_lora(dict(lora))
    loaded, not_loaded = [], []
    for key in converted:
        cuts = [i for i, ch in enumerate(key) if ch == "."]
        cuts += [i for i in range(len(key)) if key.startswith("_lora.", i)]
        (loaded if any(key[:i] in key_map for i in cuts) else not_loaded).append(key)
    return loaded, not_loaded


def check_lora_fits(model, lora: dict, name: str, strict: bool) -> tuple[int, list[str]]:
    loaded, not_loaded = lora_key_status(model, lora)
    arch = type(model.model).__name__
    if not loaded:
        raise ValueError(
            f"LoRA {name!r} is not a LoRA for this model ({arch}): none of its {len(not_loaded)} keys match "
            f"(e.g. {not_loaded[:2]}). It was trained for another base model; load the LoRA trained for "
            f"{arch} (or connect the base model this LoRA was trained on).")
    if not_loaded and strict:
        raise ValueError(
            f"{len(not_loaded)} of {len(loaded) + len(not_loaded)} keys of LoRA {name!r} do not match this model "
            f"({arch}), e.g. {not_loaded[:3]}: it was trained on a different variant (layer count, width). Use the "
            "LoRA trained for this model, or turn 'strict' off to apply the matching keys anyway.")
    return len(loaded), not_loaded


def base_hash_of(model) -> str:
    """The base-model hash the trainer records (``cogniedit.focus.weights_file.base_model_hash`` of the DiT)."""
    return base_model_hash(model.model.diffusion_model)


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
            path = resolve_safetensors("loras", lora_name)
            lora, lora_metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
            lora_metadata = lora_metadata or {}
            count, not_loaded = check_lora_fits(model, lora, lora_name, strict)
            if strength != 0:
                model, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0, lora_metadata=lora_metadata)
            lines.append(f"lora: {lora_name}, strength {strength}, {count} keys loaded, {len(not_loaded)} not loaded"
                         + (f" ({not_loaded[:5]})" if not_loaded else "") + ("" if strength else " (not applied: strength 0)"))
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
