"""Small helpers shared by the CogniEdit adapters: the models folder, safetensors-only file checks, the focus hook."""

from __future__ import annotations

import os
from typing import Any, Callable

import folder_paths

MODELS_FOLDER = "cogniedit"  # <ComfyUI>/models/cogniedit: focus-weights files
SAFETENSORS = (".safetensors", ".sft")


def register_models_folder(name: str = MODELS_FOLDER) -> None:
    """Register ``models/<name>`` for .safetensors files, keeping any registration that already exists (from
    extra_model_paths.yaml or another pack): then only the default path and the extension are added.
    Creates no folder."""
    default = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths:
        paths, extensions = folder_paths.folder_names_and_paths[name]
        if default not in paths:
            paths.append(default)
        if isinstance(extensions, set):
            extensions.update(SAFETENSORS)
    else:
        folder_paths.folder_names_and_paths[name] = ([default], set(SAFETENSORS))


def safetensors_files(folder: str) -> list[str]:
    """The .safetensors files ComfyUI lists for a registered folder (other formats could hold pickles)."""
    return [name for name in folder_paths.get_filename_list(folder) if name.lower().endswith(SAFETENSORS)]


def resolve_safetensors(folder: str, name: str) -> str:
    """Full path of ``name`` in a registered folder; a clear error when missing or not a .safetensors file."""
    if not name.lower().endswith(SAFETENSORS):
        raise ValueError(f"{name!r} is not a .safetensors file: CogniEdit loads safetensors only (no pickles). "
                         "Convert it to .safetensors or pick another file.")
    path = folder_paths.get_full_path(folder, name)
    if path is None or not os.path.isfile(path):
        searched = ", ".join(folder_paths.get_folder_paths(folder)) if folder in folder_paths.folder_names_and_paths else "?"
        raise FileNotFoundError(f"{name!r} was not found in the {folder!r} model folders ({searched}); "
                                "put the file there and refresh the node list.")
    return path


# The largest source the pack encodes and samples: edit models work at about 1 MP, and the joint attention grows
# with the square of the token count, so far larger sources only end in a raw allocation error much later.
MAX_SOURCE_PIXELS = 2048 * 2048  # 4.2 MP


def check_source_size(width: int, height: int, what: str = "source image") -> None:
    """Refuse a source over MAX_SOURCE_PIXELS at once, with the fix (scale it down), before anything is allocated."""
    if width * height <= MAX_SOURCE_PIXELS:
        return
    where = "before VAE Encode" if "latent" in what else "before this node"
    raise ValueError(f"{what} {width}x{height} px ({width * height / 1e6:.1f} MP) is over CogniEdit's limit of "
                     f"{MAX_SOURCE_PIXELS / 1e6:.1f} MP (2048x2048): edit models work at about 1 MP and this size "
                     f"would not fit in memory. Scale the image down {where}, e.g. with ImageScaleToTotalPixels "
                     "(megapixels 1.0).")


def capped(items: list[str], limit: int) -> list[str]:
    """At most ``limit`` items, then "... and N more": reports stay bounded whatever the input size."""
    return list(items[:limit]) + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


# ---------------------------------------------------------------- focus hook
# DIRECTIVES may carry a focus patch under FOCUS_PATCH_KEY: a callable ``patch(model) -> model`` that returns a
# patched clone of the MODEL (the Token Focus node puts it there). Its optional ``description`` attribute is
# shown in the sampler's report. Without it the samplers behave exactly like ComfyUI's CFGGuider.
FOCUS_PATCH_KEY = "focus_patch"
# A focus patch's OUTER_SAMPLE wrapper carries its run-time tally (cogniedit.focus.override.FocusTally) under this
# attribute; it is reset when sampling starts, so after sampling it holds what that run applied.
TALLY_ATTRIBUTE = "cogniedit_tally"


def focus_patch_of(directives: dict[str, Any] | None) -> Callable | None:
    if directives is None:
        return None
    if not isinstance(directives, dict):
        raise ValueError(f"DIRECTIVES must be a dict (the CogniEdit Instruction Decompose output), got "
                         f"{type(directives).__name__}")
    patch = directives.get(FOCUS_PATCH_KEY)
    if patch is not None and not callable(patch):
        raise ValueError(f"DIRECTIVES[{FOCUS_PATCH_KEY!r}] must be a callable patch(model) -> model, got "
                         f"{type(patch).__name__}; connect the CogniEdit Token Focus node's DIRECTIVES output")
    return patch


def cogniedit_marks(model) -> list[str]:
    """Keys of CogniEdit wrappers and attachments already on a MODEL (e.g. set by a MODEL -> MODEL focus node)."""
    keyed = [getattr(model, "wrappers", {}), getattr(model, "callbacks", {}),
             model.model_options.get("transformer_options", {}).get("wrappers", {})]
    keys = {key for by_type in keyed for by_key in by_type.values() for key in by_key}
    keys |= set(getattr(model, "attachments", {}))
    return sorted(key for key in keys if "cogniedit" in str(key).lower())


def apply_focus(model, directives: dict[str, Any] | None):
    """(model, note): the MODEL with the directives' focus patch applied to a clone, or unchanged (note "off", or
    which CogniEdit patches the MODEL already carries)."""
    patch = focus_patch_of(directives)
    if patch is None:
        marks = cogniedit_marks(model)
        return model, f"set on the MODEL ({', '.join(marks)})" if marks else "off"
    patched = patch(model)
    if patched is None:
        raise ValueError("the focus patch in DIRECTIVES returned no MODEL; it must return a patched clone")
    return patched, str(getattr(patch, "description", "on"))


def applied_focus(model) -> list[str]:
    """After sampling ``model``: what its focus patches applied in that run (counted at run time), one line each,
    with their warnings ("FOCUS NOT APPLIED: ..."). Empty when the MODEL carries no focus patch."""
    import comfy.patcher_extension

    lines = []
    for wrappers in model.wrappers.get(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, {}).values():
        for wrapper in wrappers:
            tally = getattr(wrapper, TALLY_ATTRIBUTE, None)
            if tally is not None:
                line, warnings = tally.summary()
                lines += [line] + [f"warning: {warning}" for warning in warnings]
    return lines
