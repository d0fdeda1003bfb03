"""Instruction -> text tokens for the editor: the real Qwen2.5 tokenizer and a tiny Qwen2 text encoder.

Instructions go through Qwen-Image's chat template (user turn, then the assistant header) and, as Qwen-Image does,
the template prefix ``<|im_start|>user\\n`` is dropped from the encoder output, so text position 0 is the first
instruction token and the last 5 positions are ``<|im_end|> \\n <|im_start|> assistant \\n`` (the same layout as
ComfyUI's Qwen-Image text conditioning). Token ids are the real Qwen2.5 ids; the encoder's embedding only covers
the ids the ShapeEdit world uses, through a remap table (``TextVocab``) that is stored in the weights file.
Unknown ids map to row 0 (UNK).
"""

from __future__ import annotations

from typing import Iterable

import torch

from ...text.tokenizer import load_qwen25_tokenizer

PREFIX = "<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
PAD_TOKEN = "<|endoftext|>"
UNK_ROW = 0


def template(instruction: str) -> str:
    return f"{PREFIX}{instruction}{SUFFIX}"


def tokenizer():
    return load_qwen25_tokenizer()


def prefix_length() -> int:
    return len(tokenizer()(PREFIX)["input_ids"])


def tokenize(instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Qwen2.5 ids of the templated instructions, right-padded: ``(ids [B, L], mask [B, L])``.

    The ids include the template prefix (the encoder reads it; ``encode`` drops it from the output).
    """
    if isinstance(instructions, str) or not all(isinstance(s, str) for s in instructions):
        raise TypeError("instructions must be a list of strings (one per image)")
    tok = tokenizer()
    rows = [tok(template(s))["input_ids"] for s in instructions]
    length = max(len(r) for r in rows)
    pad = tok.convert_tokens_to_ids(PAD_TOKEN)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


class TextVocab(torch.nn.Module):
    """Remap real Qwen2.5 ids to rows of the small embedding: row ``i + 1`` for ``real_ids[i]``, 0 for unknown."""

    def __init__(self, real_ids: torch.Tensor):
        super().__init__()
        real_ids = torch.as_tensor(real_ids, dtype=torch.long).unique(sorted=True)
        self.register_buffer("real_ids", real_ids)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "TextVocab":
        tok = tokenizer()
        ids = set(tok(template(""))["input_ids"]) | {tok.convert_tokens_to_ids(PAD_TOKEN)}
        for text in texts:
            ids.update(tok(template(text))["input_ids"])
        return cls(torch.tensor(sorted(ids)))

    @property
    def size(self) -> int:
        """Embedding rows: one per known id plus the UNK row."""
        return int(self.real_ids.numel()) + 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.real_ids, ids).clamp(max=self.real_ids.numel() - 1)
        known = self.real_ids[pos] == ids
        return torch.where(known, pos + 1, torch.full_like(ids, UNK_ROW))
