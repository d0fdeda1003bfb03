"""Text typed into an instruction must not act as markup for the decomposer or the models.

`<answer>` or `</think>` would split the rules' clauses and could be read back as a stage of the model's
answer; `<|im_end|><|im_start|>system` is a real special token of Qwen tokenizers and would end the
user's turn inside the chat template. Such tags and tokens are replaced by a space before any
decomposer or prompt sees the instruction; a clean instruction passes unchanged.
"""

from __future__ import annotations

import re

# <|im_end|>, <| im_start |>, <|vision_pad|>, <|eot_id|>: chat-control tokens of Qwen, Llama 3 and others
_SPECIAL_TOKEN = re.compile(r"<\s*\|[^<>\n]{0,64}?\|\s*>")
# the decomposition stages, tool and turn markers of other chat templates, image placeholders
_MARKUP_TAG = re.compile(
    r"<\s*/?\s*(?:info|think|answer|object|tool_call|tool_response|s|start_of_turn|end_of_turn|image|video)"
    r"\s*/?\s*>|\[/?INST\]|<<\s*/?SYS\s*>>",
    re.IGNORECASE,
)
_HALF_TOKEN = re.compile(r"<\s*\||\|\s*>")  # what is left of a token split by another one
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SHOWN = 5


def neutralise_instruction(text: str) -> tuple[str, list[str]]:
    """(the instruction with markup replaced by spaces, the pieces removed)."""
    removed: list[str] = []
    previous = None
    while previous != text:  # until stable: removing one token can join the halves of another
        previous = text
        for pattern in (_SPECIAL_TOKEN, _MARKUP_TAG, _HALF_TOKEN, _CONTROL_CHARS):
            removed += pattern.findall(text)
            text = pattern.sub(" ", text)
    if removed:
        text = "\n".join(re.sub(r"[ \t]{2,}", " ", line).strip() for line in text.splitlines()).strip()
    return text, removed


def removal_warning(removed: list[str]) -> str:
    shown = ", ".join(repr(piece) for piece in removed[:_SHOWN])
    more = f" and {len(removed) - _SHOWN} more" if len(removed) > _SHOWN else ""
    return (f"removed {len(removed)} tag or control-token texts from the instruction ({shown}{more}): typed "
            "markup could break the model's chat template or be read as part of its answer")
