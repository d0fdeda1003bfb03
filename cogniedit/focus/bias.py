"""Training-free focus: raise the attention image queries pay to chosen text keys.

Joint attention in Flux and Qwen-Image runs over ``cat(text, image[, reference images])``. Adding
``log(1 + strength * w_j)`` to the logits of text key j (w_j = 1 on focused tokens, or a soft window
weight in [0, 1]) multiplies that key's un-normalised attention by ``1 + strength * w_j`` before the
softmax renormalises. Only image rows are touched; text rows and (optionally) reference-image rows
keep their exact attention. Strength 0 or no focused token -> ``None`` so callers take the exact
unpatched path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

# ---------------------------------------------------------------------------------------------- weights


def focus_weights(spans_per_sample: Sequence, text_len: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[n, text_len]`` focus weights from per-sample positions or soft weight vectors.

    A sample entry is one of:
    * a list of token positions (weight 1); negative positions count from the end of the text
      (``-1`` = last token), positions outside the text are dropped;
    * a ``FocusSpans`` (``.positions`` + ``.text_len``): when the runtime text is a whole multiple of
      its length, ComfyUI repeated the conditioning to batch it with a longer one (``CONDCrossAttn``
      pads by repetition), so every copy is focused;
    * a 1-D float tensor of weights over the text positions (learned soft windows).
    """
    rows = []
    for entry in spans_per_sample:
        if torch.is_tensor(entry) and entry.is_floating_point():
            w = entry.to(device=device, dtype=dtype)[:text_len]
            rows.append(torch.nn.functional.pad(w, (0, text_len - w.shape[0])))
            continue
        positions = [int(p) for p in (entry.positions if hasattr(entry, "positions") else entry)]
        own_len = getattr(entry, "text_len", 0) or 0
        if 0 < own_len < text_len and text_len % own_len == 0:
            positions = [p + r * own_len for r in range(text_len // own_len) for p in positions]
        positions = [p + text_len if p < 0 else p for p in positions]
        w = torch.zeros(text_len, device=device, dtype=dtype)
        keep = [p for p in positions if 0 <= p < text_len]
        if keep:
            w[keep] = 1.0
        rows.append(w)
    return torch.stack(rows) if rows else torch.zeros(0, text_len, device=device, dtype=dtype)


def logit_bias_from_weights(weights: torch.Tensor, strength: float) -> torch.Tensor:
    """``log(1 + strength * w)``: strength is "extra attention, as a multiple" (0 = none, 1 = double)."""
    if strength <= -1:
        raise ValueError(f"focus strength must be > -1 (it multiplies attention by 1 + strength), got {strength}")
    return torch.log1p(strength * weights)


def is_identity(spans_per_sample: Sequence, strength: float) -> bool:
    """True when focus would change nothing: the caller must then take the exact unpatched path."""
    if strength == 0:
        return True
    for entry in spans_per_sample:
        if torch.is_tensor(entry) and entry.is_floating_point():
            if bool((entry != 0).any()):
                return False
        elif len(entry.positions if hasattr(entry, "positions") else entry) > 0:
            return False
    return True


# ------------------------------------------------------------------------------------------------ masks


def as_additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Bool (True = attend) or additive mask -> additive 4-D mask, broadcast as ComfyUI's attention does.

    2-D ``[Lq, Lk]`` gets a batch dim, 3-D ``[B, Lq|1, Lk]`` a heads dim (``attention_pytorch``'s rule).
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    else:
        mask = mask.to(dtype)
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4:
        raise ValueError(f"attention mask must be 2-, 3- or 4-D, got shape {tuple(mask.shape)}")
    return mask


def combine_masks(bias: torch.Tensor | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Focus bias + existing mask (bool or additive, 2/3/4-D) as one additive 4-D mask."""
    mask = as_additive_mask(mask, dtype)
    if bias is None:
        return mask
    return bias.to(dtype) if mask is None else bias.to(dtype) + mask


def rows_of_mask(mask: torch.Tensor | None, start: int, end: int, n_queries: int) -> torch.Tensor | None:
    """The part of a 4-D additive mask for query rows ``[start, end)`` (row-broadcast masks pass whole)."""
    if mask is None or mask.shape[-2] == 1 or mask.shape[-2] != n_queries:
        return mask
    return mask[..., start:end, :]


# ----------------------------------------------------------------------------------------- bias builders


def key_bias(
    spans_per_sample: Sequence, text_len: int, n_keys: int, strength: float, *, active: Sequence[bool] | None = None,
    dtype=torch.float32, device=None,
) -> torch.Tensor | None:
    """Row-independent bias ``[B, 1, 1, Lk]`` for the image query rows (the cheap structured form).

    ``active[b]`` False leaves sample b unbiased (e.g. the uncond half). None when focus is identity.
    """
    if is_identity(spans_per_sample, strength):
        return None
    # float64 then cast: the bias is only O(Lk) and log1p is then exact to the target dtype (MPS has no float64)
    wide = torch.float64 if device is None or torch.device(device).type in ("cpu", "cuda") else torch.float32
    w = focus_weights(spans_per_sample, text_len, device=device, dtype=wide)
    if active is not None:
        w = w * torch.tensor([1.0 if a else 0.0 for a in active], device=w.device, dtype=w.dtype)[:, None]
    bias = torch.zeros(w.shape[0], 1, 1, n_keys, device=device, dtype=wide)
    bias[:, 0, 0, :text_len] = logit_bias_from_weights(w, strength)
    return bias.to(dtype)


def dense_bias(
    spans_per_sample: Sequence, text_len: int, n_queries: int, n_keys: int, strength: float,
    image_rows: tuple[int, int] | None = None, *, active: Sequence[bool] | None = None, dtype=torch.float32, device=None,
) -> torch.Tensor | None:
    """Full ``[B, 1, Lq, Lk]`` bias: image query rows (default ``[text_len, Lq)``) -> focused text keys."""
    rows_bias = key_bias(spans_per_sample, text_len, n_keys, strength, active=active, dtype=dtype, device=device)
    if rows_bias is None:
        return None
    r0, r1 = image_rows if image_rows is not None else (text_len, n_queries)
    bias = torch.zeros(rows_bias.shape[0], 1, n_queries, n_keys, dtype=dtype, device=device)
    bias[:, :, r0:r1, :] = rows_bias
    return bias


def value_scale(
    v: torch.Tensor, spans_per_sample: Sequence, text_len: int, strength: float, seq_dim: int,
    *, active: Sequence[bool] | None = None,
) -> torch.Tensor | None:
    """"Value scaling" mode: focused text values times ``1 + strength * w`` (use for the image rows only)."""
    if is_identity(spans_per_sample, strength):
        return None
    w = focus_weights(spans_per_sample, text_len, device=v.device, dtype=torch.float32)
    if active is not None:
        w = w * torch.tensor([1.0 if a else 0.0 for a in active], device=w.device)[:, None]
    scale = torch.ones(w.shape[0], v.shape[seq_dim], device=v.device, dtype=torch.float32)
    scale[:, :text_len] = 1 + strength * w
    shape = [scale.shape[0]] + [1] * (v.ndim - 1)
    shape[seq_dim] = v.shape[seq_dim]
    return v * scale.view(shape).to(v.dtype)


# ------------------------------------------------------------------------------ attention-dependent shapes

BIAS_SHAPES = ("uniform", "sharpen", "text")


def row_bias(p_text: torch.Tensor, weights: torch.Tensor, strength: float, shape: str) -> torch.Tensor | None:
    """A per-query-row logit bias ``[..., rows, text_len]`` on the text keys, shaped by the attention the rows pay
    without focus (``p_text``: ``[B, (H,) rows, text_len]`` probabilities; ``weights``: ``[B, text_len]``).

    * ``uniform``: ``log(1 + s w_j)`` on every row (the plain bias; ``key_bias``);
    * ``sharpen``: ``log(1 + s w_j g_ij)``, ``g_ij = p_ij / max_i p_ij`` over the rows: the rows that already
      attend most to a focus token get the full ``(1 + s)``, the others proportionally less, so the extra attention
      goes where the model already places the phrase instead of everywhere;
    * ``text``: the uniform bias plus ``log(T_i / (T_i + s F_i))`` on all text keys (``T_i``, ``F_i``: the row's
      attention on all text and on the focus tokens): the focus tokens gain what the other text tokens lose, and the
      row's attention on the image tokens is unchanged.

    None when focus is identity (strength 0 or no weight)."""
    if shape not in BIAS_SHAPES:
        raise ValueError(f"focus bias shape must be one of {BIAS_SHAPES}, got {shape!r}")
    if strength == 0 or not bool((weights != 0).any()):
        return None
    logit_bias_from_weights(torch.zeros(1), strength)  # validates strength > -1
    wide = torch.promote_types(p_text.dtype, torch.float32)
    p = p_text.to(wide)
    w = weights.to(p).reshape(weights.shape[0], *([1] * (p.ndim - 2)), weights.shape[-1])  # [B, (1,) 1, text]
    if shape == "sharpen":
        g = p / p.amax(dim=-2, keepdim=True).clamp_min(torch.finfo(wide).tiny)
        return torch.log1p(strength * w * g)
    bias = torch.log1p(strength * w).expand_as(p)
    if shape == "text":
        total, focused = p.sum(-1, keepdim=True), (p * w).sum(-1, keepdim=True)
        bias = bias + torch.log(total / (total + strength * focused).clamp_min(torch.finfo(wide).tiny))
    return bias


# ------------------------------------------------------------------------------------------- reference


def reference_attention(q, k, v, mask=None):
    """Plain ``softmax(q k^T / sqrt(d) + mask) v`` on ``[B, H, L, D]`` tensors (for tests and probes)."""
    wide = torch.promote_types(q.dtype, torch.float32)
    logits = (q.to(wide) @ k.to(wide).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits + as_additive_mask(mask, wide)
    return (logits.softmax(-1) @ v.to(wide)).to(q.dtype)


def attention_mass(q, k, weights: torch.Tensor, text_len: int, rows: tuple[int, int], mask=None) -> torch.Tensor:
    """Per-sample mean (over heads and the given query rows) of the attention on focused text keys.

    ``weights``: ``[B, text_len]`` focus weights; the mass counts ``sum_j w_j * p_ij``.
    """
    return row_attention_mass(q, k, weights[:, None], text_len, rows, mask)[:, 0].mean(-1)


ROW_MASS_ELEMENTS = 1 << 25  # logits per chunk of query rows (128 MiB in fp32)


def row_attention_mass(q, k, weights: torch.Tensor, text_len: int, rows: tuple[int, int], mask=None) -> torch.Tensor:
    """``[B, P, rows]``: per query row, the attention (mean over heads) on each of P weighted sets of text keys,
    ``sum_j w_pj * p_ij``. ``q``/``k``: ``[B, H, L, D]``; ``weights``: ``[B, P, text_len]``."""
    wide = torch.promote_types(q.dtype, torch.float32)
    keys = k.to(wide).transpose(-1, -2)
    full = None if mask is None else as_additive_mask(mask, wide)
    # rows in chunks: one [B, H, chunk, Lk] block of logits at a time (a 1024^2 Qwen-Image call is ~8k keys)
    chunk = max(1, ROW_MASS_ELEMENTS // max(q.shape[0] * q.shape[1] * k.shape[2], 1))
    parts = []
    for r0 in range(rows[0], rows[1], chunk):
        r1 = min(r0 + chunk, rows[1])
        logits = (q[:, :, r0:r1].to(wide) @ keys) / math.sqrt(q.shape[-1])
        if full is not None:
            logits = logits + rows_of_mask(full, r0, r1, q.shape[2])
        p = logits.softmax(-1)[..., :text_len].mean(1)                                   # [B, rows, text]
        parts.append((p @ weights.to(p).transpose(1, 2)).transpose(1, 2))
    if not parts:
        return torch.zeros(q.shape[0], weights.shape[1], 0, dtype=wide, device=q.device)
    return torch.cat(parts, dim=-1)


# -------------------------------------------------------------------------------------- gating helpers


@dataclass(frozen=True)
class FocusSchedule:
    """Apply focus while sampling progress (0 = first step, 1 = end) is in ``[start_percent, end_percent)``.

    Progress is the step fraction ``i / n`` of the current sigma in the full schedule (``sample_sigmas``);
    without a schedule it falls back to ``1 - sigma`` (flow matching: sigma runs 1 -> 0).
    """

    start_percent: float = 0.0
    end_percent: float = 1.0

    def __post_init__(self):
        if not (0.0 <= self.start_percent <= self.end_percent <= 1.0):
            raise ValueError(f"need 0 <= start_percent <= end_percent <= 1, got {self.start_percent}, {self.end_percent}")

    @staticmethod
    def progress(sigma=None, sample_sigmas=None) -> float | None:
        if sigma is None:
            return None
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        if sample_sigmas is not None:
            sched = torch.as_tensor(sample_sigmas, dtype=torch.float64).reshape(-1)
            if sched.numel() > 1:
                i = int((sched - s).abs().argmin())
                return i / (sched.numel() - 1)
        return min(max(1.0 - s, 0.0), 1.0)

    def active(self, sigma=None, sample_sigmas=None) -> bool:
        if self.start_percent == 0.0 and self.end_percent == 1.0:
            return True
        p = self.progress(sigma, sample_sigmas)
        if p is None:
            return True  # no sampling context (e.g. a bare model call): do not silently drop focus
        return self.start_percent <= p and (p < self.end_percent or self.end_percent >= 1.0)


def _parse_ranges(text: str) -> list:
    text = text.strip().lower()
    if text in ("", "all", "*"):
        return ["all"]
    items = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("last:"):
            items.append(("last", int(part[5:])))
        elif "-" in part:
            a, b = part.split("-", 1)
            items.append((int(a), int(b)))
        else:
            items.append((int(part), int(part)))
    return items


def parse_blocks(spec: str) -> dict:
    """``"all"``, ``"0-9,12"``, ``"last:9"`` or per type ``"double:0-9;single:last:4"`` -> {type|"*": ranges}."""
    try:
        out = {}
        for group in (spec or "all").split(";"):
            group = group.strip()
            head, sep, rest = group.partition(":")
            if sep and head.strip().lower() in ("double", "single"):
                out[head.strip().lower()] = _parse_ranges(rest)
            else:
                out["*"] = _parse_ranges(group)
        return out
    except ValueError as exc:
        raise ValueError(
            f"cannot read block spec {spec!r} ({exc}); write e.g. 'all', '0-9,12', 'last:9' or 'double:0-9;single:all'"
        ) from None


def block_active(block_index: int | None, blocks_spec: str | dict = "all", block_type: str | None = None,
                 total_blocks: int | None = None) -> bool:
    """Whether focus applies to this block. Unknown block index (not inside a DiT block) -> active."""
    spec = parse_blocks(blocks_spec) if isinstance(blocks_spec, str) else blocks_spec
    ranges = spec.get(block_type) if block_type in spec else spec.get("*")
    if ranges is None:
        return False  # typed spec that names other block types only
    if block_index is None:
        return True
    for r in ranges:
        if r == "all":
            return True
        if r[0] == "last":
            if total_blocks is None or block_index >= total_blocks - r[1]:
                return True
        elif r[0] <= block_index <= r[1]:
            return True
    return False


def select_blocks(blocks_spec: str | dict, counts: dict) -> tuple[dict, list[str]]:
    """``({block type: selected indices}, [parts of the spec beyond the model])`` for a model with ``counts``
    blocks per type (``{"double": 60}``, Flux ``{"double": 19, "single": 38}``, a UNet's cross-attention sites
    ``{None: 16}``). The adapter refuses a spec that selects nothing and warns about the parts beyond (clamped)."""
    spec = parse_blocks(blocks_spec) if isinstance(blocks_spec, str) else blocks_spec
    selected, outside = {}, []
    for kind in (k for k in spec if k != "*" and k not in counts):
        outside.append(f"{kind} (the model has no {kind} blocks)")
    for kind, total in counts.items():
        ranges = spec.get(kind) if kind in spec else spec.get("*")
        selected[kind] = [i for i in range(total) if block_active(i, spec, kind, total)]
        label = f"{kind} " if kind is not None else ""
        for r in ranges or []:
            if r == "all":
                continue
            if r[0] == "last":
                if r[1] > total:
                    outside.append(f"{label}last:{r[1]} (only {total})")
            elif r[1] >= total:
                outside.append(f"{label}{max(r[0], total)}-{r[1]}")
    return selected, outside


def tokens_inside(entry, text_len: int) -> int:
    """How many of a sample's focus tokens lie inside a text of ``text_len`` tokens (negative positions count from
    the end; a soft window counts its nonzero weights). ComfyUI's repetition of a short conditioning only adds
    copies of positions that are already inside, so it changes nothing here."""
    if torch.is_tensor(entry) and entry.is_floating_point():
        return int((entry[:text_len] != 0).sum())
    positions = entry.positions if hasattr(entry, "positions") else entry
    return sum(1 for p in positions if 0 <= (p + text_len if p < 0 else p) < text_len)
