"""The decomposer's architecture: transformers' own Qwen2.5-VL at a small size, the real Qwen2.5 tokenizer.

Sizes are set by the 30 MB package budget and a 2-core CPU. The embedding table keeps the full Qwen2.5-VL
vocabulary (151 936 rows, real ids) at width 64, tied with the output head, stored in bfloat16 (19.4 MB); every
other tensor is stored in float32, and ``config.json`` says ``dtype: float32``, so ``from_pretrained`` gives a
float32 model. Rows of tokens the training data never contains are exactly zero, so at inference such a token
reads as "unknown" (a zero vector) and scores logit 0.

Images: ShapeEdit scenes are 48x48 with a 3x3 grid of 16-px cells. Patches of 8 px merged 2x2 give one visual token
per cell (9 tokens); the processor's pixel bounds are 48x48, so any other image size is resized to that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

VOCAB_SIZE = 151936           # Qwen2.5-VL's embedding rows (the tokenizer has 151 665 ids)
IMAGE_PIXELS = 48 * 48
PATCH, MERGE, TEMPORAL = 8, 2, 2
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class DecomposerDims:
    hidden: int = 64
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    rope_theta: float = 3.0  # see mrope_section
    max_positions: int = 1024

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DecomposerDims":
        return cls(**json.loads(text))


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2.5-VL splits each head's rotary half into temporal/height/width parts (sum = head_dim / 2), the width
    part taking the lowest frequencies. With the usual theta 10 000 and 16-dim heads those turn by 0.003 rad per
    column, so the 3x3 image tokens could not be told apart by position; theta 3 gives every part 0.4-1 rad per
    step (text order comes from the content and the causal mask as much as from rotation in a sequence this short)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_config(dims: DecomposerDims = DecomposerDims()):
    from transformers import Qwen2_5_VLConfig

    head_dim = dims.hidden // dims.heads
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=dims.hidden, intermediate_size=dims.intermediate,
                num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads,
                max_position_embeddings=dims.max_positions, tie_word_embeddings=True, rms_norm_eps=1e-6,
                rope_scaling={"type": "mrope", "mrope_section": mrope_section(head_dim), "rope_theta": dims.rope_theta},
                bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    # window_size covers the whole 48-px image, so window and full attention agree; the last block is "full".
    vision = dict(depth=dims.vision_depth, hidden_size=dims.vision_hidden, intermediate_size=dims.vision_intermediate,
                  num_heads=dims.vision_heads, out_hidden_size=dims.hidden, patch_size=PATCH,
                  spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, window_size=64,
                  fullatt_block_indexes=[dims.vision_depth - 1], in_channels=3)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    return config


def new_model(dims: DecomposerDims = DecomposerDims(), seed: int = 0):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(build_config(dims))


# ----------------------------------------------------------------------------- tokenizer and processor

def tokenizer_config() -> dict:
    from ...text.tokenizer import FIRST_SPECIAL_ID, SPECIAL_TOKENS

    added = {str(FIRST_SPECIAL_ID + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)}
    return {"tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False, "bos_token": None,
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
            "clean_up_tokenization_spaces": False, "errors": "replace", "model_max_length": 32768,
            "split_special_tokens": False, "added_tokens_decoder": added, "additional_special_tokens": SPECIAL_TOKENS[1:]}


def write_tokenizer(folder) -> None:
    """vocab.json + merges.txt (4.4 MB, not the 11 MB tokenizer.json) + a config with Qwen2.5's 22 added tokens."""
    from ...text.tokenizer import load_qwen25_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    load_qwen25_tokenizer().backend_tokenizer.model.save(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=1), encoding="utf-8")


def image_processor_kwargs() -> dict:
    return dict(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL,
                size={"shortest_edge": IMAGE_PIXELS, "longest_edge": IMAGE_PIXELS})


# The backend's Qwen-VL template without the system turn: this model writes its four stages whatever the system
# prompt says, so it is trained and run without one (224 fewer tokens a prompt, and no retraining when the
# prompt's wording changes).
NO_SYSTEM_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(system_turn: bool):
    from ...decompose.backends.transformers_vlm import QWEN_VL_CHAT_TEMPLATE

    return QWEN_VL_CHAT_TEMPLATE if system_turn else NO_SYSTEM_CHAT_TEMPLATE


def build_processor(tokenizer, system_turn: bool = True):
    """The stock Qwen2.5-VL processor (with torchvision), else the backend's image-only one around the PIL
    image processor; both give the same ids and pixel values for a 48x48 scene (no resize happens)."""
    import importlib.util

    import transformers

    from ...decompose.backends.transformers_vlm import image_only_processor

    if importlib.util.find_spec("torchvision") is not None:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return transformers.Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(**image_processor_kwargs()), tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(**image_processor_kwargs()), chat_template=chat_template(system_turn))
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return image_only_processor(transformers.Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil(**image_processor_kwargs()),
                                tokenizer, chat_template(system_turn))


def load_tokenizer(folder):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(folder))
