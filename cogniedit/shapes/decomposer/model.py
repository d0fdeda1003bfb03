"""Training-side view of the stock Qwen2.5-VL: a compact embedding table, the exact full-vocabulary loss, and
the constant system-prompt prefix computed once per batch.

* ``CompactEmbedding`` holds rows only for the ids the training data contains (``vocab``, real Qwen2.5 ids);
  any other id reads as a zero vector. The exported model's full 151 936-row table is zero on those ids, so the
  two compute the same function.
* ``exact_loss``: with tied embeddings a zero row scores logit 0, so the full-vocabulary log-sum-exp is that of
  the compact logits plus ``log(151936 - K)``: the loss is the full model's cross-entropy, at the cost of K columns.
* ``hidden_states``: every sample starts with the same tokens (chat header + the system prompt, up to and
  including ``<|vision_start|>``), so their keys/values are computed once (batch 1, with gradient) and shared.
  ``tests/core/test_shapes_decomposer.py`` checks the result equals one plain forward of the whole sequence.
"""

from __future__ import annotations

import math

import torch

from .config import VOCAB_SIZE


class CompactEmbedding(torch.nn.Module):
    def __init__(self, vocab: torch.Tensor, dim: int, std: float = 0.02, seed: int = 0):
        super().__init__()
        vocab = torch.as_tensor(vocab, dtype=torch.long).unique(sorted=True)
        self.register_buffer("vocab", vocab)
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(len(vocab), dim, generator=generator) * std)

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row index, known) for real ids; unknown ids get row 0 and known False."""
        pos = torch.searchsorted(self.vocab, ids).clamp(max=len(self.vocab) - 1)
        known = self.vocab[pos] == ids
        return torch.where(known, pos, torch.zeros_like(pos)), known

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows, known = self.rows(ids)
        return self.weight[rows] * known.unsqueeze(-1).to(self.weight.dtype)

    def full_table(self) -> torch.Tensor:
        table = torch.zeros(VOCAB_SIZE, self.weight.shape[1], dtype=self.weight.dtype)
        table[self.vocab] = self.weight.detach()
        return table


FINAL_NORM_INIT = 4.0  # see to_training_model


def to_training_model(model, vocab: torch.Tensor, seed: int = 0):
    """Swap the stock model's embedding (and, through the tie, its head) for a CompactEmbedding, in place.

    The 151 936 - K zero rows all score logit 0, so a known token needs a logit near log(151936) = 11.9 to be
    likely at all; the final norm starts at 4 (not 1) so that logits of that size are reachable from the start
    instead of after a hundred steps of growing the table."""
    dim = model.config.text_config.hidden_size
    model.model.language_model.embed_tokens = CompactEmbedding(vocab, dim, model.config.text_config.initializer_range,
                                                               seed)
    with torch.no_grad():
        model.model.language_model.norm.weight.fill_(FINAL_NORM_INIT)
    model.lm_head = torch.nn.Identity()  # the loss uses the compact table; the exported model ties it again
    return model


def exact_loss(model, hidden: torch.Tensor, target_ids: torch.Tensor, weights: torch.Tensor | None = None):
    """Mean full-vocabulary cross-entropy of ``target_ids`` (real ids, all in the vocabulary) at ``hidden``."""
    emb = model.model.language_model.embed_tokens
    rows, known = emb.rows(target_ids)
    if not bool(known.all()):
        raise ValueError("a target token is outside the decomposer's vocabulary; rebuild the vocabulary")
    logits = hidden @ emb.weight.T
    rest = math.log(VOCAB_SIZE - len(emb.vocab))
    logits = torch.cat([logits, logits.new_full((logits.shape[0], 1), rest)], dim=1)
    losses = torch.nn.functional.cross_entropy(logits, rows, reduction="none")
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum()


def _expand_cache(cache, batch: int):
    from transformers import DynamicCache

    shared = DynamicCache()
    for index, layer in enumerate(cache.layers):
        shared.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), index)
    return shared


class CellProbe(torch.nn.Module):
    """Training-only linear probes on the 9 visual tokens (one per grid cell, reading order): the colour and shape
    of the cell's object (class 0: empty) from the vision tower's output, and the cell's row, column, colour and
    shape from the language model's hidden state at that token after ``LM_PROBE_LAYER`` layers. They teach the
    vision tower to see and the language model to know where each visual token sits before it has learnt to
    describe the scene; they are not part of the exported model."""

    def __init__(self, dim: int, colours: int, shapes: int, grid: int = 3):
        super().__init__()
        self.colour = torch.nn.Linear(dim, colours + 1)
        self.shape = torch.nn.Linear(dim, shapes + 1)
        self.lm = torch.nn.Linear(dim, 2 * grid + colours + 1 + shapes + 1)
        self.sizes = (grid, grid, colours + 1, shapes + 1)

    def loss(self, vision: torch.Tensor, text: torch.Tensor, labels: dict) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy
        loss = ce(self.colour(vision), labels["cell_colour"]) + ce(self.shape(vision), labels["cell_shape"])
        parts = torch.split(self.lm(text), self.sizes, dim=-1)
        for logits, key in zip(parts, ("cell_row", "cell_col", "cell_colour", "cell_shape")):
            loss = loss + ce(logits, labels[key])
        return loss


LM_PROBE_LAYER = 2


def hidden_states(model, batch: dict, image_outputs=None, all_layers: bool = False):
    """Final-norm hidden states ``[B, T, H]`` of the suffix tokens (the prefix is shared, see module doc); with
    ``all_layers``, also the tuple of every layer's hidden states."""
    prefix = batch["prefix_ids"][None]
    p = prefix.shape[1]
    prefix_positions = torch.arange(p).view(1, 1, -1).expand(3, 1, -1)
    out = model.model(input_ids=prefix, position_ids=prefix_positions, use_cache=True)
    suffix = batch["input_ids"]
    b, t = suffix.shape
    mask = torch.cat([torch.ones(b, p, dtype=batch["attention_mask"].dtype), batch["attention_mask"]], dim=1)
    cache = out["cache"] if "cache" in out else out.past_key_values
    images = {"pixel_values": batch["pixel_values"]} if image_outputs is None else \
        {"mm_encoder_outputs": {"image": image_outputs}}
    out = model.model(input_ids=suffix, image_grid_thw=batch["image_grid_thw"], attention_mask=mask,
                      position_ids=batch["position_ids"], cache=_expand_cache(cache, b), use_cache=True,
                      output_hidden_states=all_layers, **images)
    return (out.last_hidden_state, out.hidden_states) if all_layers else out.last_hidden_state


