"""The Mistral tekken tokenizer of a ComfyUI CLIP (FLUX.2 dev's Mistral-3 24B encoder), for Token Focus.

ComfyUI ships no tokenizer file for Mistral-3: the tekken JSON is stored inside the text-encoder file, and
``comfy.sd.load_text_encoder_state_dicts`` hands it to the CLIP's tokenizer as ``tokenizer_data["tekken_model"]``
(``Mistral3Tokenizer.tekken_data``, also its ``state_dict()["tekken_model"]``). So the phrases can only be placed
with the CLIP that encodes the prompt; the blob is turned into a fast tokenizer by ``cogniedit.text.tekken``.
"""

from __future__ import annotations

import torch

from ..cogniedit.focus.text_layout import TextLayout
from ..cogniedit.text.tekken import blob_bytes, tekken_tokenizer

NEEDS_CLIP = ("Token Focus on FLUX.2 dev needs its clip input: connect the CLIP that encodes the prompt (the "
              "Mistral-3 tokenizer that places the phrases is stored in that text-encoder file)")
NOT_MISTRAL = ("the CLIP connected to Token Focus has no Mistral tekken tokenizer, so it is not FLUX.2 dev's "
               "Mistral-3 text encoder: connect the CLIP that encodes the prompt")


def tekken_blob(clip) -> bytes:
    """The tekken JSON of ``clip``'s tokenizer as bytes; a clear error when there is none."""
    if clip is None:
        raise ValueError(NEEDS_CLIP)
    # comfy.sd1_clip.SD1Tokenizer.state_dict passes on its Mistral3Tokenizer's {"tekken_model": ...}
    state = getattr(getattr(clip, "tokenizer", None), "state_dict", None)
    blob = (state() or {}).get("tekken_model") if callable(state) else None
    if blob is None:
        raise ValueError(NOT_MISTRAL)
    if torch.is_tensor(blob):  # as read from the safetensors file: a uint8 tensor
        blob = blob.cpu().numpy().tobytes()
    return blob_bytes(blob)


def check_template(clip, layout: TextLayout) -> None:
    """Positions are counted from the end: the CLIP's template must end the way the layout's does after the prompt."""
    template = getattr(clip.tokenizer, "llama_template", None)
    if not isinstance(template, str) or "{}" not in template:
        return  # nothing to compare (ComfyUI 0.33's Flux2Tokenizer has one)
    ours, theirs = layout.template.split("{}")[1], template.split("{}")[1]
    if ours != theirs:
        raise ValueError(f"this ComfyUI's FLUX.2 dev template puts {theirs[:40]!r} after the prompt, Token Focus "
                         f"knows {ours!r} (ComfyUI 0.33's): positions would be wrong; update CogniEdit")


def clip_tekken_tokenizer(clip, layout: TextLayout):
    """The fast tokenizer (with offsets) equal to what ``clip`` tokenizes the prompt with."""
    blob = tekken_blob(clip)
    check_template(clip, layout)
    return tekken_tokenizer(blob)
