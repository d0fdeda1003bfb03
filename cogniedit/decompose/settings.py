"""Settings shared by every decomposition backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .prompt import PROMPT_VERSION


@dataclass(frozen=True)
class DecomposeSettings:
    """max_new_tokens: the paper generates up to 1024 tokens.
    temperature: 0 = greedy (reproducible, cacheable); > 0 samples with `seed` and `top_p`.
    image_max_pixels: the source image is shrunk to this area before the model sees it (the paper
        conditions its MLLM on a 384x384-pixel area); 0 keeps the full size.
    timeout_s: network backends: a wall-clock deadline for the whole call (connecting, waiting, reading
        and every retry); a server that trickles its reply is cut off when it passes.
    retries / backoff_s: network backends: more tries for transient failures (exponential backoff),
        only while the deadline leaves time for them.
    strict: raise instead of falling back to rules when the model fails or answers nothing usable.
    """

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    image_max_pixels: int = 384 * 384
    timeout_s: float = 120.0
    retries: int = 2
    backoff_s: float = 1.0
    strict: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")

    def identity(self) -> dict:
        """The fields that change a model's answer (cache key); transport settings are left out."""
        fields = asdict(self)
        for transport in ("timeout_s", "retries", "backoff_s", "strict"):
            fields.pop(transport)
        if self.temperature == 0:
            fields.pop("seed")
            fields.pop("top_p")
        fields["prompt_version"] = PROMPT_VERSION
        return fields
