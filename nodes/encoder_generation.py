"""Can a loaded ComfyUI text encoder answer the decomposition prompt, and the function that asks it.

Generation is ComfyUI's own path, the one its TextGenerate node runs: `clip.tokenize(...)`,
`clip.generate(...)` (which reaches the language model's `BaseGenerate.generate`), `clip.decode(...)`.
Whether that path can work is read from the loaded model itself, not from a list of names:

- the CLIP must hold one language model whose ComfyUI class implements `generate` (T5, CLIP-L, the
  FLUX.2 dev Mistral class and multi-encoder models do not);
- its config must name stop tokens: `BaseGenerate.generate` reads them and fails at once without
  (ComfyUI 0.33's Qwen2.5-VL class, `Qwen25_7BVLI`, names none; it also has no lm_head and would score
  tokens with its input embeddings, which Qwen2.5-VL-7B does not tie);
- its tokenizer must speak ChatML (`<|im_start|>`), the format the four-stage prompt is rendered in.

FLUX.2 klein's Qwen3 4B (tied embeddings) and 8B (an lm_head) and Qwen3-VL pass. A language model without
a vision tower (`preprocess_embed`) is text-only: it is sent the prompt without the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WORKING_BACKENDS = "openai_http, transformers_vlm or rules"
CHATML_START = "<|im_start|>"
NO_LM_HEAD = ", and it has no lm_head: tokens would be scored with its input embeddings"
QWEN3_NO_THINKING = "<think>\n\n</think>\n\n"  # Qwen3's own convention (ComfyUI's klein and Qwen3-VL templates)


@dataclass(frozen=True)
class EncoderGeneration:
    model: str            # the language model's ComfyUI class, e.g. "Qwen3_4B"
    reason: str = ""      # why it cannot generate; "" when it can
    sees_images: bool = False
    thinks: bool = False  # a Qwen3 model: its thinking is switched off as ComfyUI's templates do

    @property
    def can_generate(self) -> bool:
        return not self.reason

    def refusal(self) -> str:
        return (f"this text encoder cannot generate text ({self.reason}); use {WORKING_BACKENDS} (text_encoder "
                "works with FLUX.2 klein's Qwen3 and Qwen3-VL)")


def _single_encoder(clip):
    """(tokenizer, language model) of a CLIP holding one text encoder, else (None, None)."""
    model, tokenizer = getattr(clip, "cond_stage_model", None), getattr(clip, "tokenizer", None)
    name = getattr(model, "clip", None)  # SD1ClipModel / SD1Tokenizer: the attribute that holds their one encoder
    if not isinstance(name, str) or not callable(getattr(model, "generate", None)):
        return None, None
    return getattr(tokenizer, name, None), getattr(getattr(model, name, None), "transformer", None)


def _speaks_chatml(tokenizer) -> bool:
    vocab = getattr(getattr(tokenizer, "tokenizer", None), "get_vocab", None)
    return callable(vocab) and CHATML_START in vocab()


def encoder_generation(clip) -> EncoderGeneration:
    """What the loaded encoder can do, from its classes and config."""
    tokenizer, language_model = _single_encoder(clip)
    if language_model is None:
        held = type(getattr(clip, "cond_stage_model", clip)).__name__
        return EncoderGeneration(held, f"ComfyUI's {held} holds no single language model it can generate with")
    name = type(language_model).__name__
    if not callable(getattr(language_model, "generate", None)):
        return EncoderGeneration(name, f"ComfyUI's {name} class implements no text generation")
    inner = getattr(language_model, "model", None)
    if not getattr(getattr(inner, "config", None), "stop_tokens", None):
        head = "" if hasattr(inner, "lm_head") else NO_LM_HEAD
        return EncoderGeneration(name, f"ComfyUI's {name} config names no stop tokens{head}")
    if not _speaks_chatml(tokenizer):
        return EncoderGeneration(name, f"its tokenizer has no {CHATML_START}: the prompt is Qwen chat text")
    from comfy.text_encoders.llama import BaseQwen3

    return EncoderGeneration(name, sees_images=callable(getattr(language_model, "preprocess_embed", None)),
                             thinks=isinstance(language_model, BaseQwen3))


def encoder_prompt(request, generation: EncoderGeneration) -> str:
    """The chat text the encoder is given: the request's Qwen chat text, Qwen3's thinking switched off."""
    return request.prompt + (QWEN3_NO_THINKING if generation.thinks else "")


def clip_generate_fn(clip, generation: EncoderGeneration):
    """A cogniedit generate function running ComfyUI's own text generation on the loaded encoder.

    The prompt is complete chat text: `llama_template="{}"` keeps a template-wrapping tokenizer (klein's) from
    wrapping it again (Qwen tokenizers keep text starting with <|im_start|> as is anyway), `min_length=1` stops
    klein's padding to 512 tokens, and the image goes on the <|image_pad|> token of encoders that see."""

    def generate(request):
        images = [] if request.image is None else [torch.from_numpy(request.image)[None].float() / 255.0]
        tokens = clip.tokenize(encoder_prompt(request, generation), llama_template="{}", images=images, min_length=1)
        s = request.settings
        sampling = s.temperature > 0
        ids = clip.generate(tokens, do_sample=sampling, max_length=s.max_new_tokens,
                            temperature=s.temperature if sampling else 1.0, top_k=0, top_p=s.top_p,
                            seed=s.seed if sampling else None)
        return clip.decode(ids)

    return generate
