"""CogniEdit sampling nodes: a GUIDER and a flow SAMPLER that plug into core SamplerCustomAdvanced, and the
all-in-one CogniEdit Sampler (source image -> edited LATENT + report).

The step math is the core's (``cogniedit.sampling.steps``): the trainer's rollouts and these nodes share one
Euler/SDE step. With eta = 0 the flow sampler reproduces ComfyUI's ``euler`` bit for bit (velocity
``(x - denoised)/sigma``, step ``x + v*dt``). The all-in-one node builds exactly what a core graph builds
(RandomNoise, BasicScheduler, ReferenceLatent, CFGGuider) and runs it through SamplerCustomAdvanced, so the
progress bar, live previews, model patches and wrappers all behave as in core.
"""

from __future__ import annotations

import math

import comfy.model_base
import comfy.model_management
import comfy.sample
import comfy.samplers
import node_helpers
import torch
from comfy.k_diffusion.sampling import trange
from comfy_api.latest import io
from comfy_extras import nodes_custom_sampler, nodes_flux

from ..cogniedit.decompose.types import Decomposition
from ..cogniedit.sampling.steps import euler_step, sde_step
from .common import applied_focus, apply_focus, check_source_size
from .types import Directives

ALIGN = 32  # pixels: whole 2x2 patches of 8-px latents (Flux, Qwen-Image) and whole 16-px cells (FLUX.2, Mage-Flow)
ALIGN_MODES = ("crop", "pad")
# FLUX.2's own schedule (its templates wire Flux2Scheduler, not BasicScheduler): a shift that grows with the
# image's token count, computed at this node's output size. Offered beside ComfyUI's scheduler names.
FLUX2_SCHEDULER = "Flux2Scheduler"
SCHEDULERS = [*comfy.samplers.SCHEDULER_NAMES, FLUX2_SCHEDULER]


# ---------------------------------------------------------------- flow sampler (k-diffusion signature)

def sde_seed(seed: int | None) -> int:
    """Seed of the SDE's per-step noise: the run's seed + 1 (so it never replays the initial noise's stream)."""
    return (int(seed or 0) + 1) % (2**64)


@torch.no_grad()
def sample_flow(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, noise_seed=None):
    """Flow-matching sampler over ComfyUI's denoiser ``model(x, sigma) -> x0``: Euler ODE (eta = 0, identical to
    ComfyUI's ``euler``) or the Flow-GRPO SDE (eta > 0) the trainer rolls out with. SDE noise comes from a CPU
    generator seeded with ``noise_seed`` (default: the run's seed + 1), one float32 draw per step."""
    extra_args = {} if extra_args is None else extra_args
    generator = None
    if eta > 0:
        seed = sde_seed(extra_args.get("seed")) if noise_seed is None else int(noise_seed)
        generator = torch.Generator(device="cpu").manual_seed(seed)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        velocity = (x - denoised) / sigma  # = ComfyUI's to_d for flow models: noise - x0
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if eta > 0:
            x = sde_step(x, velocity, sigma, sigma_next, eta, generator=generator).prev_sample
        else:
            x = euler_step(x, velocity, sigma, sigma_next)
    return x


def flow_sampler(eta: float = 0.0, noise_seed: int | None = None) -> comfy.samplers.KSAMPLER:
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic Euler), got {eta}")
    return comfy.samplers.KSAMPLER(sample_flow, extra_options={"eta": float(eta), "noise_seed": noise_seed})


class CogniEditCFGGuider(comfy.samplers.CFGGuider):
    """ComfyUI's CFGGuider on a MODEL that may carry the directives' focus patch. Without directives it is
    exactly a CFGGuider (no method is overridden); ``focus`` records what was applied for reports."""

    def __init__(self, model_patcher, directives=None):
        model_patcher, self.focus = apply_focus(model_patcher, directives)
        super().__init__(model_patcher)


def make_guider(model, positive, negative, cfg, directives=None) -> CogniEditCFGGuider:
    guider = CogniEditCFGGuider(model, directives)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


