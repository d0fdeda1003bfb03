import pytest

from cogniedit.text.tokenizer import FIRST_SPECIAL_ID, SPECIAL_TOKENS, load_qwen25_tokenizer

SAMPLES = [
    "Make the left cup red, and add three birds on the right!",
    "Hello, world! 12345 ÀÉ  spaces\n\nnew",
    "Picture 1: <|vision_start|><|image_pad|><|vision_end|>make the purple circle red<|im_end|>\n<|im_start|>assistant\n",
]


def test_registry_tokenizer_has_real_qwen_ids():
    tok = load_qwen25_tokenizer("registry")
    assert tok("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]
    assert tok("12345")["input_ids"] == [16, 17, 18, 19, 20]  # Qwen2 splits digits one by one
    for offset, name in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(name) == FIRST_SPECIAL_ID + offset
    ids = tok(SAMPLES[2])["input_ids"]
    assert ids[5:8] == [151652, 151655, 151653]


@pytest.mark.host
def test_registry_tokenizer_equals_the_one_comfyui_ships(comfyui_root):
    ours = load_qwen25_tokenizer("registry")
    comfy = load_qwen25_tokenizer("comfyui", comfyui_root)
    for text in SAMPLES:
        assert ours(text)["input_ids"] == comfy(text)["input_ids"]
