"""The editor's architecture configuration (stored as JSON in the weights file's metadata)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .latent import TOKEN_CHANNELS

FORMAT = "cogniedit-shapeedit-editor/1"


@dataclass(frozen=True)
class EditorConfig:
    # diffusers QwenImageTransformer2DModel (narrow Qwen-Image-Edit DiT); keys equal ComfyUI's class.
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)  # sums to attention_head_dim
    # tiny Qwen2 text encoder (transformers Qwen2Model); its hidden size is the DiT's joint_attention_dim.
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate: int = 128
    text_vocab_rows: int = 64  # len(remap table) + 1 (UNK); fixed by the vocabulary at build time
    # what the transformer's output means: "x0_residual" (clean tokens minus the source image's tokens, so a zero
    # output is "change nothing") or "x0" (clean tokens); velocity() converts either to v = noise - x0.
    prediction: str = "x0_residual"
    min_sigma: float = 1e-3  # sigma floor when converting an x0 prediction to a velocity

    def __post_init__(self):
        if self.prediction not in ("x0", "x0_residual"):
            raise ValueError(f"prediction must be 'x0' or 'x0_residual', got {self.prediction!r}")
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(f"axes_dims_rope {self.axes_dims_rope} must sum to attention_head_dim {self.attention_head_dim}")

    def transformer_kwargs(self) -> dict:
        return dict(
            patch_size=2,
            in_channels=TOKEN_CHANNELS,
            out_channels=TOKEN_CHANNELS // 4,
            num_layers=self.num_layers,
            attention_head_dim=self.attention_head_dim,
            num_attention_heads=self.num_attention_heads,
            joint_attention_dim=self.text_hidden,
            axes_dims_rope=tuple(self.axes_dims_rope),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EditorConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"editor config has unknown fields {sorted(unknown)}; the weights file is newer than "
                             "this code: update CogniEdit or retrain with python -m cogniedit.shapes.editor.train")
        if "axes_dims_rope" in data:
            data["axes_dims_rope"] = tuple(data["axes_dims_rope"])
        return cls(**data)