# ---------------------------------------------------------------- source handling

def pixels_per_latent(model) -> int:
    """Pixels per latent cell along a side, as the model's latent format declares it (ComfyUI sizes empty latents
    and converts LATENTs between models with the same number): 8 for Flux / Qwen-Image / LongCat, 16 for FLUX.2 and
    Mage-Flow. The model's, not the VAE's: VAELoader's taef2 encodes /16 but keeps the default ratio of 8."""
    return int(model.get_model_object("latent_format").spacial_downscale_ratio)


def pixel_size(samples: torch.Tensor, factor: int) -> str:
    """"WxH" in pixels of a latent [..., h, w] at ``factor`` px per cell."""
    return f"{samples.shape[-1] * factor}x{samples.shape[-2] * factor}"


def align_image(image: torch.Tensor, mode: str = "crop", multiple: int = ALIGN) -> torch.Tensor:
    """IMAGE [B, H, W, C] with H and W made multiples of ``multiple`` without resampling, anchored at the top-left
    corner (pixel (x, y) stays at (x, y): no zoom, no shift). "crop" drops at most multiple-1 rows/columns at the
    bottom/right; "pad" repeats the last row/column up to the next multiple."""
    if image.ndim != 4:
        raise ValueError(f"source_image must be a ComfyUI IMAGE [B, H, W, C], got shape {tuple(image.shape)}")
    height, width = image.shape[1], image.shape[2]
    if mode == "crop":
        new_h, new_w = height // multiple * multiple, width // multiple * multiple
        if new_h == 0 or new_w == 0:
            raise ValueError(f"source image {width}x{height} is smaller than {multiple} px; use align 'pad' or a "
                             "larger image")
        return image[:, :new_h, :new_w]
    if mode == "pad":
        new_h, new_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
        if (new_h, new_w) == (height, width):
            return image
        padded = torch.nn.functional.pad(image.movedim(-1, 1), (0, new_w - width, 0, new_h - height), mode="replicate")
        return padded.movedim(1, -1)
    raise ValueError(f"align must be one of {ALIGN_MODES}, got {mode!r}")


def source_latent_of(model, source_image, vae, source_latent, align: str):
    """(latent dict, note): the edit reference as a LATENT, from a LATENT (used as given) or IMAGE + VAE."""
    if source_image is not None and source_latent is not None:
        raise ValueError("connect either source_image (with a vae) or source_latent, not both")
    if source_latent is not None:
        latent = source_latent.copy()
        note = "source: LATENT as given"
    elif source_image is not None:
        if vae is None:
            raise ValueError("source_image needs a vae to encode it: connect the model's VAE (or pass a LATENT "
                             "from VAE Encode as source_latent)")
        height, width = source_image.shape[1], source_image.shape[2]
        check_source_size(width, height, "source image")  # before the VAE (or the attention) allocates for it
        aligned = align_image(source_image, align)
        new_h, new_w = aligned.shape[1], aligned.shape[2]
        latent = {"samples": vae.encode(aligned[:, :, :, :3])}
        note = f"source: IMAGE {width}x{height} px"
        note += f" -> {align} to {new_w}x{new_h}" if (new_h, new_w) != (height, width) else " (32-px aligned)"
    else:
        raise ValueError("no source: connect source_image (with a vae) or source_latent, the image to edit")
    samples = latent["samples"]
    if samples.is_nested:
        raise ValueError("nested (multi-part) latents are not supported as an edit source")
    if source_latent is not None:  # already encoded: its pixel size still sets what sampling allocates
        factor = pixels_per_latent(model)
        check_source_size(samples.shape[-1] * factor, samples.shape[-2] * factor, "source latent")
    latent["samples"] = comfy.sample.fix_empty_latent_channels(
        model, samples, latent.get("downscale_ratio_spacial", None), latent.get("downscale_ratio_temporal", None))
    return latent, note


