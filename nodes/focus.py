"""CogniEdit Token Focus: MODEL -> a patched MODEL clone whose image tokens attend more to the focus phrases.

The adapter only maps ComfyUI objects onto the host-free core (cogniedit.focus): phrases -> token positions
(spans.py), the attention override (override.py), the learned relocation (learned.py) and the weights-file
checks (weights_file.py). What it adds is the ComfyUI plumbing:

* a keyed DIFFUSION_MODEL wrapper that records the DiT's text length (``context.shape[1]``) in
  ``transformer_options`` (the attention override never sees it otherwise);
* ``transformer_options["optimized_attention_override"]`` chained with any override already set;
* learned mode: ``("dit", "double_block", i)`` replace patches that write the learned soft tokens into the
  text stream and bias that block's attention towards the predicted window, chained with earlier patches;
* SD-family UNets (InstructPix2Pix, SD1.x/2.x/SDXL): ``attn2`` replace patches (nodes/focus_unet.py);
* FLUX.2 dev: the Mistral-3 tokenizer read from the connected CLIP (nodes/tekken_clip.py).

Everything goes on a clone. Re-applying (the node twice in a chain) first takes our own patches off, so it
replaces rather than stacks; an override or block patch someone else set is kept and called through.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import comfy.patcher_extension
from comfy_api.latest import io

from ..cogniedit.decompose.types import Decomposition
from ..cogniedit.focus.attention_maps import phrase_entries
from ..cogniedit.focus.bias import FocusSchedule, parse_blocks, select_blocks
from ..cogniedit.focus.learned import LearnedFocus, count_blocks, text_hidden_size
from ..cogniedit.focus.override import TXT_LEN_KEY, FocusProbe, FocusTally, active_samples, make_attention_override
from ..cogniedit.focus.spans import phrase_spans
from ..cogniedit.focus.text_layout import layout_for
from ..cogniedit.focus.weights_file import FocusWeightsError, base_model_hash, check_focus_fit, learned_focus_from
from ..cogniedit.text.tokenizer import load_qwen25_tokenizer
from .common import FOCUS_PATCH_KEY, TALLY_ATTRIBUTE, capped
from .focus_maps import draw_maps, maps_inputs
from .focus_unet import apply_unet_focus, attn2_keys, clip_spans, foreign_blocks, remove_unet_focus
from .tekken_clip import clip_tekken_tokenizer
from .types import Directives, FocusWeights

PATCH_KEY = "cogniedit_focus"
DIFFUSION_MODEL = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
OUTER_SAMPLE = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
REPORT_PHRASES, REPORT_SPANS, REPORT_WARNINGS = 12, 3, 8  # the report lists this many, then "... and N more"
MODES = {"training_free_bias": "bias", "value_scale": "value", "learned": "learned"}
LAYOUTS = ["auto", "qwen_image", "qwen_image_edit", "flux", "flux2_klein", "flux2_dev", "longcat", "mage_flow",
           "sd_clip"]
LAYOUT_OF_FAMILY = {"qwen_image": "qwen_image_edit", "flux": "flux", "sd_unet": "sd_clip", "longcat": "longcat",
                    "mage_flow": "mage_flow"}
COMFY_ROOT = Path(comfy.patcher_extension.__file__).resolve().parents[1]
# FLUX.2's DiT does not say which encoder feeds it; its text width does (3 stacked hidden layers of the encoder)
FLUX2_ENCODERS = {7680: "klein (Qwen3 4B)", 12288: "klein (Qwen3 8B)", 15360: "dev (Mistral-3 24B)"}
FLUX2_LAYOUTS = ("flux2_klein", "flux2_dev")
# ComfyUI 0.33 families whose text is not the head of a joint sequence: refused with the reason, not biased wrongly
UNHANDLED_LAYOUTS = {
    "JoyImage": "puts the text after the image tokens (joint sequence [image | text])",
    "HunyuanImage21": "puts the text after the image tokens (flipped image/text order)",
    "HunyuanVideo": "puts the text after the image tokens (flipped image/text order)",
    "Kandinsky5": "attends to the text through cross-attention inside its own blocks",
    "Omnigen2": "runs one single-stream sequence whose text layout Token Focus does not model yet",
    "Lumina2": "runs one single-stream sequence whose text layout Token Focus does not model yet",
    "HiDream": "feeds several text encoders into its blocks in a layout Token Focus does not model yet",
}


# ---------------------------------------------------------------- model family and tokenizers

def model_family(model) -> str:
    """"qwen_image", "flux", "flux2", "longcat", "mage_flow" or "sd_unet" from the model's classes; a clear error
    naming the reason for anything else."""
    import comfy.model_base as model_base
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

    base, dit = model.model, model.model.diffusion_model
    for kind, family in ((model_base.Flux2, "flux2"), (model_base.LongCatImage, "longcat"),
                         (model_base.MageFlow, "mage_flow")):
        if isinstance(base, kind):
            return family
    if isinstance(dit, QwenImageTransformer2DModel):
        return "qwen_image"
    if isinstance(dit, Flux):
        return "flux"
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    if isinstance(dit, UNetModel):
        return "sd_unet"
    name = next((cls.__name__ for cls in type(base).__mro__ if cls.__name__ in UNHANDLED_LAYOUTS), None)
    why = f" ({name} {UNHANDLED_LAYOUTS[name]})" if name else ""
    raise ValueError(f"Token Focus is not supported for this model type ({type(base).__name__}){why}; it works on "
                     "Qwen-Image(-Edit), Mage-Flow, Flux (Kontext), FLUX.2 klein and LongCat-Image(-Edit) DiTs and "
                     "SD-family UNets (e.g. InstructPix2Pix).")


@functools.lru_cache(maxsize=1)
def t5_tokenizer():
    """ComfyUI's own T5 tokenizer files (what Flux's T5-XXL text encoder tokenizes with), offline."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(COMFY_ROOT / "comfy" / "text_encoders" / "t5_tokenizer"))


