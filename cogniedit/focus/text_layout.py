"""Where the prompt's tokens sit in the text conditioning a DiT receives: one mechanism for every family.

ComfyUI's text encoders wrap the prompt in a chat template, cut part of it, pad, and the model may pad again before
the DiT sees it (``model_base.Flux2`` left-pads to 512 tokens). Rather than one special case per model, each
encoder is described by data (``TextLayout``: template, what the encoder cuts, how it pads, how it tokenizes) and
one builder rebuilds the encoder's output token by token, with each token's characters in the prompt.

Positions are then anchored where the layout is stable:

* ``end``: counted from the end of the encoder's output (negative offsets). Everything after the prompt (template
  tail, the encoder's own right padding) is known from the tokenizer, so whatever comes before it (vision tokens,
  "Picture N:" labels, the model's left padding) needs no count. The attention override resolves them against
  the text length it observes at run time (``transformer_options[TXT_LEN_KEY]``, recorded from the ``context``
  that reaches the DiT's forward), so the range comes from what the model actually receives;
* ``start``: counted from the first kept token where nothing of variable length precedes the prompt and nothing
  is padded in front of it (Qwen-Image's cut head, T5, FLUX.2 klein), so a prompt longer than what was encoded shows
  up as focus tokens outside the text (the run-time tally then says "FOCUS NOT APPLIED").

The tokenizer is the encoder's own: ComfyUI's qwen25_tokenizer files (Qwen2.5-VL, Qwen3, Qwen3-VL), its T5 files,
or for FLUX.2 dev the Mistral-3 tekken tokenizer stored in the text-encoder file (``cogniedit.text.tekken``).

Read from ComfyUI 0.33: ``comfy/text_encoders/{qwen_image,flux,longcat_image,mage_flow,qwen3vl}.py``,
``comfy/sd1_clip.py`` (start token, padding), ``comfy/model_base.py`` (``Flux2.extra_conds``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IM_START_ID = 151644
IM_END_ID = 151645
USER_ID = 872
NEWLINE_ID = 198
IMAGE_PAD_ID = 151655
QWEN_PAD_ID = 151643  # <|endoftext|>: ComfyUI's pad token for its Qwen encoders
MISTRAL_START_ID = 1  # <s>: ComfyUI's Mistral3Tokenizer puts it before the templated prompt

QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
KLEIN_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
# LongCat-Image-Edit: the edit template (with a vision block before the prompt); its head is cut, so the T2I
# template gives the same positions counted from the end
LONGCAT_PREFIX = ("<|im_start|>system\nAs an image editing expert, first analyze the content and attributes of "
                  "the input image(s). Then, based on the user's editing instructions, clearly and precisely "
                  "determine how to modify the given image(s), ensuring that only the specified parts are altered "
                  "and all other aspects remain consistent with the original(s).<|im_end|>\n<|im_start|>user\n"
                  + VISION_BLOCK)
LONGCAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MAGE_EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# FLUX.2 dev (comfy/text_encoders/flux.py Flux2Tokenizer.llama_template): Mistral-3's system prompt, then [INST]
FLUX2_DEV_TEMPLATE = (
    "[SYSTEM_PROMPT]You are an AI that reasons about image descriptions. You give structured responses focusing on "
    "object relationships, object\nattribution and actions without speculation.[/SYSTEM_PROMPT][INST]{}[/INST]"
)


@dataclass(frozen=True)
class TextLayout:
    """How one text encoder lays a prompt out in the conditioning (see the module docstring)."""

    name: str
    encoder: str  # for reports: the encoder and its tokenizer files
    template: str = "{}"  # tokenized as one string (ComfyUI's SDTokenizer does); "{}" = the prompt
    start_ids: tuple[int, ...] = ()  # put before the template's tokens by the encoder's tokenizer (Mistral's <s>)
    cut_head: bool = False  # ComfyUI's Qwen cut: drop through the 2nd <|im_start|> (+ "user\n")
    cut_tail: bool = False  # LongCat: drop from the last <|im_end|> on
    prompt_apart: tuple[str, str] | None = None  # (prefix, suffix) tokenized apart from the prompt (LongCat)
    quoted_chars: bool = False  # LongCat: quoted text tokenized one character at a time
    prompt_pad_to: int = 0  # LongCat: the prompt's own tokens padded (and cut) to this many
    pad_to: int = 0  # the encoder pads the whole sequence at the end to at least this many (Klein: 512)
    special_tokens: bool = False  # the tokenizer adds its own specials (T5: EOS)
    anchor: str = "end"


LAYOUTS = {
    "qwen_image": TextLayout("qwen_image", "Qwen2.5-VL (qwen25_tokenizer)", QWEN_IMAGE_TEMPLATE, cut_head=True,
                             anchor="start"),
    "qwen_image_edit": TextLayout("qwen_image_edit", "Qwen2.5-VL (qwen25_tokenizer)", QWEN_IMAGE_TEMPLATE,
                                  cut_head=True),
    "flux": TextLayout("flux", "T5-XXL (t5_tokenizer)", special_tokens=True, anchor="start"),
    # klein: nothing is cut and the encoder pads at the end to 512, so model_base.Flux2's left pad (to 512) never
    # applies: counted from the start, a prompt that is not what was encoded shows as tokens outside the text
    "flux2_klein": TextLayout("flux2_klein", "Qwen3 4B/8B (qwen25_tokenizer)", KLEIN_TEMPLATE, pad_to=512,
                              anchor="start"),
    # dev: start token, no end token, no encoder padding; model_base.Flux2 then left-pads the conditioning to 512,
    # so the prompt's place is known only from the end (only "[/INST]" follows it)
    "flux2_dev": TextLayout("flux2_dev", "Mistral-3 24B (tekken, stored in the text-encoder file)", FLUX2_DEV_TEMPLATE,
                            start_ids=(MISTRAL_START_ID,)),
    "longcat": TextLayout("longcat", "Qwen2.5-VL (qwen25_tokenizer)", cut_head=True, cut_tail=True,
                          prompt_apart=(LONGCAT_PREFIX, LONGCAT_SUFFIX), quoted_chars=True, prompt_pad_to=512),
    "mage_flow": TextLayout("mage_flow", "Qwen3-VL 4B (qwen25_tokenizer)", MAGE_EDIT_TEMPLATE, cut_head=True),
}

# LongCat's quotation rule (comfy/text_encoders/longcat_image.py): text between a matching pair of quotes is
# tokenized character by character; an apostrophe inside a word ("don't") is no quote
QUOTES = (("'", "'"), ('"', '"'), ("\u2018", "\u2019"), ("\u201c", "\u201d"))
QUOTED = re.compile("|".join(re.escape(a) + "[^" + re.escape(a + b) + "]*?" + re.escape(b) for a, b in QUOTES))
IN_WORD_APOSTROPHE = re.compile(r"(?<=[a-zA-Z])'(?=[a-zA-Z])")


def encode(tokenizer, text: str, add_special_tokens: bool = False):
    """(ids, character offsets) from a fast Hugging Face tokenizer."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    if "offset_mapping" not in enc:
        raise TypeError("the tokenizer gives no offset mapping; pass a fast (Rust-backed) Hugging Face tokenizer")
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def quotation_parts(prompt: str) -> list[tuple[int, int, bool]]:
    """(start, end, quoted) character ranges of the prompt, as LongCat's tokenizer splits it."""
    masked = IN_WORD_APOSTROPHE.sub("\0", prompt)  # same length: offsets stay the prompt's
    parts, at = [], 0
    for match in QUOTED.finditer(masked):
        if match.start() > at:
            parts.append((at, match.start(), False))
        parts.append((match.start(), match.end(), True))
        at = match.end()
    if at < len(prompt):
        parts.append((at, len(prompt), False))
    return parts


