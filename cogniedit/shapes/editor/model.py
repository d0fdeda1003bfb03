"""ShapeEditor: a narrow Qwen-Image-Edit DiT (diffusers' QwenImageTransformer2DModel) + tiny Qwen2 text encoder.

Edit conditioning as Qwen-Image-Edit: the source image's latent tokens are appended after the noisy image tokens
in the image stream, and ``img_shapes`` lists both grids, so the RoPE gives the reference the same (h, w) ids
with frame index 1 (diffusers' QwenEmbedRope enumerates the shapes). The transformer's output for the reference
tokens is discarded, as QwenImageEditPipeline does. The transformer predicts the clean latent tokens (x0);
``velocity`` turns that into the flow velocity ``v = (x - x0) / sigma = noise - x0`` (see docs/shapeedit-editor.md
for why x-prediction).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

from ...sampling.schedule import flow_sigmas
from ...sampling.trajectory import initial_noise, sample_trajectory
from . import text as text_mod
from .config import EditorConfig
from .latent import GRID, TOKEN_CHANNELS, images_to_tokens, tokens_to_images

log = logging.getLogger(__name__)


def build_transformer(config: EditorConfig):
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(**config.transformer_kwargs())


def build_text_encoder(config: EditorConfig):
    from transformers import Qwen2Config, Qwen2Model

    cfg = Qwen2Config(
        vocab_size=config.text_vocab_rows,
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return Qwen2Model(cfg)


def encode_instruction_ids(vocab, text_encoder, prefix_len: int, ids: torch.Tensor, mask: torch.Tensor):
    """The editor's text conditioning: real ids -> vocabulary rows -> Qwen2 hidden states, the template prefix
    dropped. Shared by ``ShapeEditor.encode_ids`` and the ComfyUI CLIP of the editor (nodes/shapeedit_model.py)."""
    rows = vocab(ids.to(vocab.real_ids.device))
    hidden = text_encoder(input_ids=rows, attention_mask=mask).last_hidden_state
    return hidden[:, prefix_len:], mask[:, prefix_len:]


class ShapeEditor(nn.Module):
    """The ShapeEdit editor. ``transformer`` is the diffusers module (attention processors can be swapped there,
    and ``attention_kwargs`` reach them), ``text_encoder`` the transformers Qwen2Model, ``vocab`` the id remap."""

    def __init__(self, config: EditorConfig, vocab: text_mod.TextVocab):
        super().__init__()
        if vocab.size != config.text_vocab_rows:
            raise ValueError(f"vocabulary has {vocab.size} rows but the config says {config.text_vocab_rows}")
        self.config = config
        self.vocab = vocab
        self.text_encoder = build_text_encoder(config)
        self.transformer = build_transformer(config)
        self.prefix_len = text_mod.prefix_length()
        self.metadata: dict = {}

    # --- text -------------------------------------------------------------------------------------------
    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Real Qwen2.5 ids (with the template prefix) and mask, ``[B, L]``."""
        return text_mod.tokenize(instructions)

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings ``[B, L - prefix, text_hidden]`` and mask; position 0 = first instruction token."""
        return encode_instruction_ids(self.vocab, self.text_encoder, self.prefix_len, ids, mask)

    def encode_text(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(instructions)
        return self.encode_ids(ids, mask)

    # --- latents ------------------------------------------------------------------------------------------
    @staticmethod
    def image_to_latent(images) -> torch.Tensor:
        """uint8 ``[B, 48, 48, 3]`` -> packed latent tokens ``[B, 36, 192]``."""
        return images_to_tokens(images)

    @staticmethod
    def latent_to_image(tokens: torch.Tensor) -> np.ndarray:
        return tokens_to_images(tokens)

    # --- denoiser -----------------------------------------------------------------------------------------
    def predict_x0(self, x_tokens, sigma, text_embeddings, text_mask, ref_tokens, attention_kwargs=None):
        """Clean-token prediction for the noisy tokens ``[B, N, 192]`` at ``sigma`` ``[B]`` (the transformer's output,
        plus the source tokens for ``prediction="x0_residual"``)."""
        b, n, _ = x_tokens.shape
        sigma = torch.as_tensor(sigma, dtype=x_tokens.dtype, device=x_tokens.device).reshape(-1).expand(b)
        shapes = [[(1, GRID, GRID), (1, GRID, GRID)]] * b
        out = self.transformer(
            hidden_states=torch.cat([x_tokens, ref_tokens], dim=1),
            encoder_hidden_states=text_embeddings,
            encoder_hidden_states_mask=text_mask,
            timestep=sigma,
            img_shapes=shapes,
            attention_kwargs=attention_kwargs,
            return_dict=False,
        )[0]
        out = out[:, :n]  # drop the reference tokens' outputs, as QwenImageEditPipeline does
        return ref_tokens + out if self.config.prediction == "x0_residual" else out

    def velocity(self, x_tokens, sigma, text, ref_tokens, attention_kwargs=None):
        """Flow velocity ``v = noise - x0`` at ``sigma``. ``text``: a list of instructions or ``(embeddings, mask)``."""
        if isinstance(text, (list, tuple)) and text and isinstance(text[0], str):
            text = self.encode_text(list(text))
        embeddings, mask = text
        x0 = self.predict_x0(x_tokens, sigma, embeddings, mask, ref_tokens, attention_kwargs)
        s = torch.as_tensor(sigma, dtype=x_tokens.dtype).reshape(-1, 1, 1).clamp(min=self.config.min_sigma)
        return (x_tokens - x0) / s

    # --- editing ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def edit(
        self,
        images,
        instructions: list[str],
        seed: int = 0,
        steps: int = 12,
        shift: float = 1.0,
        attention_kwargs: dict | None = None,
        focus: Callable | None = None,
        callback=None,
    ) -> np.ndarray:
        """Edit uint8 images ``[B, 48, 48, 3]`` by the instructions; deterministic for a seed (Euler ODE).

        ``focus``: optional hook ``focus(editor, ids, mask) -> dict`` whose entries are merged into the
        ``attention_kwargs`` the transformer's attention processors receive (Token Focus Relocation plugs in here).
        """
        was_training = self.training
        self.eval()
        try:
            ref = self.image_to_latent(images)
            if len(instructions) != ref.shape[0]:
                raise ValueError(f"{ref.shape[0]} images but {len(instructions)} instructions")
            ids, mask = self.tokenize(list(instructions))
            embeddings, text_mask = self.encode_ids(ids, mask)
            kwargs = dict(attention_kwargs or {})
            if focus is not None:
                kwargs.update(focus(self, ids, mask) or {})
            kwargs = kwargs or None
            x = initial_noise(ref.shape, seed)
            sigmas = flow_sigmas(steps, shift)

            def velocity_fn(x_t, sigma):
                return self.velocity(x_t, sigma, (embeddings, text_mask), ref, kwargs)

            traj = sample_trajectory(velocity_fn, x, sigmas, eta=0.0, callback=callback, seed=seed)
            return self.latent_to_image(traj.final)
        finally:
            self.train(was_training)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def new_editor(config: EditorConfig, vocab: text_mod.TextVocab, seed: int = 0) -> ShapeEditor:
    """A freshly initialised editor (deterministic for a seed); the DiT's output projection starts at zero."""
    torch.manual_seed(seed)
    editor = ShapeEditor(config, vocab)
    nn.init.zeros_(editor.transformer.proj_out.weight)
    nn.init.zeros_(editor.transformer.proj_out.bias)
    assert editor.transformer.proj_out.out_features == TOKEN_CHANNELS
    return editor
