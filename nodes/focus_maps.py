"""Token Focus's ``attention_maps`` output: per focus phrase, where the image tokens attend to it, without and with
focus, drawn by a short probe run of the patched model (ComfyUI plumbing; the recorder and the sheet are host-free,
cogniedit.focus.attention_maps).

Why a probe run: the node runs before any sampler, so the maps of the real run do not exist yet when its outputs are
made. With ``maps_conditioning`` connected, the node samples the first steps of a ``maps_steps``-step schedule (euler,
"simple" schedule, cfg 1, fixed noise seed) on ``maps_latent`` (or a latent the size of the conditioning's reference
image) up to ``maps_end_percent``, recording the chosen blocks and steps, on a clone of its own. The MODEL output is
the same clone the node returns without maps: drawing maps never changes sampling, and without
``maps_conditioning`` nothing runs at all (the output is a card saying what to connect).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from comfy_api.latest import io

from ..cogniedit.focus.attention_maps import AttentionMapRecorder, ProbeSteps, message_image, render_phrase_maps

MAPS_SEED = 0  # the probe's noise: the same maps for the same inputs
MAPS_TILE = 160
NOT_CONNECTED = ("attention maps: connect maps_conditioning (the positive conditioning you sample with) to draw, per "
                 "focus phrase, where the image attends to it without and with focus")


def maps_inputs() -> list:
    return [
        io.Conditioning.Input("maps_conditioning", optional=True,
                              tooltip="The positive conditioning you sample with. Connect it to draw the attention "
                              "maps (a short probe run of the patched model); unconnected, nothing runs."),
        io.Latent.Input("maps_latent", optional=True,
                        tooltip="The latent you sample (its size sets the maps' grid). Default: the size of the "
                        "conditioning's reference image (Qwen-Image-Edit, Flux Kontext)."),
        io.Image.Input("maps_image", optional=True,
                       tooltip="An image to show under the maps (e.g. the source image of an edit)."),
        io.String.Input("maps_blocks", default="all", optional=True,
                        tooltip="Blocks whose attention is averaged into the maps: all, 0-9,12, last:9 (as blocks)."),
        io.Float.Input("maps_start_percent", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                       tooltip="First sampling step (as a fraction of maps_steps) averaged into the maps."),
        io.Float.Input("maps_end_percent", default=0.5, min=0.01, max=1.0, step=0.01, optional=True,
                       tooltip="Fraction where the maps stop; the probe runs only this far (its cost: "
                       "maps_steps x this many model calls, plus the attention recording)."),
        io.Int.Input("maps_steps", default=10, min=1, max=200, optional=True,
                     tooltip="Steps of the probe's schedule (the maps' step range is a fraction of it)."),
    ]


def as_image(array: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ComfyUI IMAGE ``[1, H, W, 3]`` in 0..1."""
    return torch.from_numpy(np.array(array, np.uint8)).float().div(255.0)[None]


def probe_latent(conditioning, latent) -> torch.Tensor:
    if latent is not None:
        return latent["samples"][:1]
    for _, options in conditioning:
        references = options.get("reference_latents") or []
        if references:
            return torch.zeros_like(references[0][:1])
    raise ValueError("attention maps: connect maps_latent (the latent you sample); this conditioning has no reference "
                     "image to take the size from")


def token_grid(model, samples: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of the noisy image's tokens (the DiT pads the latent to its patch size)."""
    patch = int(getattr(model.model.diffusion_model, "patch_size", 2) or 1)
    return math.ceil(samples.shape[-2] / patch), math.ceil(samples.shape[-1] / patch)


def draw_maps(model, plan, conditioning=None, latent=None, image=None, blocks="all", start_percent=0.0,
              end_percent=0.5, steps=10) -> torch.Tensor:
    """The maps sheet as an IMAGE (a card when ``conditioning`` is not connected or no phrase was found)."""
    if conditioning is None:
        return as_image(message_image(NOT_CONNECTED))
    if not plan.tokens.phrases[0]:
        return as_image(message_image("attention maps: none of the focus phrases is in the prompt; nothing to draw"))
    maps = probe_maps(model, plan, conditioning, latent, blocks, start_percent, end_percent, steps)
    shown = None if image is None else [(image[0, ..., :3].clamp(0, 1) * 255).round().byte().cpu().numpy()]
    return as_image(render_phrase_maps(maps, shown, tile=MAPS_TILE))


def probe_maps(model, plan, conditioning, latent=None, blocks="all", start_percent=0.0, end_percent=0.5, steps=10):
    """``PhraseMaps`` of a probe run of ``plan`` on a clone of ``model`` (see the module docstring)."""
    if plan.family == "sd_unet":
        raise ValueError("attention maps are drawn for DiT models (joint attention); on an SD-family UNet disconnect "
                         "maps_conditioning")
    import comfy.sample
    import comfy.samplers

    from .focus import apply_plan, check_blocks

    names, entries = plan.tokens.phrases
    run = ProbeSteps(int(steps), float(start_percent), float(end_percent))
    check_blocks(model, plan.family, blocks)  # a spec that selects no block fails here, with its message
    samples = comfy.sample.fix_empty_latent_channels(model, probe_latent(conditioning, latent))
    recorder = AttentionMapRecorder(None, [names], token_grid(model, samples), blocks, run.maps_schedule,
                                    entries=[entries])
    # the probe's schedule stops at end_percent: focus's own step range is rescaled onto it (same steps gated)
    probe = apply_plan(model, dataclasses.replace(plan, schedule=run.rescale(plan.schedule)), maps=recorder)
    sigmas = comfy.samplers.calculate_sigmas(probe.get_model_object("model_sampling"), "simple", run.steps)
    noise = comfy.sample.prepare_noise(samples, MAPS_SEED)
    comfy.sample.sample_custom(probe, noise, 1.0, comfy.samplers.sampler_object("euler"),
                               sigmas[:run.run_steps + 1], conditioning, conditioning, samples, disable_pbar=True,
                               seed=MAPS_SEED)
    return recorder.result()
