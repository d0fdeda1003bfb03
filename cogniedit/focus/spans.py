"""Focus phrases -> token positions in the conditioning sequence exactly as the DiT sees it.

The DiT never sees the prompt alone: ComfyUI wraps it in a chat template, cuts the template's
head, and (Qwen-Image-Edit) expands each ``<|image_pad|>`` into the vision encoder's tokens. So we
rebuild the same string, tokenize it with offsets, apply the same cut and expansion, and map each
phrase's characters to the tokens that overlap them. Layouts (see docs/focus.md):

* ``qwen_image``: position 0 = first user token (ComfyUI drops everything up to ``<|im_start|>user\\n``);
* ``qwen_image_edit``: ``[Picture N: ]<|vision_start|><vision tokens><|vision_end|>`` precede the prompt;
  vision-token counts come from the image sizes, or positions are counted from the END when the real
  conditioning length is known (the ``<|im_end|>\\n<|im_start|>assistant\\n`` suffix is 5 tokens);
* ``flux`` (T5): position i = token i of the tokenizer's own encoding (EOS appended by the tokenizer);
* ``flux2_klein``, ``flux2_dev``, ``longcat``, ``mage_flow``: see text_layout.py, which builds every layout's tokens.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from . import text_layout

LAYOUTS = tuple(text_layout.LAYOUTS)
QWEN_TEMPLATE = text_layout.QWEN_IMAGE_TEMPLATE
IMAGE_PAD_ID = text_layout.IMAGE_PAD_ID
QWEN_SUFFIX_TOKENS = 5  # <|im_end|> \n <|im_start|> assistant \n


@dataclass(frozen=True)
class TokenSpan:
    """One occurrence of a phrase: tokens ``[start, end)`` of the DiT's text sequence."""

    phrase: str
    start: int
    end: int
    char_start: int  # in the prompt
    char_end: int

    @property
    def positions(self) -> list[int]:
        return list(range(self.start, self.end))