def batch_loss(model, batch: dict, probe: CellProbe | None = None, probe_weight: float = 1.0) -> torch.Tensor:
    """The answer tokens' loss, plus ``probe_weight`` times the cell probe's when a probe and cell labels are given."""
    if probe is None or "cell_colour" not in batch:
        hidden = hidden_states(model, batch)
    else:
        image_outputs = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"], return_dict=True)
        hidden, layers = hidden_states(model, batch, image_outputs, all_layers=True)
    picked = hidden.reshape(-1, hidden.shape[-1])[batch["label_index"]]
    loss = exact_loss(model, picked, batch["label_ids"], batch.get("label_weights"))
    if probe is not None and "cell_colour" in batch:
        vision = torch.cat(list(image_outputs.pooler_output))
        text = layers[min(LM_PROBE_LAYER, len(layers) - 1)][batch["input_ids"] == model.config.image_token_id]
        loss = loss + probe_weight * probe.loss(vision, text, batch)
    return loss


def export_model(training_model):
    """A stock Qwen2_5_VLForConditionalGeneration with the trained weights and the full-vocabulary table."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    emb = training_model.model.language_model.embed_tokens
    model = Qwen2_5_VLForConditionalGeneration(training_model.config)
    state = {k: v for k, v in training_model.state_dict().items()
             if "embed_tokens" not in k and not k.startswith("cell_probe.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected]
    missing = [k for k in missing if "embed_tokens" not in k and k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"export: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.copy_(emb.full_table())
    model.tie_weights()
    return model.eval()
