"""The four-stage decomposition prompt (paper section 2) in OpenAI chat format.

Stages and tags follow the paper's release: <info> visual comprehension, <think> reasoning,
<answer> the enriched instruction, <object> the target specification. The wording is ours; the
paper's one-paragraph system prompt is tightened so that small models keep colour, position and
count words verbatim (the focus module needs them) and list one target per line.

Messages carry the image as a placeholder part `{"type": "image"}` (what Hugging Face chat templates
expect); `with_image_url()` swaps it for an OpenAI `image_url` part with a base64 data URL, so the
PNG encoding is paid only by backends that send the image over the wire.
"""

from __future__ import annotations

import base64
import io

import numpy as np

TAGS = ("info", "think", "answer", "object")
PROMPT_VERSION = 1

SYSTEM_PROMPT = (
    "You analyse an image and an image-editing instruction, then rewrite the instruction so an image "
    "editor can follow it exactly. Work in four stages and wrap each in its tag:\n"
    "1. <info> Visual comprehension: describe the image in detail: the objects, how many of each, "
    "their colours, any text, and where things are relative to each other and to the frame. </info>\n"
    "2. <think> Reasoning: step by step, link the instruction to what is in the image: which objects "
    "it refers to, and what must change and what must stay the same. Do not repeat yourself. </think>\n"
    "3. <answer> Enriched instruction: one or two imperative sentences that merge the instruction with "
    "the context from the image. Keep every colour, position and number word of the instruction "
    "verbatim. </answer>\n"
    "4. <object> Target specification: one line per object to modify, giving its number, colour and "
    "position in the edited image. </object>\n"
    "Answer with exactly these four tagged sections, in this order, and nothing else."
)

USER_TEMPLATE = "Editing instruction: {instruction}"
IMAGE_PLACEHOLDER = {"type": "image"}


def build_messages(instruction: str, with_image: bool = True, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """Chat messages for one (image, instruction) pair; the image part is a placeholder."""
    content: list[dict] = [dict(IMAGE_PLACEHOLDER)] if with_image else []
    content.append({"type": "text", "text": USER_TEMPLATE.format(instruction=instruction)})
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": content},
    ]


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_image_url(messages: list[dict], image: np.ndarray | None) -> list[dict]:
    """OpenAI wire form: image placeholders become base64 PNG `image_url` parts (dropped without an image)."""
    url = png_data_url(image) if image is not None else None
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    if url is not None:
                        parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append(part)
            content = parts
        out.append({**message, "content": content})
    return out


def render_qwen_chat(messages: list[dict]) -> str:
    """The messages as Qwen2.5-VL chat text (vision markers where the image goes), ready for generation.

    For hosts that tokenise raw text themselves (ComfyUI's Qwen2.5-VL text encoder)."""
    lines = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            body = content
        else:
            body = "".join(
                "<|vision_start|><|image_pad|><|vision_end|>" if part.get("type") == "image" else part.get("text", "")
                for part in content
            )
        lines.append(f"<|im_start|>{message['role']}\n{body}<|im_end|>\n")
    return "".join(lines) + "<|im_start|>assistant\n"


def message_text(messages: list[dict], role: str) -> str:
    """All text parts of the messages of one role, joined."""
    texts = []
    for message in messages:
        if message["role"] != role:
            continue
        content = message["content"]
        texts.extend([content] if isinstance(content, str) else [p.get("text", "") for p in content if p.get("type") == "text"])
    return "\n".join(texts)