def prompt_tokens_apart(prompt: str, tokenizer, layout: TextLayout):
    """LongCat: the prompt tokenized on its own (quoted parts character by character), padded/cut to its length."""
    ids, offs = [], []
    for start, end, quoted in quotation_parts(prompt) if layout.quoted_chars else [(0, len(prompt), False)]:
        pieces = [(i, i + 1) for i in range(start, end)] if quoted else [(start, end)]
        for a, b in pieces:
            piece_ids, piece_offs = encode(tokenizer, prompt[a:b])
            ids += piece_ids
            offs += [(s + a, e + a) for s, e in piece_offs]
    if layout.prompt_pad_to:
        ids, offs = ids[:layout.prompt_pad_to], offs[:layout.prompt_pad_to]
        missing = layout.prompt_pad_to - len(ids)
        ids, offs = ids + [QWEN_PAD_ID] * missing, offs + [(-1, -1)] * missing
    return ids, offs


def head_cut(ids) -> int:
    """Index of the first kept token by ComfyUI's rule (QwenImageTEModel / LongCat / Mage encode_token_weights):
    the 2nd <|im_start|> (or the 1st when there is one), then past "user\\n" when it follows."""
    end, seen = -1, 0
    for i, t in enumerate(ids):
        if t == IM_START_ID and seen < 2:
            end, seen = i, seen + 1
    if len(ids) > end + 3 and ids[end + 1] == USER_ID and ids[end + 2] == NEWLINE_ID:
        end += 3
    return max(end, 0)


def encoder_tokens(prompt: str, tokenizer, layout: TextLayout, before: str = ""):
    """(ids, offsets) of the conditioning the encoder emits for ``prompt``, one entry per token; offsets are
    character ranges in the prompt, (-1, -1) for template, padding and special tokens. ``before``: text the
    encode node puts right before the prompt (Qwen-Image-Edit's "Picture N: <vision block>")."""
    if layout.prompt_apart is not None:
        prefix, suffix = layout.prompt_apart
        head_ids, _ = encode(tokenizer, prefix)
        tail_ids, _ = encode(tokenizer, suffix)
        body_ids, body_offs = prompt_tokens_apart(prompt, tokenizer, layout)
        ids = head_ids + body_ids + tail_ids
        offs = [(-1, -1)] * len(head_ids) + body_offs + [(-1, -1)] * len(tail_ids)
    else:
        head = layout.template.split("{}")[0] + before
        ids, raw = encode(tokenizer, layout.template.format(before + prompt), layout.special_tokens)
        shift, end = len(head), len(head) + len(prompt)
        offs = [(s - shift, e - shift) if shift <= s and e <= end and e > s else (-1, -1) for s, e in raw]
        ids, offs = list(layout.start_ids) + ids, [(-1, -1)] * len(layout.start_ids) + offs
    if layout.pad_to and len(ids) < layout.pad_to:
        missing = layout.pad_to - len(ids)
        ids, offs = ids + [QWEN_PAD_ID] * missing, offs + [(-1, -1)] * missing
    cut = head_cut(ids) if layout.cut_head else 0
    end = len(ids)
    if layout.cut_tail:  # LongCat: from the last <|im_end|> on, when something is left before it
        last = max((i for i, t in enumerate(ids) if t == IM_END_ID), default=None)
        if last is not None and end - cut > end - last:
            end = last
    return ids[cut:end], offs[cut:end]


def layout_for(name: str) -> TextLayout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown text layout {name!r}; use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]
