"""Focus phrases -> token positions, on the real Qwen2.5 tokenizer, in ComfyUI's conditioning layouts."""

import importlib.util
from pathlib import Path

import pytest

from cogniedit.focus.spans import (
    QWEN_TEMPLATE, batch_phrase_spans, edit_image_prefix, find_phrase_chars, phrase_spans, qwen_vl_vision_tokens,
)
from cogniedit.text.tokenizer import load_qwen25_tokenizer

_spec = importlib.util.spec_from_file_location("focus_instructions", Path(__file__).parent / "data" / "focus_instructions.py")
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)
INSTRUCTIONS = _data.FOCUS_INSTRUCTIONS
IM_START, IMAGE_PAD = 151644, 151655


@pytest.fixture(scope="module")
def tok():
    return load_qwen25_tokenizer()


def conditioning_tokens(tok, prompt, prefix="", vision=()):
    """The token strings the DiT sees, rebuilt independently: template, cut after the 2nd
    '<|im_start|>user\\n', each <|image_pad|> repeated by its vision-token count."""
    ids = tok(QWEN_TEMPLATE.format(prefix + prompt), add_special_tokens=False)["input_ids"]
    second = [i for i, t in enumerate(ids) if t == IM_START][1]
    kept = ids[second + 3:]
    out, pads = [], iter(vision)
    for t in kept:
        out.extend([tok.decode([t])] * (next(pads) if t == IMAGE_PAD else 1))
    return out


def test_layout_matches_the_hand_checked_example(tok):
    # comfyui-api.md: "make the cat red" -> 9 positions, prompt first, 5-token suffix
    r = phrase_spans("make the cat red", ["cat", "red"], tok)
    assert r.text_len == 9
    assert conditioning_tokens(tok, "make the cat red") == ["make", " the", " cat", " red", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
    assert [(s.phrase, s.start, s.end) for s in r.spans] == [("cat", 2, 3), ("red", 3, 4)]


@pytest.mark.parametrize("prompt,phrases", INSTRUCTIONS)
def test_spans_decode_to_the_phrase_qwen_image(tok, prompt, phrases):
    r = phrase_spans(prompt, phrases, tok, "qwen_image")
    assert r.warnings == []
    seq = conditioning_tokens(tok, prompt)
    assert r.text_len == len(seq)
    found = {s.phrase for s in r.spans}
    assert found == set(phrases)
    for s in r.spans:
        assert "".join(seq[s.start:s.end]).strip().lower() == s.phrase.lower()


@pytest.mark.parametrize("prompt,phrases", INSTRUCTIONS[::3])
@pytest.mark.parametrize("labels", [True, False])
def test_spans_qwen_image_edit_with_vision_block(tok, prompt, phrases, labels):
    n_vision = [196, 37]  # two images of different sizes
    prefix = edit_image_prefix(2, labels)
    seq = conditioning_tokens(tok, prompt, prefix, n_vision)
    r = phrase_spans(prompt, phrases, tok, "qwen_image_edit", n_images=2, picture_labels=labels, vision_tokens=n_vision)
    assert r.text_len == len(seq)
    for s in r.spans:
        assert s.start > sum(n_vision)
        assert "".join(seq[s.start:s.end]).strip().lower() == s.phrase.lower()
    # counting from the end with only the real conditioning length gives the same positions
    r_end = phrase_spans(prompt, phrases, tok, "qwen_image_edit", n_images=2, picture_labels=labels, context_len=len(seq))
    assert r_end.positions == r.positions
    assert seq[-5:] == ["<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]


def test_vision_token_count_from_image_size(tok):
    assert qwen_vl_vision_tokens(384, 384) == 196  # (392/28)^2, as in the paper notes
    assert qwen_vl_vision_tokens(280, 560) == 10 * 20
    a = phrase_spans("make the cup red", ["red"], tok, "qwen_image_edit", image_sizes=[(384, 384)])
    b = phrase_spans("make the cup red", ["red"], tok, "qwen_image_edit", vision_tokens=[196])
    assert a.positions == b.positions
    with pytest.raises(ValueError, match="vision_tokens, image_sizes or context_len"):
        phrase_spans("make the cup red", ["red"], tok, "qwen_image_edit")


def test_absent_phrase_warns_and_case_and_occurrences(tok):
    r = phrase_spans("make the red cup and the red plate blue", ["RED", "green"], tok)
    assert len(r.spans) == 2 and r.spans[0].start < r.spans[1].start
    assert len(r.warnings) == 1 and "'green'" in r.warnings[0]
    first = phrase_spans("make the red cup and the red plate blue", ["red"], tok, occurrences="first")
    assert len(first.spans) == 1 and first.spans[0].start == r.spans[0].start
    # whole words first: "red" must not hit "colored" when a real "red" exists
    assert find_phrase_chars("colored cup, red plate", "red") == [(13, 16)]
    assert find_phrase_chars("colored cup", "red") == [(4, 7)]  # substring fallback


def test_a_huge_instruction_gives_bounded_warnings_and_one_entry_per_phrase(tok):
    """A 10,000-character instruction used as its own phrase list (every phrase many times over) gave an 11 MB
    report: each absent phrase quoted the whole prompt, and each repeated phrase listed every occurrence again."""
    prompt = "make the red cat blue, " * 435  # 10,005 characters
    phrases = [p.strip() for p in prompt.split(",") if p.strip()] + ["giraffe"] * 50 + ["x" * 5000]
    r = phrase_spans(prompt, phrases, tok)
    assert len(r.spans) == 435  # one phrase, found 435 times, listed once per occurrence (not 435 x 435)
    assert len(r.warnings) == 2 and all(len(w) < 300 for w in r.warnings), [len(w) for w in r.warnings]
    assert "'giraffe' is not in the prompt 'make the red cat blue, make" in r.warnings[0]
    assert "(10005 characters)" in r.warnings[0]


def test_flux_layout_position_is_token_index(tok):
    # No T5 sentencepiece model is available offline: any fast HF tokenizer with offsets works,
    # the Qwen tokenizer stands in; position i = token i of the tokenizer's own encoding.
    r = phrase_spans("make the left cup red", ["left", "red"], tok, "flux")
    ids = tok("make the left cup red")["input_ids"]
    assert r.text_len == len(ids)
    assert [tok.decode(ids[s.start:s.end]).strip() for s in r.spans] == ["left", "red"]


def test_batched_per_sample_spans(tok):
    out = batch_phrase_spans(["make the cup red", "turn the left car blue"], [["red"], ["left", "blue"]], tok)
    assert [s.positions for s in out] == [[3], [2, 4]]
    shared = batch_phrase_spans(["make the cup red", "a red car"], ["red"], tok)
    assert [s.positions for s in shared] == [[3], [1]]
    per = batch_phrase_spans(["make the cup red", "a red car"], ["red"], tok, layout="qwen_image_edit",
                             vision_tokens_per_sample=[[4], [9]])
    assert per[1].positions[0] - per[0].positions[0] == (9 - 4) + (1 - 3)
    with pytest.raises(ValueError, match="one list per prompt"):
        batch_phrase_spans(["a", "b"], [["a"]], tok)