@dataclass
class FocusSpans:
    """Spans of one prompt plus the warnings (absent phrases) and the text length the DiT sees."""

    spans: list[TokenSpan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    text_len: int = 0

    @property
    def positions(self) -> list[int]:
        return sorted({p for s in self.spans for p in s.positions})

    def from_end(self) -> list[int]:
        """Positions as negative offsets from the end of the text (independent of what precedes the prompt)."""
        return [p - self.text_len for p in self.positions]


def qwen_vl_vision_tokens(height: int, width: int, min_pixels: int = 3136, max_pixels: int = 12845056) -> int:
    """Vision tokens Qwen2.5-VL emits for one image of this size (14 px patches merged 2x2).

    Same resize rule as ComfyUI's ``process_qwen2vl_images`` (sizes after ComfyUI's own rescale of the
    image it feeds the text encoder, e.g. ~384x384 area for TextEncodeQwenImageEdit(Plus)).
    """
    factor = 28
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return (h_bar // factor) * (w_bar // factor)


def edit_image_prefix(n_images: int, picture_labels: bool = True) -> str:
    """The text ComfyUI puts before the prompt for Qwen-Image-Edit (Plus labels pictures, the first node does not)."""
    block = "<|vision_start|><|image_pad|><|vision_end|>"
    if picture_labels:
        return "".join(f"Picture {i + 1}: {block}" for i in range(n_images))
    return block * n_images


def find_phrase_chars(prompt: str, phrase: str, occurrences: str = "all") -> list[tuple[int, int]]:
    """Case-insensitive character ranges of ``phrase`` in ``prompt``; whole words preferred.

    A bare substring match ("red" inside "colored") is used only when no whole-word match exists.
    """
    needle = phrase.strip()
    if not needle:
        return []
    escaped = re.escape(needle)
    left = r"(?<!\w)" if needle[0].isalnum() else ""
    right = r"(?!\w)" if needle[-1].isalnum() else ""
    hits = [(m.start(), m.end()) for m in re.finditer(left + escaped + right, prompt, flags=re.IGNORECASE)]
    if not hits:
        hits = [(m.start(), m.end()) for m in re.finditer(escaped, prompt, flags=re.IGNORECASE)]
    if occurrences == "first":
        return hits[:1]
    if occurrences != "all":
        raise ValueError(f"occurrences must be 'all' or 'first', got {occurrences!r}")
    return hits


def _layout_tokens(prompt, tokenizer, layout, n_images, picture_labels, vision_tokens):
    """(positions, char offsets in the prompt, DiT text length) for every kept token (text_layout builds them).

    Tokens outside the prompt get offsets (-1, -1), so only prompt tokens can match a phrase. Qwen-Image-Edit:
    each ``<|image_pad|>`` of the images before the prompt takes that image's vision-token count.
    """
    before = edit_image_prefix(n_images, picture_labels) if n_images else ""
    ids, offs = text_layout.encoder_tokens(prompt, tokenizer, text_layout.layout_for(layout), before)
    positions, pos, pad_seen = [], 0, 0
    for t in ids:
        positions.append(pos)
        if t == IMAGE_PAD_ID and before:  # the text encoder replaces this one token with the image's vision tokens
            pos += vision_tokens[pad_seen] if pad_seen < len(vision_tokens) else 1
            pad_seen += 1
        else:
            pos += 1
    return positions, offs, pos


def phrase_spans(
    prompt: str,
    phrases: Sequence[str],
    tokenizer,
    layout: str = "qwen_image",
    *,
    occurrences: str = "all",
    n_images: int = 1,
    picture_labels: bool = True,
    vision_tokens: Sequence[int] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    context_len: int | None = None,
) -> FocusSpans:
    """Token spans of each phrase (case-insensitive) in the DiT's text sequence for ``prompt``.

    ``layout``: one of LAYOUTS. For ``qwen_image_edit`` give ``vision_tokens`` (per image), or
    ``image_sizes`` ((height, width) of the images the text encoder saw), or ``context_len`` (the real
    conditioning length): with ``context_len`` positions are counted from the end, which needs no
    vision-token count at all. Absent phrases give a warning, never an exception.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if vision_tokens is None and image_sizes is not None:
        vision_tokens = [qwen_vl_vision_tokens(h, w) for h, w in image_sizes]
    positions, offs, text_len = _layout_tokens(
        prompt, tokenizer, layout, n_images if layout == "qwen_image_edit" else 0, picture_labels, list(vision_tokens or [])
    )
    if context_len is not None and layout != "flux":
        # Count from the end: the suffix after the prompt has a fixed token count, the prefix may not.
        delta = context_len - text_len
        positions = [p + delta for p in positions]
        text_len = context_len
    elif layout == "qwen_image_edit" and vision_tokens is None and n_images > 0:
        raise ValueError(
            "qwen_image_edit needs vision_tokens, image_sizes or context_len to place the prompt after the vision tokens"
        )
    result = FocusSpans(text_len=text_len)
    prompt_tokens = [(s, e, p) for p, (s, e) in zip(positions, offs) if s >= 0]  # in prompt order
    ends = [e for _, e, _ in prompt_tokens]
    for phrase in unique_phrases(phrases):
        ranges = find_phrase_chars(prompt, phrase, occurrences)
        if not ranges:
            result.warnings.append(f"focus phrase {short(phrase)} is not in the prompt {short(prompt)}; it is ignored")
            continue
        outside = 0
        for cs, ce in ranges:
            first = bisect.bisect_right(ends, cs)  # the first token that ends after the phrase starts
            hit = [p for s, _, p in prompt_tokens[first:first + (ce - cs) + 1] if s < ce]
            if not hit or hit[0] < 0:
                outside += 1
                continue
            result.spans.append(TokenSpan(phrase, hit[0], hit[-1] + 1, cs, ce))
        if outside:
            result.warnings.append(f"focus phrase {short(phrase)} has no tokens inside the conditioning "
                                   f"({outside} of {len(ranges)} occurrences); those are ignored")
    return result


def short(text: str, limit: int = 60) -> str:
    """``text`` quoted, cut to ``limit`` characters with its length named: warnings stay one short line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def unique_phrases(phrases: Sequence[str]) -> list[str]:
    """The phrases once each (case and surrounding spaces ignored: they find the same tokens), in order."""
    seen, out = set(), []
    for phrase in phrases:
        key = phrase.strip().lower()
        if key not in seen:
            seen.add(key)
            out.append(phrase)
    return out


def batch_phrase_spans(
    prompts: Sequence[str],
    phrases: Sequence[str] | Sequence[Sequence[str]],
    tokenizer,
    layout: str = "qwen_image",
    **kwargs,
) -> list[FocusSpans]:
    """Per-sample spans. ``phrases``: one list shared by all prompts, or one list per prompt.

    Per-sample keyword lists (``vision_tokens``, ``image_sizes``, ``context_len``) may be given as
    ``<name>_per_sample``.
    """
    shared = len(phrases) == 0 or isinstance(phrases[0], str)
    if not shared and len(phrases) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(phrases)} phrase lists; give one list per prompt or one shared list")
    per_sample = {k[: -len("_per_sample")]: v for k, v in kwargs.items() if k.endswith("_per_sample")}
    common = {k: v for k, v in kwargs.items() if not k.endswith("_per_sample")}
    out = []
    for i, prompt in enumerate(prompts):
        extra = {k: v[i] for k, v in per_sample.items()}
        out.append(phrase_spans(prompt, phrases if shared else phrases[i], tokenizer, layout, **common, **extra))
    return out


def token_sequence_spans(token_ids: Sequence, phrases: Sequence[str], encode_phrase) -> FocusSpans:
    """Spans of each phrase found as a run of token ids in a conditioning's own token sequence.

    For text encoders whose host tokenizer already gives the exact ids at every conditioning position
    (ComfyUI's CLIP tokenizer for SD-family UNets: start token, prompt, end, padding, 77 per chunk, prompt
    weights and embeddings resolved): ``token_ids`` is that flat list (``None`` where a position holds an
    embedding), ``encode_phrase(text)`` the phrase's ids without special tokens. Word-level BPEs such as
    CLIP's tokenize a word the same alone and in context, so an id run is the phrase. Absent phrases warn.
    """
    ids = list(token_ids)
    result = FocusSpans(text_len=len(ids))
    for phrase in unique_phrases(phrases):
        needle = list(encode_phrase(phrase)) if phrase.strip() else []
        hits = [i for i in range(len(ids) - len(needle) + 1) if needle and ids[i:i + len(needle)] == needle]
        if not hits:
            result.warnings.append(f"focus phrase {short(phrase)} is not in the prompt's tokens; it is ignored")
            continue
        result.spans += [TokenSpan(phrase, i, i + len(needle), -1, -1) for i in hits]
    return result
