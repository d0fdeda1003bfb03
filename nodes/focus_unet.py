"""Token Focus on SD-family UNets (SD1.x/SD2.x/SDXL, InstructPix2Pix): the ComfyUI side.

A UNet's text enters only through each transformer block's cross-attention (``attn2``), so the patch is an
``attn2`` replace per transformer block, keyed ``(input|middle|output, block, transformer index)`` exactly as
``BasicTransformerBlock`` looks it up; the math is cogniedit.focus.cross_attention. Token positions come from
ComfyUI's own CLIP tokenizer (start token, 77 per chunk, prompt weights resolved), so they are the positions
the UNet's context really has.

Only our own patches are ever replaced or removed. A block whose cross-attention another node already replaced
(IPAdapter and the like) is left to that node and named in the report: the replace signature cannot chain.
"""

from __future__ import annotations

import functools

import comfy.ldm.modules.attention as comfy_attention
import comfy.sd1_clip

from ..cogniedit.focus.bias import block_active, parse_blocks
from ..cogniedit.focus.cross_attention import make_cross_attention_patch
from ..cogniedit.focus.spans import token_sequence_spans

PATCH_NAME = "attn2"


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """ComfyUI's SD1 CLIP tokenizer (its own files, offline). SD2 and SDXL put their tokens at the same
    positions (only the padding id differs), so one tokenizer serves the whole family."""
    return comfy.sd1_clip.SDTokenizer()


def clip_spans(prompt: str, phrases: list[str]):
    """FocusSpans of the phrases in the prompt's CLIP token sequence (all 77-token chunks, flattened)."""
    tokenizer = clip_tokenizer()
    chunks = tokenizer.tokenize_with_weights(prompt)
    ids = [token if isinstance(token, int) else None for chunk in chunks for token, *_ in chunk]

    def encode(phrase):
        return tokenizer.tokenizer(phrase)["input_ids"][1:-1]  # drop start and end tokens

    return token_sequence_spans(ids, phrases, encode)


def attn2_keys(unet) -> list[tuple]:
    """Every cross-attention site of a ComfyUI UNetModel, in the order the UNet runs them."""
    keys = []
    for name, blocks in (("input", unet.input_blocks), ("middle", [unet.middle_block]),
                         ("output", unet.output_blocks)):
        for number, block in enumerate(blocks):
            for layer in block:
                for index, transformer in enumerate(getattr(layer, "transformer_blocks", [])):
                    if getattr(transformer, "attn2", None) is not None:
                        keys.append((name, number, index))
    return keys


def host_attention(q, k, v, heads, mask=None, **kwargs):
    """The call CrossAttention.forward itself makes (looked up at call time, like the layer does)."""
    if mask is None:
        return comfy_attention.optimized_attention(q, k, v, heads, **kwargs)
    return comfy_attention.optimized_attention_masked(q, k, v, heads, mask, **kwargs)


def remove_unet_focus(transformer_options: dict) -> dict:
    """transformer_options without our attn2 patches (a copy; foreign patches kept)."""
    replaces = transformer_options.get("patches_replace", {})
    attn2 = {k: p for k, p in replaces.get(PATCH_NAME, {}).items() if not getattr(p, "cogniedit_focus", False)}
    if PATCH_NAME not in replaces:
        return transformer_options
    replaces = {k: v for k, v in replaces.items() if k != PATCH_NAME}
    if attn2:
        replaces[PATCH_NAME] = attn2
    out = dict(transformer_options, patches_replace=replaces)
    if not replaces:
        out.pop("patches_replace")
    return out


def selected_keys(model, blocks: str) -> list[tuple]:
    """The cross-attention sites a block spec selects (indices count the sites in run order)."""
    keys, spec = attn2_keys(model.model.diffusion_model), parse_blocks(blocks)
    return [key for position, key in enumerate(keys) if block_active(position, spec, None, len(keys))]


def _is_foreign(model, key) -> bool:
    taken = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get(PATCH_NAME, {})
    return key in taken and not getattr(taken[key], "cogniedit_focus", False)


def foreign_blocks(model, blocks: str) -> list[tuple]:
    """Selected sites whose attn2 another node already replaced (the replace signature cannot chain)."""
    return [key for key in selected_keys(model, blocks) if _is_foreign(model, key)]


def apply_unet_focus(patched, plan, probe=None, tally=None) -> None:
    """Install the cross-attention patch on the selected sites of a clone (ours removed first by the caller);
    ``tally`` counts what the patches apply while sampling."""
    for key in selected_keys(patched, plan.blocks):
        if _is_foreign(patched, key):
            continue
        patch = make_cross_attention_patch([plan.tokens.entry], plan.strength, host_attention, mode=plan.mode,
                                           schedule=plan.schedule, cond_only=plan.cond_only, probe=probe,
                                           block_name=key, tally=tally)
        patched.set_model_attn2_replace(patch, *key)
