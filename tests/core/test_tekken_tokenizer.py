"""cogniedit.text.tekken and the flux2_dev text layout (host-free).

The host tier (tests/host/test_focus_flux2_dev.py) checks that these ids equal ComfyUI's own tekken tokenizer on the
same blob and that the positions hold the phrase in what FLUX.2 dev's DiT receives. Here: the vocabulary rules on a
hand-made blob whose ids are worked out by hand, the ids against mistral-common's own Tekkenizer (tiktoken, an
independent BPE), the offsets, the cache, and the layout's template, start token and end anchor.
"""

from __future__ import annotations

import base64
import importlib.resources
import json

import pytest

from cogniedit.focus import text_layout
from cogniedit.focus.spans import phrase_spans
from cogniedit.text import tekken
from tests.fixtures.tekken_blob import TEKKEN_FILE, tekken_test_blob, tekken_v3_json

# Prompts on which Tekken's own split pattern and ComfyUI's (Llama-3) one give the same ids with this vocabulary
PROMPTS = ['make the "left" cup red', "Café crème brûlée, naïve façade", "add 12 stars and 2024 moons, 3.14159!",
           "把左边的杯子变成红色", "don't WON'T it's I'M we'll", "tabs\tand\nnewlines\n\n  spaces   end  ",
           "emoji 🎉🐱 and ümlaut Ωmega", "ＡＢＣ full-width ０１２"]


def hand_made_blob(extra_rank: int = 259) -> bytes:
    """256 single bytes, then "ab" (256), "abc" (257), "bc" (258) and "xyz" (259, beyond the vocabulary size: dropped);
    3 special tokens, so ordinary rank r has id r + 3."""
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode()} for i in range(256)]
    for rank, token in ((256, b"ab"), (257, b"abc"), (258, b"bc"), (extra_rank, b"xyz")):
        vocab.append({"rank": rank, "token_bytes": base64.b64encode(token).decode()})
    specials = [{"rank": rank, "token_str": name, "is_control": True}
                for rank, name in enumerate(["<unk>", "<s>", "[X]"])]
    config = {"pattern": "unused", "num_vocab_tokens": len(vocab), "default_vocab_size": 3 + 259,
              "default_num_special_tokens": 3, "version": "v7"}
    return json.dumps({"config": config, "vocab": vocab, "special_tokens": specials}).encode()


@pytest.fixture(scope="module")
def real():
    return tekken.tekken_tokenizer(tekken_test_blob())


def ids_and_offsets(tokenizer, text):
    return text_layout.encode(tokenizer, text)


def test_hand_made_blob_gives_the_ids_worked_out_by_hand():
    tok = tekken.tekken_tokenizer(hand_made_blob())
    assert ids_and_offsets(tok, "abc")[0] == [257 + 3]  # a+b (merge of rank 256) first, then ab+c
    assert ids_and_offsets(tok, "bc")[0] == [258 + 3]
    assert ids_and_offsets(tok, "xyz")[0] == [ord("x") + 3, ord("y") + 3, ord("z") + 3]  # rank 259 dropped
    assert ids_and_offsets(tok, "[X]abc<s>")[0] == [2, 260, 1]  # special tokens cut out anywhere
    assert ids_and_offsets(tok, "ab abc") == ([259, ord(" ") + 3, 260], [(0, 2), (2, 3), (3, 6)])


def test_one_tokenizer_per_blob_content():
    blob = hand_made_blob()
    first = tekken.tekken_tokenizer(blob)
    assert tekken.tekken_tokenizer(bytearray(blob)) is first  # same content, another object: not rebuilt
    assert tekken.tekken_tokenizer(blob.decode()) is first
    other = tekken.tekken_tokenizer(hand_made_blob(extra_rank=999))
    assert other is not first


def test_blobs_comfyui_cannot_read_are_refused_with_the_reason():
    v3 = json.loads(hand_made_blob())
    del v3["special_tokens"]
    with pytest.raises(tekken.TekkenError, match="no special_tokens list"):
        tekken.tekken_tokenizer(json.dumps(v3))
    with pytest.raises(tekken.TekkenError, match="not a tekken tokenizer blob"):
        tekken.tekken_tokenizer(b'{"vocab": []}')
    with pytest.raises(tekken.TekkenError, match="bytes or str"):
        tekken.tekken_tokenizer(123)


def test_ids_equal_mistral_commons_own_tekkenizer(real):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    with importlib.resources.as_file(importlib.resources.files("mistral_common") / "data" / TEKKEN_FILE) as path:
        reference = Tekkenizer.from_file(path)
    for prompt in PROMPTS:
        assert ids_and_offsets(real, prompt)[0] == reference.encode(prompt, bos=False, eos=False), prompt


def test_offsets_cover_the_prompt_in_order(real):
    for prompt in PROMPTS:
        ids, offsets = ids_and_offsets(real, prompt)
        covered = {c for s, e in offsets for c in range(s, e)}  # a character split into byte tokens: shared
        assert covered == set(range(len(prompt))), prompt
        assert offsets == sorted(offsets) and all(s < e for s, e in offsets), prompt
        assert real.decode(ids) == prompt


def test_the_v3_file_alone_lacks_special_tokens():
    """Why the fixture adds mistral-common's table: the packaged file has none (ComfyUI needs the list)."""
    assert "special_tokens" not in tekken_v3_json()


def test_flux2_dev_layout_counts_from_the_end_of_start_template_prompt(real):
    layout = text_layout.layout_for("flux2_dev")
    assert layout.anchor == "end" and layout.pad_to == 0
    prompt = "make the café cup red"
    ids, offsets = text_layout.encoder_tokens(prompt, real, layout)
    assert ids[:2] == [1, 17] and ids[-1] == 4  # <s> [SYSTEM_PROMPT] ... [/INST]
    assert ids[1:] == ids_and_offsets(real, layout.template.format(prompt))[0]
    kept = [i for i, (s, _) in zip(ids, offsets) if s >= 0]
    assert real.decode(kept) == prompt and ids[-1 - len(kept):-1] == kept  # the prompt, then [/INST] alone
    spans = phrase_spans(prompt, ["café", "red"], real, "flux2_dev")
    received = [None] * (512 - len(ids)) + ids  # model_base.Flux2 left-pads to 512: only the end is stable
    for span in spans.spans:
        positions = [p - spans.text_len for p in span.positions]
        assert real.decode([received[p] for p in positions]).strip() == span.phrase
