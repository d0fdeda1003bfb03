"""Token Focus Relocation (paper section 3), host-free.

spans.py         focus phrases -> token positions in the DiT's text sequence (Qwen-Image, -Edit, Flux/T5)
bias.py          training-free focus: attention-logit bias / value scaling, schedule and block gating
override.py      ComfyUI-compatible ``optimized_attention_override`` built from the two above (+ probe)
learned.py       the paper's learned mode: per-layer position predictor + xi soft tokens
weights_file.py  the focus-weights safetensors format, base-model hash, checked loading
"""
