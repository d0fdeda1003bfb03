"""Where Qwen-Image-Edit's VAE, text encoder and processor come from, and loading them.

Each part is resolved on its own: ``model.vae`` / ``model.text_encoder`` (ComfyUI's single files, or a diffusers /
transformers folder), else ``vae/`` / ``text_encoder/`` of ``model.components`` (or of ``model.path`` for
``kind=diffusers``). The processor is the components folder's ``processor/`` when there is a folder, else built in
code from the pack's offline tokenizer (``training.comfy_files.qwen25_vl_processor``): ComfyUI's files alone need
no diffusers folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .models import ModelLoadError

FOLDER_PARTS = ("vae", "text_encoder", "processor")


@dataclass(frozen=True)
class Components:
    vae: Path  # ComfyUI file or diffusers folder
    text_encoder: Path  # ComfyUI file or transformers folder
    processor: Path | None  # transformers folder, or None: built in code

    def identity(self) -> list:
        """Paths, sizes and mtimes of every component file: changes when a component changes (cache keys)."""
        rows = []
        for name, source in (("vae", self.vae), ("text_encoder", self.text_encoder), ("processor", self.processor)):
            if source is None:
                rows.append([name, "built-in"])
                continue
            files = [source] if source.is_file() else sorted(f for f in source.glob("*") if f.is_file())
            for f in files:
                stat = f.stat()
                rows.append([name, str(f.resolve()), stat.st_size, int(stat.st_mtime)])
        return rows


def resolve_components(model_config: dict) -> Components:
    """The sources of the three parts, checked to exist (the error names the key to set)."""
    folder = model_config.get("components") or (model_config["path"] if model_config["kind"] == "diffusers" else None)
    files = {part: model_config.get(part) for part in ("vae", "text_encoder")}
    if folder is None and not all(files.values()):
        raise ModelLoadError("model.kind=single_file trains the DiT of that file; set model.vae and "
                             "model.text_encoder to ComfyUI's files (models/vae/qwen_image_vae.safetensors, "
                             "models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors), or set model.components "
                             "to a Qwen-Image-Edit diffusers folder")
    for part, source in files.items():
        if source and not Path(source).exists():
            raise ModelLoadError(f"model.{part}: {source} not found; point it at ComfyUI's file of that component")
    if folder is not None:
        folder = Path(folder)
        needed = [part for part in FOLDER_PARTS if not files.get(part)]
        missing = [part for part in needed if not (folder / part).is_dir()]
        if missing:
            raise ModelLoadError(f"{folder} lacks {', '.join(f'{m}/' for m in missing)}: model.components (or, for "
                                 "kind=diffusers, model.path) must be a whole Qwen-Image-Edit diffusers folder")
    return Components(vae=Path(files["vae"]) if files["vae"] else folder / "vae",
                      text_encoder=Path(files["text_encoder"]) if files["text_encoder"] else folder / "text_encoder",
                      processor=folder / "processor" if folder is not None else None)


def load_vae(components: Components, dtype: torch.dtype):
    if components.vae.is_file():
        from .comfy_files import load_comfy_vae

        return load_comfy_vae(components.vae, dtype)
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage.from_pretrained(str(components.vae), torch_dtype=dtype).eval()


def load_text_encoder(components: Components, dtype: torch.dtype):
    """The Qwen2.5-VL (frozen, eval mode)."""
    if components.text_encoder.is_file():
        from .comfy_files import load_comfy_text_encoder

        return load_comfy_text_encoder(components.text_encoder, dtype)
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(components.text_encoder), torch_dtype=dtype)
    return model.eval().requires_grad_(False)


def text_width(components: Components) -> int:
    """The text encoder's hidden size without loading its weights (config or file header)."""
    if components.text_encoder.is_file():
        from .comfy_files import StateFile, text_encoder_config

        source = StateFile(components.text_encoder, "text encoder")
        text_encoder_config(source.shapes, source.path)  # refuses a file that is no Qwen2.5-VL, naming it
        return int(source.shapes["model.embed_tokens.weight"][1])
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(components.text_encoder)).get_text_config().hidden_size


def load_processor(components: Components):
    if components.processor is None:
        from .comfy_files import qwen25_vl_processor

        return qwen25_vl_processor()
    from cogniedit.decompose.backends.transformers_vlm import load_processor as load_folder_processor

    return load_folder_processor(str(components.processor), "qwen2_5_vl")
