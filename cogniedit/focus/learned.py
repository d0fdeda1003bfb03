"""The paper's learned Token Focus Relocation: per-layer position predictor + xi soft tokens.

For each focused layer i (paper eq. in section 3.2):
    pos = p_eta(h_i)                  start of a xi-token window over the instruction tokens
    h_i[pos : pos + xi] <- s_i        the layer's learned soft tokens replace those text tokens
    attention forced onto the window  (here: the window weights feed the focus logit bias)

The authors' code takes ``argmax`` of the predictor, so it gets no gradient (reference notes 3.3/7.9).
Here the start is a distribution ``p`` over starts; the window is written softly,
``h'_j = (1 - w_j) h_j + sum_s p_s * soft[j - s]`` with ``w_j = sum_{s <= j < s + xi} p_s``, which is
differentiable in both the predictor and the soft tokens. ``hard=True`` uses a straight-through one-hot
(forward = the code's argmax replacement, backward = the soft gradients).

Window length (ours): per sample ``min(xi, ceil(n / 2))`` for an instruction of n tokens (``fitted_xi``), so the
predictor always has a choice and at least half the instruction keeps its own tokens; with the paper's xi = 64 a
shorter instruction would otherwise be overwritten whole, from one possible start, with no gradient to the predictor.

Optional gate (ours, for a warm start): with a per-layer ``gate`` logit, ``a = sigmoid(gate)`` scales the whole
relocation, ``h'_j = (1 - a w_j) h_j + a sum_s p_s soft[j - s]`` and window weights ``a w`` (so the attention
forcing too). A module started at a strongly negative gate is near the identity, so fine-tuning starts from the
base model's behaviour instead of one whose instruction tokens are overwritten by random soft tokens. Without a
gate (the paper, files written before it) ``a = 1``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .bias import block_active, parse_blocks


def count_blocks(model: nn.Module) -> dict:
    """Transformer blocks of a DiT by type: {"double": n, "single": m} (diffusers or ComfyUI names)."""
    found = {}
    for attr, kind in (("transformer_blocks", "double"), ("double_blocks", "double"),
                       ("single_transformer_blocks", "single"), ("single_blocks", "single")):
        blocks = getattr(model, attr, None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            found[kind] = found.get(kind, 0) + len(blocks)
    if not found:
        raise ValueError(f"{type(model).__name__} has no transformer_blocks/double_blocks/single_blocks; pass a DiT")
    return found


def text_hidden_size(model: nn.Module) -> int:
    """Width of the DiT's text stream after its input projection (txt_in / context_embedder)."""
    for attr in ("txt_in", "context_embedder"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            return layer.out_features
    config = getattr(model, "config", None)
    for key in ("inner_dim",):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    if config is not None and getattr(config, "num_attention_heads", None) and getattr(config, "attention_head_dim", None):
        return int(config.num_attention_heads) * int(config.attention_head_dim)
    raise ValueError(f"cannot tell the text hidden size of {type(model).__name__}; pass hidden_size explicitly")


class LearnedFocus(nn.Module):
    """Per-layer predictor (Linear over the channel-mean of ``window`` text positions) and soft tokens.

    ``block_indices``: the DiT blocks (of the main/double stack) the module acts on, in order; layer k
    of this module serves block ``block_indices[k]``. State-dict names: ``soft_tokens`` [n, xi, d],
    ``predictors.<k>.weight|bias`` and, with ``gate_init``, ``gate`` [n] (logits; see the module docstring).
    """

    def __init__(self, hidden_size: int, block_indices: Sequence[int], xi: int = 64, window: int = 128,
                 init_std: float = 0.02, gate_init: float | None = None):
        super().__init__()
        if xi < 1 or window < xi:
            raise ValueError(f"need 1 <= xi <= window, got xi={xi}, window={window}")
        self.hidden_size, self.xi, self.window = int(hidden_size), int(xi), int(window)
        self.block_indices = [int(b) for b in block_indices]
        n = len(self.block_indices)
        self.soft_tokens = nn.Parameter(torch.randn(n, xi, hidden_size) * init_std)
        self.predictors = nn.ModuleList(nn.Linear(window, window - xi + 1) for _ in range(n))
        self.gate = None if gate_init is None else nn.Parameter(torch.full((n,), float(gate_init)))

    @classmethod
    def for_model(cls, model: nn.Module, blocks: str = "last:9", xi: int = 64, window: int = 128,
                  hidden_size: int | None = None, gate_init: float | None = None) -> "LearnedFocus":
        """Blocks counted from the model itself (the paper's code: the last 9 of 60 blocks)."""
        counts = count_blocks(model)
        total = counts.get("double", 0) or counts.get("single", 0)
        spec = parse_blocks(blocks)
        chosen = [i for i in range(total) if block_active(i, spec, "double", total)]
        if not chosen:
            raise ValueError(f"block spec {blocks!r} selects none of the model's {total} blocks")
        return cls(hidden_size or text_hidden_size(model), chosen, xi=xi, window=window, gate_init=gate_init)

    def layer_of(self, block_index: int) -> int | None:
        try:
            return self.block_indices.index(int(block_index))
        except ValueError:
            return None

    def fitted_xi(self, text_len) -> torch.Tensor:
        """Window length per sample: ``xi``, but at most half the instruction (rounded up, at least 1).

        A window as long as the instruction has one start: the predictor would get no gradient and the whole
        instruction would be replaced by prompt-independent soft tokens (the paper's xi = 64 against most edit
        instructions). At most half keeps ``floor(n / 2) + 1`` starts to choose from and half the prompt's own
        tokens; instructions of 2 xi tokens or more get the full ``xi``. A shorter window uses the first soft tokens."""
        lens = torch.as_tensor(text_len).long()
        return ((lens + 1) // 2).clamp(min=1, max=self.xi)

    def start_distribution(self, txt: torch.Tensor, layer: int, text_start, text_len, hard: bool = False,
                           temperature: float = 1.0) -> torch.Tensor:
        """``[B, window - xi + 1]`` probabilities of each window start (relative to ``text_start``)."""
        b = txt.shape[0]
        starts = torch.as_tensor(text_start, device=txt.device).long().expand(b)
        lens = torch.as_tensor(text_len, device=txt.device).long().expand(b)
        idx = starts[:, None] + torch.arange(self.window, device=txt.device)[None]       # [B, window]
        valid = idx < (starts + lens)[:, None]
        pooled = txt.mean(-1).gather(1, idx.clamp(max=txt.shape[1] - 1)) * valid           # channel mean
        logits = self.predictors[layer](pooled.to(self.predictors[layer].weight.dtype)) / temperature
        n_starts = self.window - self.xi + 1
        # a start is usable when its (fitted) window stays inside the instruction (start 0 always is)
        last_ok = (lens - self.fitted_xi(lens)).clamp(min=0)
        ok = torch.arange(n_starts, device=txt.device)[None] <= last_ok[:, None]
        probs = logits.masked_fill(~ok, float("-inf")).softmax(-1)
        if hard:  # straight-through: forward = argmax (the authors' code), backward = soft
            one_hot = torch.nn.functional.one_hot(probs.argmax(-1), n_starts).to(probs.dtype)
            probs = one_hot - probs.detach() + probs
        return probs

    def forward(self, txt: torch.Tensor, block_index: int, text_start=0, text_len=None, hard: bool = False,
                project: Callable | None = None):
        """Relocate focus in one block. Returns ``(new_txt, window_weights [B, S])``.

        ``txt``: the DiT text stream ``[B, S, d]``; ``text_start``/``text_len``: where the instruction
        tokens are (per sample or shared), so vision tokens are never overwritten; ``project`` maps soft
        tokens into the text stream when they live in another space (the code: txt_in(txt_norm(.))).
        Blocks outside ``block_indices`` return ``txt`` unchanged and zero weights.
        """
        layer = self.layer_of(block_index)
        b, s, _ = txt.shape
        if layer is None:
            return txt, txt.new_zeros(b, s)
        if text_len is None:  # instruction runs to the end of the text stream
            text_len = s - torch.as_tensor(text_start, device=txt.device).long()
        probs = self.start_distribution(txt, layer, text_start, text_len, hard=hard)        # [B, n_starts]
        soft = self.soft_tokens[layer]
        if project is not None:
            soft = project(soft)
        soft = soft.to(txt.dtype)
        n_starts = probs.shape[1]
        starts = torch.as_tensor(text_start, device=txt.device).long().expand(b)
        lens = torch.as_tensor(text_len, device=txt.device).long().expand(b)
        # gather[s, j, x] = 1: window position j (relative) holds soft token x = j - s when the window starts at s;
        # soft tokens past the sample's fitted window length are not written (used[b, x])
        rel = torch.arange(self.window, device=txt.device)[None, :] - torch.arange(n_starts, device=txt.device)[:, None]
        inside = (rel >= 0) & (rel < self.xi)                                                  # [n_starts, window]
        gather = torch.zeros(n_starts, self.window, self.xi, device=txt.device, dtype=probs.dtype)
        si, ji = torch.nonzero(inside, as_tuple=True)
        gather[si, ji, rel[si, ji]] = 1.0
        used = torch.arange(self.xi, device=txt.device)[None] < self.fitted_xi(lens)[:, None]
        # holds[b, j, x]: probability that relative position j holds soft token x
        holds = torch.einsum("bs,sjx->bjx", probs, gather) * used[:, None, :].to(probs.dtype)
        weights_rel = holds.sum(-1)                                                            # [B, window]
        written = (holds @ soft.to(probs.dtype)).to(txt.dtype)  # token written at j: sum_s p_s soft[j - s]
        idx = starts[:, None] + torch.arange(self.window, device=txt.device)[None]
        in_range = (idx < s) & (idx < (starts + lens)[:, None])  # never write past the instruction
        idx = idx.clamp(max=s - 1)
        w = (weights_rel * in_range).to(txt.dtype)
        window_w = txt.new_zeros(b, s).scatter_add(1, idx, w)
        written_full = txt.new_zeros(txt.shape).scatter_add(1, idx[..., None].expand(-1, -1, txt.shape[2]),
                                                            written * in_range[..., None])
        if self.gate is not None:
            a = torch.sigmoid(self.gate[layer]).to(txt.dtype)
            window_w, written_full = a * window_w, a * written_full
        new_txt = txt * (1 - window_w)[..., None] + written_full
        return new_txt, window_w
