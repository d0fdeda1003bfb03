"""Training-free focus through a UNet's cross-attention (SD-family models such as InstructPix2Pix).

In a UNet's ``attn2`` every query is an image token and every key is a text token, so the joint-attention
bookkeeping of override.py (text length, image rows, reference rows) falls away: the same
``log(1 + strength * w_j)`` logit bias (or value scaling) goes on all rows, over all keys.

``make_cross_attention_patch`` returns a callable with ComfyUI's attn2 *replace* signature,
``patch(q, k, v, extra_options) -> out`` (q, k, v already projected, ``[B, L, heads * dim]``). It computes the
attention with the ``attention`` callable it is given (the host's own attention function), so whenever focus
is inactive (strength 0, no span, outside the schedule, an uncond-only batch) the call is exactly the one the
unpatched layer makes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .bias import FocusSchedule, attention_mass, focus_weights, is_identity, key_bias, tokens_inside, value_scale
from .override import MODES, FocusProbe, FocusTally, active_samples, spans_for_batch, to_heads


def make_cross_attention_patch(
    spans_per_sample: Sequence,
    strength: float,
    attention: Callable,
    *,
    mode: str = "bias",
    schedule: FocusSchedule | None = None,
    cond_only: bool = True,
    probe: FocusProbe | None = None,
    block_name=None,
    tally: FocusTally | None = None,
) -> Callable:
    """Build ``patch(q, k, v, extra_options)`` for one cross-attention layer.

    ``attention(q, k, v, heads, mask=None, attn_precision=None, transformer_options=...)`` is the host's
    attention (ComfyUI: ``comfy.ldm.modules.attention.optimized_attention``). ``extra_options`` must carry
    ``n_heads``; ``attn_precision``, ``sigmas``, ``sample_sigmas`` and ``cond_or_uncond`` are used when present.
    ``block_name`` is only recorded by the probe; ``tally`` counts what was applied (calls biased, tokens hit).
    """
    if mode not in MODES:
        raise ValueError(f"focus mode must be one of {MODES}, got {mode!r}")
    schedule = schedule or FocusSchedule()
    identity = is_identity(spans_per_sample, strength)
    cache = {}  # the bias depends only on the batch layout: built once per (batch, keys, chunks, dtype, device)

    def patch(q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")

        def attend(values, mask=None):
            kwargs = {"attn_precision": precision, "transformer_options": extra_options}
            if mask is not None:
                kwargs["mask"] = mask
            return attention(q, k, values, heads, **kwargs)

        batch, n_keys = q.shape[0], k.shape[1]
        if identity and probe is None:
            return attend(v)
        if not schedule.active(extra_options.get("sigmas"), extra_options.get("sample_sigmas")):
            if tally is not None:
                tally.record(n_keys, False)
            return attend(v)
        cond_or_uncond = extra_options.get("cond_or_uncond")
        layout = (batch, n_keys, tuple(cond_or_uncond or ()), q.dtype, q.device)
        if layout not in cache:
            samples = spans_for_batch(spans_per_sample, batch, len(cond_or_uncond or []) or 1)
            active = active_samples(batch, cond_or_uncond, cond_only)
            bias = None if identity else key_bias(samples, n_keys, n_keys, strength, active=active, dtype=q.dtype,
                                                  device=q.device)
            ones = torch.ones(batch, n_keys, 1, dtype=v.dtype, device=v.device)  # value mode: the scale, once
            scale = None if identity or mode != "value" else value_scale(ones, samples, n_keys, strength, 1,
                                                                          active=active)
            inside = max((tokens_inside(s, n_keys) for s, a in zip(samples, active) if a), default=0)
            cache[layout] = samples, active, bias, scale, inside
        samples, active, bias, scale, inside = cache[layout]
        if tally is not None:
            tally.record(n_keys, any(active), inside)
        if probe is not None:
            wide = torch.promote_types(q.dtype, torch.float32)
            weights = focus_weights(samples, n_keys, device=q.device) * torch.tensor(active, device=q.device)[:, None]
            mass = attention_mass(to_heads(q, heads, False), to_heads(k, heads, False), weights, n_keys,
                                  (0, q.shape[1]), None if bias is None or mode != "bias" else bias.to(wide))
            probe.records.append({
                "block_index": block_name, "block_type": "cross_attention",
                "sigma": None if extra_options.get("sigmas") is None
                else float(torch.as_tensor(extra_options["sigmas"]).reshape(-1)[0]),
                "strength": 0.0 if identity else strength, "mass": [float(m) for m, a in zip(mass, active) if a],
            })
        if bias is None or inside == 0:  # an uncond-only batch, or no focus token inside this text: exact call
            return attend(v)
        if mode == "bias":
            return attend(v, mask=bias)
        return attend(v * scale)

    patch.cogniedit_focus = True
    return patch
