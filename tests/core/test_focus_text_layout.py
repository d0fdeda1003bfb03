"""text_layout: the encoder-output tokens of each layout, with the real Qwen2.5 tokenizer (host-free).

The host tier (tests/host/test_focus_families.py) checks the same positions against ComfyUI's own tokenizer and
text-encoder classes; here the layout rules themselves: LongCat's quotation split and its 512-token prompt,
klein's padding, and that every layout's prompt tokens decode back to the prompt.
"""

from __future__ import annotations

import pytest

from cogniedit.focus import text_layout
from cogniedit.focus.spans import phrase_spans
from cogniedit.text.tokenizer import load_qwen25_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_qwen25_tokenizer()


def test_quotation_parts_keep_apostrophes_inside_words():
    prompt = "don't paint the \u201cbig\u201d cup 'red' or \"blue\""
    parts = [(prompt[a:b], quoted) for a, b, quoted in text_layout.quotation_parts(prompt)]
    assert parts == [("don't paint the ", False), ("\u201cbig\u201d", True), (" cup ", False), ("'red'", True),
                     (" or ", False), ('"blue"', True)]


@pytest.mark.parametrize("name", ["qwen_image", "qwen_image_edit", "flux2_klein", "longcat", "mage_flow"])
def test_prompt_tokens_decode_back_to_the_prompt(tokenizer, name):
    prompt = 'make the "left" cup red'
    ids, offs = text_layout.encoder_tokens(prompt, tokenizer, text_layout.layout_for(name))
    kept = [i for i, (s, _) in zip(ids, offs) if s >= 0]
    assert tokenizer.decode(kept) == prompt
    start = next(k for k, (s, _) in enumerate(offs) if s >= 0)
    assert all(s >= 0 for s, _ in offs[start:start + len(kept)])  # one contiguous run


def test_longcat_quoted_text_is_one_token_per_character_and_the_prompt_is_512(tokenizer):
    layout = text_layout.layout_for("longcat")
    ids, offs = text_layout.encoder_tokens('make the "left" cup red', tokenizer, layout)
    quoted = [tokenizer.decode([i]) for i, (s, e) in zip(ids, offs) if 10 <= s < 14]
    assert quoted == ["l", "e", "f", "t"]
    assert ids[-1] == text_layout.QWEN_PAD_ID and len(ids) == 3 + 512  # vision block kept, tail cut
    long_ids, long_offs = text_layout.encoder_tokens("red " * 600, tokenizer, layout)
    assert len(long_ids) == 3 + 512 and long_offs[-1][0] >= 0  # cut to 512 prompt tokens, no padding
    spans = phrase_spans("red " * 600, ["red"], tokenizer, "longcat")
    assert max(spans.positions) < spans.text_len == 515


def test_klein_pads_to_512_and_counts_from_the_start(tokenizer):
    layout = text_layout.layout_for("flux2_klein")
    assert layout.anchor == "start"
    spans = phrase_spans("make the cat red", ["red"], tokenizer, "flux2_klein")
    assert spans.positions == [6] and spans.text_len == 512  # <|im_start|> user \n make the cat red