def flux2_layout(model) -> str:
    """FLUX.2: klein's Qwen3 layout or dev's Mistral-3 one, told from the DiT's text width; unknown widths refused."""
    width = model.model.diffusion_model.txt_in.in_features
    encoder = FLUX2_ENCODERS.get(width)
    if encoder is None:
        raise ValueError(f"this FLUX.2 model's text width is {width}, none of the known encoders' ("
                         f"{', '.join(f'{w} = {name}' for w, name in FLUX2_ENCODERS.items())}); choose layout "
                         "flux2_klein if it is fed by a Qwen3 encoder, flux2_dev if by Mistral-3")
    return "flux2_dev" if encoder.startswith("dev") else "flux2_klein"


def resolve_layout(layout: str, family: str, model=None) -> str:
    if layout == "auto":
        # Qwen: count from the end, which is right for Qwen-Image and -Edit alike (no vision-token count needed)
        return flux2_layout(model) if family == "flux2" else LAYOUT_OF_FAMILY[family]
    if family == "qwen_image":
        fits = layout.startswith("qwen_image")
    elif family == "flux2":
        fits = layout in FLUX2_LAYOUTS
    else:
        fits = layout == LAYOUT_OF_FAMILY[family]
    if not fits:
        raise ValueError(f"layout {layout!r} does not fit this model ({family}); choose 'auto'")
    return layout


# ---------------------------------------------------------------- phrases -> positions

def split_phrases(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n]", text or "") if p.strip()]


def directives_text(directives) -> tuple[str, list[str]]:
    """(enriched instruction, focus phrase texts) of a DIRECTIVES dict."""
    decomposition = Decomposition.from_dict(directives)
    return decomposition.enriched_instruction, [p.text for p in decomposition.focus]


@dataclass
class FocusTokens:
    """Positions handed to the core override, plus what to report. ``entry`` is one sample's positions:
    a FocusSpans (positions from the start + own length), or a plain list (negative = from the end)."""

    entry: Any
    count: int
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prompt_range: tuple[int, int] | None = None  # (start, length) of the whole prompt, start as in entry
    phrases: tuple = ([], [])  # (names, one entry per phrase, as entry): the attention maps' phrases