def with_reference(conditioning, reference: torch.Tensor, factor: int):
    """(conditioning, note): the reference latent appended as ReferenceLatent does, unless the conditioning
    already carries one (TextEncodeQwenImageEdit with a VAE, a ReferenceLatent node): a second copy would change
    the edit. The note warns when such a reference has another size than the output (zoom / pixel shift); sizes in
    pixels at ``factor`` px per latent cell."""
    existing = [ref for entry in conditioning for ref in entry[1].get("reference_latents") or []]
    if not existing:
        return node_helpers.conditioning_set_values(conditioning, {"reference_latents": [reference]}, append=True), "added"
    if any(tuple(ref.shape[-2:]) != tuple(reference.shape[-2:]) for ref in existing):
        sizes = sorted({pixel_size(ref, factor) for ref in existing})
        return conditioning, (f"already there, but {', '.join(sizes)} px, not the output's "
                              f"{pixel_size(reference, factor)}: expect zoom/shift (encode the "
                              "prompt without a VAE and let this node add the reference)")
    return conditioning, "already there"


# Conditioning options that belong to the text that produced them; everything else (guidance, reference
# latents, timestep ranges) is carried over to the re-encoded instruction.
_TEXT_BOUND_OPTIONS = ("pooled_output", "attention_mask")


def reencode(clip, model, text: str, source_image, positive):
    """The enriched instruction encoded the way the model's own edit node encodes prompts, with the source image as
    vision input and no VAE (the reference latent is added separately): Mage-Flow TextEncodeMageFlowEdit, LongCat
    TextEncodeQwenImageEdit (ComfyUI's LongCat Image Edit blueprint), Qwen-Image TextEncodeQwenImageEditPlus; other
    models (Flux Kontext, FLUX.2) as plain text. Options of ``positive`` are carried over."""
    base = model.model
    if isinstance(base, comfy.model_base.MageFlow) and source_image is not None:  # a QwenImage: before it
        from comfy_extras.nodes_mage import TextEncodeMageFlowEdit

        encoded = TextEncodeMageFlowEdit.execute(clip, text, vae=None, images={"image_1": source_image}).args[0]
    elif isinstance(base, comfy.model_base.LongCatImage) and source_image is not None:
        from comfy_extras.nodes_qwen import TextEncodeQwenImageEdit

        encoded = TextEncodeQwenImageEdit.execute(clip, text, vae=None, image=source_image).args[0]
    elif isinstance(base, comfy.model_base.QwenImage) and source_image is not None:
        from comfy_extras.nodes_qwen import TextEncodeQwenImageEditPlus

        encoded = TextEncodeQwenImageEditPlus.execute(clip, text, vae=None, image1=source_image).args[0]
    else:
        encoded = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    carried = {k: v for k, v in positive[0][1].items() if k not in _TEXT_BOUND_OPTIONS} if positive else {}
    return [[tensor, {**carried, **options}] for tensor, options in encoded]


def directives_text(directives) -> str:
    return Decomposition.from_dict(directives).enriched_instruction


def format_report(**fields) -> str:
    return "\n".join(f"{key}: {value}" for key, value in fields.items())


def model_sampling_note(model) -> str:
    sampling = model.get_model_object("model_sampling")
    parts = ["+".join(base.__name__ for base in type(sampling).__bases__) or type(sampling).__name__]
    for name in ("shift", "multiplier"):
        value = getattr(sampling, name, None)
        if value is not None:
            parts.append(f"{name} {float(value):.4g}")
    return ", ".join(parts)


# ---------------------------------------------------------------- nodes

_DIRECTIVES_TOOLTIP = ("Optional CogniEdit DIRECTIVES (Instruction Decompose, Token Focus). A focus patch they "
                       "carry is applied to a clone of the model; without one the result equals core sampling.")


class CogniEditGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditGuider",
            display_name="CogniEdit Guider",
            category="CogniEdit/sampling",
            description="A CFG guider for SamplerCustomAdvanced that applies the focus patch carried by CogniEdit "
            "DIRECTIVES. Without directives it is exactly core CFG Guider.",
            inputs=[
                io.Model.Input("model", tooltip="The edit model (Qwen-Image-Edit, Flux Kontext)."),
                io.Conditioning.Input("positive", tooltip="Instruction conditioning, with the reference latent "
                                      "(ReferenceLatent or TextEncodeQwenImageEdit with a VAE)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (unused when cfg is 1)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; 1 skips the negative pass."),
                Directives.Input("directives", optional=True, tooltip=_DIRECTIVES_TOOLTIP),
            ],
            outputs=[io.Guider.Output(tooltip="For SamplerCustomAdvanced: CFG guidance with the focus patch of the directives, if any.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, directives=None) -> io.NodeOutput:
        return io.NodeOutput(make_guider(model, positive, negative, cfg, directives))


class CogniEditSDESampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditSDESampler",
            display_name="CogniEdit SDE Sampler",
            category="CogniEdit/sampling",
            description="The flow-matching sampler the CogniEdit trainer rolls out with, for SamplerCustomAdvanced: "
            "eta 0 is deterministic Euler (identical to core euler), eta > 0 the Flow-GRPO SDE.",
            inputs=[
                io.Float.Input("eta", default=0.0, min=0.0, max=2.0, step=0.01,
                               tooltip="SDE noise level. 0 = deterministic Euler ODE (same result as core euler); "
                               "the trainer's rollouts use about 0.7. The SDE noise is seeded from the noise seed + 1."),
            ],
            outputs=[io.Sampler.Output(tooltip="Flow-matching Euler (eta 0) or Flow-GRPO SDE (eta > 0) steps, the step math the trainer uses.")],
        )

    @classmethod
    def execute(cls, eta) -> io.NodeOutput:
        return io.NodeOutput(flow_sampler(eta))


class CogniEditSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditSampler",
            display_name="CogniEdit Sampler",
            category="CogniEdit/sampling",
            description="All-in-one edit sampler: encodes the source image at its own size (32-px aligned, no "
            "resize), adds it as the model's reference latent, and samples with core machinery (progress bar, "
            "previews). Output size = the source cropped (align crop) or padded (align pad) to a multiple of 32 px. "
            "Focus off: same result as KSampler (euler, chosen scheduler).",
            inputs=[
                io.Model.Input("model", tooltip="The edit model (Qwen-Image-Edit, Flux Kontext), with LoRA if any."),
                io.Conditioning.Input("positive", tooltip="Instruction conditioning. If it already carries a "
                                      "reference latent, no second one is added."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (unused when cfg is 1)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed and settings give the same latent."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; 1 skips the negative pass (Flux Kontext "
                               "uses 1 with FluxGuidance)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1 = generate from noise guided by the reference; below 1 starts from the "
                               "noised source latent (BasicScheduler semantics)."),
                io.Float.Input("eta", default=0.0, min=0.0, max=2.0, step=0.01,
                               tooltip="0 = deterministic Euler ODE; > 0 = Flow-GRPO SDE noise level (seeded "
                               "from seed + 1)."),
                io.Combo.Input("scheduler", options=SCHEDULERS, default="simple",
                               tooltip="Sigma schedule from the model's own model_sampling (shift included), as "
                               "BasicScheduler. Flux2Scheduler: FLUX.2's resolution-dependent schedule (ComfyUI's "
                               "Flux2Scheduler at the output size), what the FLUX.2 templates use."),
                io.Combo.Input("align", options=list(ALIGN_MODES), default="crop",
                               tooltip="How a source image whose sides are not multiples of 32 px is aligned, "
                               "never resampled, anchored top-left: crop drops up to 31 px at the right/bottom, "
                               "pad repeats the last row/column."),
                io.Image.Input("source_image", optional=True,
                               tooltip="The image to edit; encoded with the vae at its own size."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE, needed with source_image."),
                io.Latent.Input("source_latent", optional=True,
                                tooltip="The image to edit as a LATENT (instead of source_image + vae), used as given."),
                Directives.Input("directives", optional=True, tooltip=_DIRECTIVES_TOOLTIP + " With a clip, "
                                 "the enriched instruction replaces the positive prompt."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder used to re-encode the directives' "
                              "enriched instruction (Qwen-Image, Mage-Flow, LongCat: with the source image as vision "
                              "input, as their edit nodes do)."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The edited latent, the size of the 32-px-aligned source."),
                io.String.Output(display_name="report", tooltip="Seed, steps, sigmas, shift, size, focus."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, seed, steps, cfg, denoise, eta, scheduler="simple", align="crop",
                source_image=None, vae=None, source_latent=None, directives=None, clip=None) -> io.NodeOutput:
        latent, source_note = source_latent_of(model, source_image, vae, source_latent, align)
        reference = latent["samples"]

        prompt_note = "positive as given"
        if directives is not None:
            if clip is not None:
                positive = reencode(clip, model, directives_text(directives), source_image, positive)
                prompt_note = "re-encoded from the directives' enriched instruction"
            else:
                prompt_note = "positive as given (connect a clip to re-encode the enriched instruction)"
        factor = pixels_per_latent(model)
        positive, ref_pos = with_reference(positive, reference, factor)
        negative, ref_neg = with_reference(negative, reference, factor)

        guider = make_guider(model, positive, negative, cfg, directives)
        sigmas = scheduled_sigmas(guider.model_patcher, scheduler, steps, denoise, reference, factor)
        noise = nodes_custom_sampler.Noise_RandomNoise(seed)
        output = nodes_custom_sampler.SamplerCustomAdvanced.execute(noise, guider, flow_sampler(eta), sigmas,
                                                                    latent).args[0]

        size = tuple(output["samples"].shape)
        report = format_report(
            node="CogniEdit Sampler",
            model=type(model.model).__name__,
            size=f"latent {list(size)} = {pixel_size(output['samples'], factor)} px; {source_note}",
            seed=seed, steps=steps, cfg=cfg, denoise=denoise,
            scheduler=scheduler + (f" at {pixel_size(reference, factor)} px" if scheduler == FLUX2_SCHEDULER else ""),
            sampler=f"eta {eta} ({'SDE, noise seed ' + str(sde_seed(seed)) if eta > 0 else 'Euler ODE'})",
            sigmas=(f"{sigmas[0].item():.4f} -> {sigmas[-1].item():.4f} ({len(sigmas) - 1} steps)"
                    if len(sigmas) else "none (denoise 0: source returned)"),
            model_sampling=model_sampling_note(guider.model_patcher),
            reference=f"positive {ref_pos}; negative {ref_neg}",
            prompt=prompt_note,
            focus=guider.focus,
        )
        applied = applied_focus(guider.model_patcher)  # the focus patch's tally of this run: read after sampling
        if applied:
            report += "\nfocus applied: " + "\n".join(applied)
        return io.NodeOutput(output, report)


def scheduled_sigmas(model, scheduler: str, steps: int, denoise: float, latent: torch.Tensor,
                     factor: int) -> torch.Tensor:
    """BasicScheduler's sigmas (same code path: the core node), or for FLUX2_SCHEDULER the core Flux2Scheduler's at
    the latent's pixel size (``factor`` px per cell), cut for denoise < 1 as BasicScheduler cuts its own: the last
    steps + 1 of int(steps / denoise)."""
    if scheduler != FLUX2_SCHEDULER:
        return nodes_custom_sampler.BasicScheduler.execute(model, scheduler, steps, denoise).args[0]
    if denoise <= 0.0:
        return torch.FloatTensor([])
    total = steps if denoise >= 1.0 else int(steps / denoise)
    height, width = latent.shape[-2] * factor, latent.shape[-1] * factor
    return nodes_flux.Flux2Scheduler.execute(total, width, height).args[0][-(steps + 1):]


NODES = [CogniEditSampler, CogniEditGuider, CogniEditSDESampler]
