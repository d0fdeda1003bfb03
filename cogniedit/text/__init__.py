"""Text side shared by the editor, focus relocation and decomposition: the real Qwen2.5 tokenizer, and the Mistral
tekken tokenizer FLUX.2 dev's encoder stores in its file (tekken.py)."""
