"""Tiny random ShapeEdit editors (the real classes, random weights) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_editor(path, seed: int = 0, layers: int = 1, heads: int = 2, n_cases: int = 64) -> Path:
    """A 1-block, 64-wide editor whose output projection is random (not zero), so LoRA gets gradients."""
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.editor import EditorConfig, new_editor, save_editor
    from cogniedit.shapes.editor.text import TextVocab

    vocab = TextVocab.from_texts([c.instruction for c in generate_cases(n_cases, seed=0)])
    config = EditorConfig(num_layers=layers, num_attention_heads=heads, attention_head_dim=32, text_hidden=32,
                          text_layers=1, text_heads=2, text_intermediate=64, text_vocab_rows=vocab.size)
    editor = new_editor(config, vocab, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        w = editor.transformer.proj_out.weight
        w.copy_(torch.randn(w.shape, generator=gen) * 0.02)
    return save_editor(editor, path)