def span_lines(spans, shift: int = 0) -> list[str]:
    """One bounded line per phrase ("'red' -> tokens 3..3, 17..17 ... and 5 more"), at most REPORT_PHRASES."""
    by_phrase: dict[str, list[str]] = {}
    for span in spans:
        by_phrase.setdefault(span.phrase, []).append(f"{span.start + shift}..{span.end - 1 + shift}")
    lines = [f"{phrase[:60]!r} -> tokens {', '.join(capped(ranges, REPORT_SPANS))}"
             for phrase, ranges in by_phrase.items()]
    return capped(lines, REPORT_PHRASES)


def counts_from_end(layout: str) -> bool:
    """Whether a layout's positions count from the end of the text (the UNet's CLIP layout has no text_layout)."""
    return layout != "sd_clip" and layout_for(layout).anchor == "end"


def layout_tokenizer(layout: str, clip=None):
    """The tokenizer the layout's encoder uses: ComfyUI's T5 files (Flux), FLUX.2 dev's Mistral-3 tekken tokenizer
    from the CLIP that encodes the prompt, ComfyUI's qwen25_tokenizer files for every other DiT encoder (Qwen2.5-VL,
    Qwen3, Qwen3-VL); None for the UNets' CLIP, whose ids come from ComfyUI's own tokenizer (focus_unet.py)."""
    if layout == "sd_clip":
        return None
    if layout == "flux":
        return t5_tokenizer()
    if layout == "flux2_dev":
        return clip_tekken_tokenizer(clip, layout_for(layout))
    return load_qwen25_tokenizer(comfyui_root=COMFY_ROOT)


def focus_tokens(prompt: str, phrases: list[str], layout: str, tokenizer=None) -> FocusTokens:
    """The plan's positions; ``tokenizer``: the layout's (layout_tokenizer), resolved here when not given."""
    if layout == "sd_clip":
        # ComfyUI's CLIP positions; a FocusSpans entry also focuses the conditioning's repeated 77-token copies
        found = clip_spans(prompt, phrases)  # no attention maps on UNets: no phrase entries
        return FocusTokens(found, len(found.positions), span_lines(found.spans), list(found.warnings))
    tokenizer = tokenizer if tokenizer is not None else layout_tokenizer(layout)
    # Qwen-Image-Edit counts from the end: its positions are Qwen-Image's, whatever the vision tokens before
    built = "qwen_image" if layout == "qwen_image_edit" else layout
    found = phrase_spans(prompt, phrases, tokenizer, built)
    whole = phrase_spans(prompt, [prompt], tokenizer, built)
    from_end = counts_from_end(layout)  # resolved against the text length the DiT receives
    shift = -found.text_len if from_end else 0
    lines = span_lines(found.spans, shift)
    if layout != "flux" and not from_end:
        entry = found  # FocusSpans: the core also focuses ComfyUI's repeated copies of a short conditioning
    elif from_end:
        entry = found.from_end()
    else:
        # Flux/T5: plain positions. The T5 conditioning is padded to 256 tokens, which is no repetition.
        entry = found.positions
    span = whole.spans[0] if whole.spans else None
    prompt_range = None if span is None else (span.start + shift, span.end - span.start)
    anchor = "end" if from_end else "start" if layout == "flux" else "spans"  # as entry is built above
    return FocusTokens(entry, len(found.positions), lines, list(found.warnings), prompt_range,
                       phrase_entries(found, anchor))


# ---------------------------------------------------------------- focus weights (learned mode)

def weights_parts(focus_weights) -> tuple[dict, dict]:
    """(tensors, metadata) of a FOCUS_WEIGHTS value (the Loader's core tuple or its dict form)."""
    if isinstance(focus_weights, tuple) and len(focus_weights) == 2:
        return focus_weights
    if isinstance(focus_weights, dict) and "tensors" in focus_weights:
        return focus_weights["tensors"], focus_weights.get("metadata") or {}
    raise ValueError(f"focus_weights must come from the CogniEdit Loader, got {type(focus_weights).__name__}")


