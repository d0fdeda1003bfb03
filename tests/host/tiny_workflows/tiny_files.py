"""The tiny model files the tiny workflow variants load through the real loaders (UNETLoader, VAELoader "taef1"):
built with ComfyUI's own classes, random weights, every key written (missing keys would stay uninitialised)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from comfy_inprocess import import_pack, random_state_dict
from tiny_families import CLIP_L_WIDTH, KLEIN_WIDTH, LONGCAT_WIDTH, T5_WIDTH, flux2_dit, flux_dit, longcat_dit
from workflow_specs import KLEIN, KONTEXT, LONGCAT_EDIT

from .substitute import SUBSTITUTIONS, TINY_UNET

# The real file an example loads -> its tiny DiT (the tiny file's name: substitutions.json "by_model_file").
FAMILY_DITS = {KLEIN: lambda comfy: flux2_dit(comfy, KLEIN_WIDTH), LONGCAT_EDIT: lambda comfy: longcat_dit(comfy, LONGCAT_WIDTH),
               KONTEXT: lambda comfy: flux_dit(comfy, T5_WIDTH, CLIP_L_WIDTH)}
TINY_LORA = SUBSTITUTIONS["widgets"]["CogniEditLoader"]["lora_name"]
TINY_FOCUS = SUBSTITUTIONS["widgets"]["CogniEditLoader"]["focus_weights"]

STAND_IN_TEXT_WIDTH = 1024  # the shared stand-in DiT's text width (the seeded conditioning's default width)
STAND_IN_POOLED_WIDTH = 32


def _save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def write_tiny_files(comfy, models_dir: Path) -> list[Path]:
    """diffusion_models/<TINY_UNET> (Flux dev/Kontext architecture: hidden 128, 1+1 blocks, text width 1024) and
    vae_approx/taef1_{encoder,decoder}.safetensors (a 16-channel TAESD); for the Flux Kontext, FLUX.2 klein and
    LongCat examples their tiny DiTs at the real text widths (tiny_families) and vae_approx/taef2_* (FLUX.2's
    128-channel TAESD). Skips files already there."""
    from comfy.taesd.taesd import TAESD

    models_dir = Path(models_dir)
    unet = models_dir / "diffusion_models" / TINY_UNET
    if not unet.exists():
        _save(random_state_dict(flux_dit(comfy, STAND_IN_TEXT_WIDTH, STAND_IN_POOLED_WIDTH), seed=0), unet)
    encoder = models_dir / "vae_approx" / "taef1_encoder.safetensors"
    decoder = models_dir / "vae_approx" / "taef1_decoder.safetensors"
    written = [unet]
    for name, channels in (("taef1", 16), ("taef2", 128)):
        encoder = models_dir / "vae_approx" / f"{name}_encoder.safetensors"
        decoder = models_dir / "vae_approx" / f"{name}_decoder.safetensors"
        if not (encoder.exists() and decoder.exists()):
            state = random_state_dict(TAESD(latent_channels=channels), seed=0, std=None)
            for part, path in (("taesd_encoder.", encoder), ("taesd_decoder.", decoder)):
                _save({k[len(part):]: v for k, v in state.items() if k.startswith(part)}, path)
        written += [encoder, decoder]
    for real, dit in FAMILY_DITS.items():
        path = models_dir / "diffusion_models" / SUBSTITUTIONS["by_model_file"][real]["widgets"]["UNETLoader"]["unet_name"]
        if not path.exists():
            _save(random_state_dict(dit(comfy), seed=0), path)
        written.append(path)
    return written


def write_tiny_lora_and_focus(comfy, models_dir: Path) -> list[Path]:
    """loras/<TINY_LORA>: a rank-4 LoRA on the tiny DiT's attention (keys ComfyUI maps to it) and
    cogniedit/<TINY_FOCUS>: learned-focus weights saved by the core for that DiT (family flux_kontext, its hash),
    so the LoRA + focus example runs with both files as the trained pair would be used."""
    import comfy.sd

    import_pack()  # this repository as the package cogniedit_pack (the core it ships)

    from cogniedit_pack.cogniedit.focus.learned import LearnedFocus
    from cogniedit_pack.cogniedit.focus.weights_file import base_model_hash, save_focus_weights

    models_dir = Path(models_dir)
    lora_path, focus_path = models_dir / "loras" / TINY_LORA, models_dir / "cogniedit" / TINY_FOCUS
    if lora_path.exists() and focus_path.exists():
        return [lora_path, focus_path]
    dit = comfy.sd.load_diffusion_model(str(models_dir / "diffusion_models" / TINY_UNET)).model.diffusion_model
    generator = torch.Generator().manual_seed(1)
    lora = {}
    for name in ("double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.qkv", "single_blocks.0.linear1"):
        out_features, in_features = dict(dit.named_parameters())[name + ".weight"].shape
        lora[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(4, in_features, generator=generator) * 0.01
        lora[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(out_features, 4, generator=generator) * 0.01
    _save(lora, lora_path)
    module = LearnedFocus.for_model(dit, blocks="all", xi=2, window=8)
    focus_path.parent.mkdir(parents=True, exist_ok=True)
    save_focus_weights(focus_path, module, {"family": "flux_kontext", "base_hash": base_model_hash(dit)})
    return [lora_path, focus_path]
