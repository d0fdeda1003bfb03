"""Text side shared by the editor, focus relocation and decomposition: the real Qwen2.5 tokenizer."""