# the ShapeEdit editor's DiT is a (narrow) Qwen-Image-Edit transformer: its focus files fit that family
FITTING_FAMILIES = {"qwen_image": ("qwen_image", "qwen_image_edit", "shapeedit"), "flux": ("flux_kontext",),
                    "flux2": ("flux2_klein",), "longcat": ("longcat_image",), "mage_flow": ("mage_flow",)}


def learned_module(focus_weights, family: str, dit) -> tuple[LearnedFocus, Any]:
    """The checked LearnedFocus and the projection of its soft tokens into the DiT's text stream (or None)."""
    tensors, meta = weights_parts(focus_weights)
    check_focus_fit(meta, "the focus weights", family, base_model_hash(dit),
                    accepted_families=FITTING_FAMILIES.get(family, ()))
    module = learned_focus_from(tensors, meta, "the focus weights")
    counts = count_blocks(dit)
    total = counts.get("double", 0) or counts.get("single", 0)  # the learned blocks index the main stack
    if max(module.block_indices) >= total:
        raise FocusWeightsError(f"the focus weights act on blocks {module.block_indices}, but this model has "
                                f"{total}; load the focus weights trained for this model")
    if module.hidden_size == text_hidden_size(dit):
        return module, None
    txt_in = dit.txt_in  # soft tokens in the text encoder's width: project them as the DiT projects its text
    if module.hidden_size != txt_in.in_features:
        raise FocusWeightsError(f"focus soft tokens have width {module.hidden_size}; this model's text stream is "
                                f"{txt_in.out_features} wide ({txt_in.in_features} before txt_in)")
    norm = getattr(dit, "txt_norm", None)  # Qwen-Image: txt_in(txt_norm(.)), as the paper's code does

    def project(soft):
        soft = soft.to(txt_in.weight.dtype)
        return txt_in(norm(soft) if norm is not None else soft)
    return module, project


# ---------------------------------------------------------------- the patch

@dataclass
class FocusPlan:
    """Everything the patch needs, resolved once in execute (also reused by the DIRECTIVES focus_patch)."""

    tokens: FocusTokens
    strength: float
    mode: str
    blocks: str = "all"
    schedule: FocusSchedule = field(default_factory=FocusSchedule)
    cond_only: bool = True
    learned: LearnedFocus | None = None
    project: Any = None
    family: str = ""

    @property
    def is_identity(self) -> bool:
        return self.strength == 0 or self.tokens.count == 0 and self.learned is None


def record_text_length(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: put ``context.shape[1]`` into (a copy of) the transformer_options."""
    args = list(args)
    context = args[2] if len(args) > 2 else kwargs.get("context")
    if "transformer_options" in kwargs:
        kwargs["transformer_options"] = dict(kwargs["transformer_options"], **{TXT_LEN_KEY: context.shape[1]})
    else:  # Qwen-Image and Flux pass it as the last positional argument
        last = max(i for i, a in enumerate(args) if isinstance(a, dict))
        args[last] = dict(args[last], **{TXT_LEN_KEY: context.shape[1]})
    return executor(*args, **kwargs)


record_text_length.cogniedit_focus = True


def learned_block_patch(plan: FocusPlan, prev_patch, probe: FocusProbe | None, tally: FocusTally, maps=None):
    """A ("dit", "double_block", i) replace: learned soft tokens into the text stream, attention bias onto the
    predicted window for this block only (an override in a copy of transformer_options: nothing to restore)."""
    module, devices = plan.learned, {}
    start, length = plan.tokens.prompt_range

    def patch(args, extra):
        to = args["transformer_options"]
        forward = prev_patch if prev_patch is not None else (lambda a, e: e["original_block"](a))
        txt = args["txt"]
        text_len = txt.shape[1]
        active = active_samples(txt.shape[0], to.get("cond_or_uncond"), plan.cond_only)
        selected = any(active) and plan.schedule.active(to.get("sigmas"), to.get("sample_sigmas"))
        text_start = max(start + text_len if start < 0 else start, 0)  # Qwen(-Edit) counts from the end
        inside = max(min(length, text_len - text_start), 0)  # instruction tokens within this text
        tally.record(text_len, selected, inside)
        if not selected or inside == 0:  # e.g. the uncond pass alone, or an instruction outside the text: exact
            if maps is not None:  # the maps still see this block's attention, unbiased
                override = make_attention_override([[]], 0.0, "all", None, to.get("optimized_attention_override"),
                                                   maps=maps)
                args = dict(args, transformer_options=dict(to, optimized_attention_override=override,
                                                           **{TXT_LEN_KEY: text_len}))
            return forward(args, extra)
        rows = torch.tensor(active, device=txt.device)
        if txt.device not in devices:
            devices[txt.device] = module.to(txt.device)
        new_txt, window = devices[txt.device](txt, to.get("block_index"), text_start, inside, project=plan.project)
        new_txt = torch.where(rows[:, None, None], new_txt, txt)
        window = window.float() * rows[:, None]
        override = make_attention_override(list(window), plan.strength, "all", None,
                                           to.get("optimized_attention_override"), mode="bias", cond_only=False,
                                           probe=probe, maps=maps)
        options = dict(to, optimized_attention_override=override, **{TXT_LEN_KEY: text_len})
        return forward(dict(args, txt=new_txt, transformer_options=options), extra)

    patch.cogniedit_focus = True
    patch.cogniedit_prev = prev_patch
    return patch


def remove_focus_patch(model) -> None:
    """Take this node's patches off a clone, restoring whatever they chained to."""
    model.remove_wrappers_with_key(DIFFUSION_MODEL, PATCH_KEY)
    model.remove_wrappers_with_key(OUTER_SAMPLE, PATCH_KEY)
    to = remove_unet_focus(dict(model.model_options.get("transformer_options", {})))
    override = to.get("optimized_attention_override")
    while getattr(override, "cogniedit_focus", False):
        override = getattr(override, "cogniedit_prev", None)
    if override is None:
        to.pop("optimized_attention_override", None)
    else:
        to["optimized_attention_override"] = override
    dit_patches = dict(to.get("patches_replace", {}).get("dit", {}))
    for key, patch in list(dit_patches.items()):
        while getattr(patch, "cogniedit_focus", False):
            patch = getattr(patch, "cogniedit_prev", None)
        if patch is None:
            dit_patches.pop(key)
        else:
            dit_patches[key] = patch
    if "patches_replace" in to:
        to["patches_replace"] = dict(to["patches_replace"], dit=dit_patches)
        if not dit_patches:
            to["patches_replace"].pop("dit")
    model.model_options["transformer_options"] = to


def planned_tally(plan: FocusPlan) -> FocusTally:
    """The run-time counter for a plan: learned focus acts on the instruction's tokens, the others on the phrases'."""
    planned = plan.tokens.prompt_range[1] if plan.learned is not None else plan.tokens.count
    return FocusTally(planned_tokens=planned)


def count_each_run(tally: FocusTally, label: str):
    """OUTER_SAMPLE wrapper: reset the tally when a sampling run starts (a cached MODEL is sampled again and
    again), log what was applied when it ends, loudly when nothing was. The CogniEdit Sampler reads the same tally
    into its report; after a core sampler the log is where it shows."""
    def count_run(executor, *args, **kwargs):
        tally.reset()
        output = executor(*args, **kwargs)
        line, warnings = tally.summary()
        logging.info("CogniEdit Token Focus (%s): %s", label, line)
        for warning in warnings:
            logging.warning("CogniEdit Token Focus (%s): %s", label, warning)
        return output

    setattr(count_run, TALLY_ATTRIBUTE, tally)
    count_run.cogniedit_focus = True
    return count_run


def apply_plan(model, plan: FocusPlan, probe: FocusProbe | None = None, maps=None):
    """A clone of ``model`` with the focus patch (only our own earlier patch replaced) and its run-time tally.
    Identity plans give an unpatched clone (bit-identical sampling) unless a probe or an attention-map recorder
    (``maps``: the probe run of focus_maps.py, which logs no tally) asks to measure them."""
    patched = model.clone()
    remove_focus_patch(patched)
    if plan.is_identity and probe is None and maps is None:
        return patched
    tally = planned_tally(plan)
    if maps is None:
        patched.add_wrapper_with_key(OUTER_SAMPLE, PATCH_KEY, count_each_run(tally, plan_label(plan)))
    if plan.family == "sd_unet":
        apply_unet_focus(patched, plan, probe, tally)
        return patched
    patched.add_wrapper_with_key(DIFFUSION_MODEL, PATCH_KEY, record_text_length)
    to = patched.model_options["transformer_options"]
    if plan.mode == "learned":
        replaces = dict(to.get("patches_replace", {}))
        dit_patches = dict(replaces.get("dit", {}))
        for index in plan.learned.block_indices:
            dit_patches[("double_block", index)] = learned_block_patch(
                plan, dit_patches.get(("double_block", index)), probe, tally, maps)
        replaces["dit"] = dit_patches
        to["patches_replace"] = replaces
        return patched
    prev = to.get("optimized_attention_override")
    override = make_attention_override([plan.tokens.entry], plan.strength, plan.blocks, plan.schedule, prev,
                                       mode=plan.mode, cond_only=plan.cond_only, probe=probe, tally=tally, maps=maps)
    override.cogniedit_prev = prev
    to["optimized_attention_override"] = override
    return patched


def plan_label(plan: FocusPlan) -> str:
    """Short name of a plan for the log and the sampler's report (what was planned, not what was applied)."""
    if plan.is_identity:
        return "off (strength 0 or no focus token)"
    what = f"{plan.tokens.prompt_range[1]} instruction tokens" if plan.learned is not None \
        else f"{plan.tokens.count} tokens"
    mode = next(name for name, internal in MODES.items() if internal == plan.mode)  # the name the node shows
    return f"{mode} x{plan.strength:g}, planned on {what}"


def describe(plan: FocusPlan, layout: str, family: str, block_warnings: list[str] = ()) -> str:
    lines = [f"model: {family}, layout: {layout}, mode: {plan.mode}, strength: {plan.strength:g}, "
             f"blocks: {plan.blocks[:60]}, steps: {plan.schedule.start_percent:g}-{plan.schedule.end_percent:g}, "
             f"cond only: {plan.cond_only}",
             f"tokens to focus: {plan.tokens.count}" + (" (positions counted from the end of the text the model "
                                                        "receives)" if counts_from_end(layout) else ""),
             "planned here; what sampling applied (attention calls biased, tokens hit) is counted while sampling: "
             "see the CogniEdit Sampler's report, or the ComfyUI log after a core sampler"]
    lines += [f"  {line}" for line in plan.tokens.lines]
    if plan.learned is not None:
        start, length = plan.tokens.prompt_range
        lines.append(f"learned focus: blocks {plan.learned.block_indices}, xi {plan.learned.xi}, "
                     f"window {plan.learned.window}, over the {length} instruction tokens from {start} (the "
                     "predictor picks the window; the phrases above are not used)")
        if plan.learned.gate is not None:  # a warm-started run's gate: how open the relocation is per block
            opening = ", ".join(f"{float(a):.3f}" for a in torch.sigmoid(plan.learned.gate.detach()))
            lines.append(f"learned focus gate (sigmoid, per block): {opening}")
    lines += [f"warning: {w}" for w in capped(list(block_warnings) + plan.tokens.warnings, REPORT_WARNINGS)]
    if plan.is_identity:
        lines.append("focus is off (strength 0 or no focus token): the MODEL is returned unpatched")
    return "\n".join(lines)


def describe_skipped(model, plan: FocusPlan) -> str:
    """Report lines for UNet blocks whose cross-attention another node already replaced (left alone)."""
    if plan.family != "sd_unet" or plan.is_identity:
        return ""
    skipped = foreign_blocks(model, plan.blocks)
    return "".join(f"\nwarning: cross-attention of block {key} was replaced by another node; focus leaves it alone"
                   for key in skipped)


class CogniEditTokenFocus(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CogniEditTokenFocus",
            display_name="CogniEdit Token Focus",
            category="CogniEdit/focus",
            description="Token Focus Relocation: patches a clone of the edit model so image tokens attend more to "
            "the focus phrases of the instruction (training-free logit bias or value scaling, or the learned "
            "relocation from a focus-weights file). Strength 0 returns the model unpatched. FLUX.2 dev needs the "
            "clip input (the CLIP that encodes the prompt: its Mistral-3 tokenizer places the phrases).",
            inputs=[
                io.Model.Input("model", tooltip="Qwen-Image(-Edit), Mage-Flow(-Edit), Flux (Kontext), FLUX.2 klein "
                               "and dev (dev: connect clip), LongCat-Image(-Edit) or an SD-family UNet "
                               "(InstructPix2Pix, SD1.x/SDXL: cross-attention, training-free modes only)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The exact text you encode (needed to find the tokens). Ignored when "
                                "directives are connected: their enriched instruction is used."),
                io.String.Input("phrases", multiline=True, default="",
                                tooltip="Focus phrases, comma or newline separated. Ignored with directives."),
                io.Combo.Input("layout", options=LAYOUTS, default="auto",
                               tooltip="How the prompt sits in the conditioning. auto: from the model (Qwen, "
                               "Mage-Flow, LongCat count tokens from the end of the text the model receives; Flux: T5 "
                               "order; FLUX.2 klein: its Qwen3 template from the start; FLUX.2 dev: its Mistral-3 "
                               "template from the end (FLUX.2's encoder is told from the text width); SD UNets: CLIP, "
                               "77 tokens per chunk)."),
                io.Combo.Input("mode", options=list(MODES), default="training_free_bias",
                               tooltip="training_free_bias: raise the attention logits of the focus tokens; "
                               "value_scale: scale their values; learned: the trained relocation (focus_weights)."),
                io.Float.Input("strength", default=0.0, min=0.0, max=20.0, step=0.05,
                               tooltip="Extra attention on the focus tokens as a multiple (1 = double). 0 = off "
                               "(the default: on the measured editor this bias did not improve edits; "
                               "docs/focus-study.md)."),
                io.String.Input("blocks", default="all",
                                tooltip="Blocks to patch: all, 0-9,12, last:9, or double:0-9;single:all (Flux). "
                                "SD UNets: cross-attention sites in run order (input, middle, output)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="First sampling step (as a fraction) with focus."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Sampling fraction where focus stops."),
                io.Boolean.Input("cond_only", default=True,
                                 tooltip="Focus the positive (cond) pass only; the negative pass stays exact."),
                Directives.Input("directives", optional=True,
                                 tooltip="CogniEdit Instruction Decompose output: its focus phrases and enriched "
                                 "instruction replace phrases and prompt."),
                FocusWeights.Input("focus_weights", optional=True,
                                   tooltip="From the CogniEdit Loader; needed for mode learned."),
                *maps_inputs(),
                # last: a saved workflow's links keep their input slots
                io.Clip.Input("clip", optional=True,
                              tooltip="The CLIP that encodes the prompt. Needed for FLUX.2 dev: its Mistral-3 "
                              "tokenizer is stored in the text-encoder file and read from this CLIP. Other models "
                              "ignore it."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="A patched clone of the model."),
                io.String.Output(display_name="report", tooltip="Tokens focused, settings, warnings."),
                Directives.Output(display_name="directives",
                                  tooltip="The directives with this focus patch attached, for the CogniEdit "
                                  "sampler/guider (use either this or the MODEL output, not both)."),
                io.Image.Output(display_name="attention_maps",
                                tooltip="Per focus phrase (rows): the image, where the image attends to the phrase "
                                "without focus, and with focus (needs maps_conditioning; docs/focus.md)."),
            ],
        )

    @classmethod
    def execute(cls, model, prompt="", phrases="", layout="auto", mode="training_free_bias", strength=0.0,
                blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True, directives=None,
                focus_weights=None, maps_conditioning=None, maps_latent=None, maps_image=None, maps_blocks="all",
                maps_start_percent=0.0, maps_end_percent=0.5, maps_steps=10, clip=None) -> io.NodeOutput:
        plan, report = build_plan(model, prompt, phrases, layout, mode, strength, blocks, start_percent,
                                  end_percent, cond_only, directives, focus_weights, clip)
        patched = apply_plan(model, plan)
        report += describe_skipped(model, plan)

        def focus_patch(target):
            return apply_plan(target, plan)

        focus_patch.description = plan_label(plan)
        out_directives = dict(directives or {}, **{FOCUS_PATCH_KEY: focus_patch})
        maps = draw_maps(model, plan, maps_conditioning, maps_latent, maps_image, maps_blocks, maps_start_percent,
                         maps_end_percent, maps_steps)
        return io.NodeOutput(patched, report, out_directives, maps)


def build_plan(model, prompt, phrases, layout, mode, strength, blocks, start_percent, end_percent, cond_only,
               directives=None, focus_weights=None, clip=None) -> tuple[FocusPlan, str]:
    """``clip``: the CLIP that encodes the prompt; read only where the tokenizer lives in it (FLUX.2 dev)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    family = model_family(model)
    layout = resolve_layout(layout, family, model)
    tokenizer = layout_tokenizer(layout, clip)  # first: a missing clip is named before anything else
    parse_blocks(blocks)  # a bad block spec fails here, with its message, not mid-sampling
    block_warnings = [] if MODES[mode] == "learned" else check_blocks(model, family, blocks)  # learned: the file's
    schedule = FocusSchedule(start_percent, end_percent)
    if directives is not None:
        prompt, phrase_list = directives_text(directives)
    else:
        phrase_list = split_phrases(phrases)
    if not prompt.strip():
        raise ValueError("prompt is empty: give the exact text you encode (or connect directives)")
    learned, project = None, None
    if MODES[mode] == "learned":
        if focus_weights is None:
            raise ValueError("mode 'learned' needs focus_weights: connect the CogniEdit Loader's focus_weights "
                             "output, or use training_free_bias")
        if family == "sd_unet":
            raise ValueError("mode 'learned' needs a DiT (Qwen-Image-Edit or Flux Kontext); on an SD-family UNet "
                             "use training_free_bias or value_scale")
        learned, project = learned_module(focus_weights, family, model.model.diffusion_model)
    tokens = focus_tokens(prompt, phrase_list, layout, tokenizer)
    if learned is not None and tokens.prompt_range is None:
        raise ValueError("the prompt has no tokens in the conditioning; learned focus needs the instruction text")
    plan = FocusPlan(tokens, float(strength), MODES[mode], blocks, schedule, bool(cond_only), learned, project, family)
    return plan, describe(plan, layout, family, block_warnings)


def model_blocks(model, family: str) -> dict:
    """Blocks per type as the host labels them in transformer_options: DiT {"double": n[, "single": m]}, a UNet's
    cross-attention sites in run order {None: n}."""
    if family == "sd_unet":
        return {None: len(attn2_keys(model.model.diffusion_model))}
    return count_blocks(model.model.diffusion_model)


def check_blocks(model, family: str, blocks: str) -> list[str]:
    """Refuse a block spec that selects no block of this model (focus would change nothing); clamp one that reaches
    past the last block, with a warning line naming the part beyond."""
    counts = model_blocks(model, family)
    selected, outside = select_blocks(blocks, counts)
    have = ", ".join(f"{n} {kind} blocks (0-{n - 1})" if kind else f"{n} cross-attention sites (0-{n - 1})"
                     for kind, n in counts.items())
    if not any(selected.values()):
        raise ValueError(f"blocks {blocks[:60]!r} select no block of this model ({family}: {have}); use 'all' or "
                         "indices within that range")
    if not outside:
        return []
    return [f"blocks {', '.join(capped(outside, 4))} are beyond this model's {have}: clamped, focus runs on the "
            "selected blocks that exist"]


NODES = [CogniEditTokenFocus]
