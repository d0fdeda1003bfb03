"""An attention override with ComfyUI's ``optimized_attention_override(func, *args, **kwargs)`` signature.

Host-free: it never imports comfy. ``func`` is whatever attention callable the host passes
(``func(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, transformer_options=...)``).
Qwen-Image passes its mask positionally (5th argument), Flux as ``mask=``; both are normalised to ``mask=``.

The adapter stores the DiT's text length in ``transformer_options[TXT_LEN_KEY]`` (a DIFFUSION_MODEL
wrapper sees ``context.shape[1]``); without it the override is a pass-through. Layout of the joint
sequence: ``[text (L) | noisy image | reference images]``; only noisy-image query rows are biased
(reference rows too when ``exclude_reference=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .bias import (
    FocusSchedule,
    attention_mass,
    block_active,
    combine_masks,
    focus_weights,
    is_identity,
    key_bias,
    parse_blocks,
    rows_of_mask,
    tokens_inside,
    value_scale,
)

TXT_LEN_KEY = "cogniedit_txt_len"
MODES = ("bias", "value")


@dataclass
class FocusProbe:
    """Records, per attention call, the mean attention mass image queries put on the focused tokens."""

    records: list = field(default_factory=list)

    def mean_mass(self) -> float:
        vals = [m for r in self.records for m in r["mass"]]
        return sum(vals) / len(vals) if vals else float("nan")


@dataclass
class FocusTally:
    """What focus did while sampling, counted by the patch itself (the adapter resets it per sampling run and reads
    it back for the report): attention calls seen with a known text length, calls in the selected blocks and steps
    (with a cond sample to focus), calls biased (at least one focus token inside the text), and the most focus
    tokens one call found inside the text. Cheap: plain integers, the hit count is cached per batch layout."""

    planned_tokens: int = 0
    seen: int = 0
    selected: int = 0
    biased: int = 0
    tokens_hit: int = 0
    shortest_text: int | None = None

    def reset(self) -> None:
        self.seen = self.selected = self.biased = self.tokens_hit = 0
        self.shortest_text = None

    def record(self, text_len: int, selected: bool, hits: int = 0) -> None:
        self.seen += 1
        if selected:  # the texts focus was meant for (not the uncond pass left alone)
            self.shortest_text = text_len if self.shortest_text is None else min(self.shortest_text, text_len)
            self.selected += 1
            self.biased += hits > 0
            self.tokens_hit = max(self.tokens_hit, hits)

    @property
    def all_miss(self) -> bool:
        return self.biased == 0

    def summary(self) -> tuple[str, list[str]]:
        """(one line of counts, warnings): what was applied, and loudly what was not."""
        line = (f"{self.biased} of {self.selected} attention calls in the selected blocks and steps biased "
                f"({self.seen} seen), {self.tokens_hit} of {self.planned_tokens} tokens hit")
        text = f"{self.shortest_text}-token text that reached the model"
        fix = ("give Token Focus the exact prompt that is encoded (or the directives whose enriched instruction the "
               "sampler encodes)")
        if self.seen == 0:
            return line, ["FOCUS NOT APPLIED: the focus patch saw no attention call (another node replaced the "
                          "attention, or this is not the MODEL Token Focus patched)"]
        if self.selected == 0:
            return line, ["FOCUS NOT APPLIED: no attention call was in the selected blocks and steps (check blocks, "
                          "start_percent and end_percent, and cond_only with an uncond-only batch)"]
        if self.tokens_hit == 0:
            return line, [f"FOCUS NOT APPLIED: none of the {self.planned_tokens} focus tokens is inside the {text} "
                          f"(0 of {self.selected} attention calls biased): the prompt given to Token Focus is not "
                          f"what was encoded; {fix}"]
        if self.tokens_hit < self.planned_tokens:
            missed = self.planned_tokens - self.tokens_hit
            return line, [f"{missed} of the {self.planned_tokens} focus tokens lie outside the {text}: the prompt "
                          f"given to Token Focus is probably not what was encoded; {fix}"]
        return line, []


def n_ref_all(to: dict) -> int:
    """Tokens of the reference images that follow the noisy image in the joint sequence."""
    return sum(to.get("reference_image_num_tokens", []) or [])


def active_samples(batch: int, cond_or_uncond, cond_only: bool) -> list[bool]:
    """Per batch entry: focus it? With ``cond_only``, only entries of the cond chunks (``cond_or_uncond`` 0)."""
    if not cond_only or not cond_or_uncond:
        return [True] * batch
    per = max(batch // len(cond_or_uncond), 1)
    return [cond_or_uncond[min(b // per, len(cond_or_uncond) - 1)] == 0 for b in range(batch)]


def spans_for_batch(spans_per_sample: Sequence, batch: int, n_chunks: int) -> list:
    """One span entry per batch entry, from one shared entry, one per prompt (repeated per chunk) or one each."""
    n = len(spans_per_sample)
    per = max(batch // max(n_chunks, 1), 1)
    if n == 1:
        return list(spans_per_sample) * batch
    if n == per:
        return [spans_per_sample[b % per] for b in range(batch)]
    if n == batch:
        return list(spans_per_sample)
    raise ValueError(
        f"focus spans given for {n} samples, but the attention batch is {batch} ({n_chunks} cond/uncond chunks); "
        "give one span list, one per prompt, or one per batch entry"
    )


def to_heads(t: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """``[B, L, H*D]`` -> ``[B, H, L, D]`` (already so when ``skip_reshape``)."""
    if skip_reshape:
        return t
    b, n, hd = t.shape
    return t.view(b, n, heads, hd // heads).transpose(1, 2)


def make_attention_override(
    spans_per_sample: Sequence,
    strength: float,
    blocks: str = "all",
    schedule: FocusSchedule | None = None,
    prev_override: Callable | None = None,
    *,
    mode: str = "bias",
    cond_only: bool = True,
    exclude_reference: bool = True,
    structured: bool = True,
    probe: FocusProbe | None = None,
    tally: FocusTally | None = None,
    maps=None,
    txt_len_key: str = TXT_LEN_KEY,
) -> Callable:
    """Build ``override(func, *args, **kwargs)``.

    ``spans_per_sample``: per prompt, token positions (list of ints / ``FocusSpans``) or soft weights.
    ``structured=True`` splits the query rows into text | image | reference chunks and gives the image
    chunk a ``[B,1,1,Lk]`` bias (memory O(Lk)); ``False`` builds one dense ``[B,1,Lq,Lk]`` bias.
    Whenever focus is inactive (strength 0, no spans, block/schedule off, no text length) the call
    goes through untouched, so the output is bit-identical to the unpatched model. ``tally`` counts what was
    applied (calls biased, tokens hit) for the report. ``maps`` (an ``attention_maps.AttentionMapRecorder``) records
    the per-phrase maps of the noisy-image rows in the calls it wants, also at strength 0 (read-only).
    """
    if mode not in MODES:
        raise ValueError(f"focus mode must be one of {MODES}, got {mode!r}")
    block_spec = parse_blocks(blocks)
    schedule = schedule or FocusSchedule()
    identity = is_identity(spans_per_sample, strength)
    hits_of_layout = {}  # (text length, batch, chunks, active) -> focus tokens inside the text: plain ints, once

    def hits(text_len, samples, active) -> int:
        layout = (text_len, len(samples), tuple(active))
        if layout not in hits_of_layout:
            hits_of_layout[layout] = max((tokens_inside(s, text_len) for s, a in zip(samples, active) if a), default=0)
        return hits_of_layout[layout]

    bias_of_layout = {}  # the image rows' [B,1,1,Lk] bias depends only on the batch layout: built once per layout

    def image_bias(samples, text_len, n_k, active, chunks, dtype, device):
        layout = (text_len, n_k, len(samples), chunks, tuple(active), dtype, device)
        if layout not in bias_of_layout:
            if len(bias_of_layout) >= 32:  # bounded: a long session sees only a few layouts at a time
                bias_of_layout.clear()
            bias_of_layout[layout] = key_bias(samples, text_len, n_k, strength, active=active, dtype=dtype,
                                              device=device)
        return bias_of_layout[layout]

    def record_maps(q, k, heads, skip_reshape, text_len, image_rows, mask, base_mask, samples, active, off, to):
        wide = torch.promote_types(q.dtype, torch.float32)
        focus_mask, scale = None, None
        if not off and mode == "bias":
            extra = key_bias(samples, text_len, k.shape[2 if skip_reshape else 1], strength, active=active,
                             dtype=wide, device=q.device)
            focus_mask = combine_masks(extra, mask, wide)
        elif not off:  # value mode leaves the attention as it is; the phrase's values weigh 1 + s times
            focus_mask, scale = base_mask, 1.0 + strength
        cond = active_samples(q.shape[0], to.get("cond_or_uncond"), True)
        maps.record(to_heads(q, heads, skip_reshape), to_heads(k, heads, skip_reshape), text_len, image_rows,
                    base_mask, focus_mask, to.get("block_index"), to.get("sigmas"), to.get("sample_sigmas"), scale,
                    cond)

    def call_next(func, args, kwargs):
        return prev_override(func, *args, **kwargs) if prev_override is not None else func(*args, **kwargs)

    def override(func, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        text_len = to.get(txt_len_key)
        if text_len is None or (identity and probe is None and maps is None):
            return call_next(func, args, kwargs)
        mapping = maps is not None and maps.wants(to.get("block_index"), to.get("total_blocks"), to.get("sigmas"),
                                                  to.get("sample_sigmas"), to.get("block_type"))
        gated_in = not identity or probe is not None
        gated_in = gated_in and block_active(to.get("block_index"), block_spec, to.get("block_type"),
                                             to.get("total_blocks")) \
            and schedule.active(to.get("sigmas"), to.get("sample_sigmas"))
        if not gated_in and not identity and tally is not None:
            tally.record(text_len, False)
        if not gated_in and not mapping:
            return call_next(func, args, kwargs)

        q, k, v, heads = args[0], args[1], args[2], args[3]
        args, kwargs = list(args), dict(kwargs)
        mask = args.pop(4) if len(args) > 4 else kwargs.pop("mask", None)  # Qwen: positional; Flux: keyword
        skip_reshape = bool(kwargs.get("skip_reshape", False))
        seq_dim = 2 if skip_reshape else 1
        batch, n_q, n_k = q.shape[0], q.shape[seq_dim], k.shape[seq_dim]
        n_ref = sum(to.get("reference_image_num_tokens", []) or []) if exclude_reference else 0
        rows = (min(text_len, n_q), max(n_q - n_ref, text_len))
        cond_or_uncond = to.get("cond_or_uncond")
        samples = spans_for_batch(spans_per_sample, batch, len(cond_or_uncond or []) or 1)
        active = active_samples(batch, cond_or_uncond, cond_only)
        inside = hits(text_len, samples, active) if any(active) else 0
        if tally is not None and gated_in:
            tally.record(text_len, any(active), inside)
        if mapping:  # read-only: the maps without and with the bias this call really gets
            record_maps(q, k, heads, skip_reshape, text_len, (text_len, n_q - n_ref_all(to)), mask,
                        combine_masks(None, mask, q.dtype), samples, active,
                        identity or inside == 0 or not gated_in, to)
        if not gated_in or inside == 0 and probe is None:  # outside focus's blocks/steps, or no focus token: exact
            kwargs["mask"] = mask
            return call_next(func, args, kwargs)
        base_mask = combine_masks(None, mask, q.dtype)

        if probe is not None:
            w = focus_weights(samples, text_len, device=q.device) * torch.tensor(active, device=q.device)[:, None]
            extra = key_bias(samples, text_len, n_k, strength, active=active, dtype=torch.promote_types(q.dtype, torch.float32), device=q.device)
            probe_mask = base_mask if extra is None or mode != "bias" else combine_masks(extra, mask, torch.promote_types(q.dtype, torch.float32))
            mass = attention_mass(to_heads(q, heads, skip_reshape), to_heads(k, heads, skip_reshape), w, text_len, rows, probe_mask)
            probe.records.append({
                "block_index": to.get("block_index"), "block_type": to.get("block_type"),
                "sigma": None if to.get("sigmas") is None else float(torch.as_tensor(to["sigmas"]).reshape(-1)[0]),
                "strength": 0.0 if identity else strength, "mass": [float(m) for m, a in zip(mass, active) if a],
            })
        if identity or inside == 0:
            kwargs["mask"] = mask
            return call_next(func, args, kwargs)

        if mode == "bias" and not structured:
            bias = key_bias(samples, text_len, n_k, strength, active=active, dtype=q.dtype, device=q.device)
            dense = torch.zeros(batch, 1, n_q, n_k, dtype=q.dtype, device=q.device)
            dense[:, :, rows[0]:rows[1], :] = bias
            kwargs["mask"] = combine_masks(dense, mask, q.dtype)
            return call_next(func, args, kwargs)

        # Structured: attention rows are independent, so run text | image | reference rows separately.
        if mode == "bias":
            bias = image_bias(samples, text_len, n_k, active, len(cond_or_uncond or []), q.dtype, q.device)
            image_mask = combine_masks(bias, rows_of_mask(base_mask, rows[0], rows[1], n_q), q.dtype)
            image_v = v
        else:
            image_mask = rows_of_mask(base_mask, rows[0], rows[1], n_q)
            image_v = value_scale(v, samples, text_len, strength, seq_dim, active=active)
        out_dim = 2 if kwargs.get("skip_output_reshape") else 1
        pieces = []
        for r0, r1, m, vv in ((0, rows[0], rows_of_mask(base_mask, 0, rows[0], n_q), v),
                              (rows[0], rows[1], image_mask, image_v),
                              (rows[1], n_q, rows_of_mask(base_mask, rows[1], n_q, n_q), v)):
            if r1 <= r0:
                continue
            part_args = [q.narrow(seq_dim, r0, r1 - r0), k, vv] + args[3:]
            pieces.append(call_next(func, part_args, dict(kwargs, mask=m)))
        return torch.cat(pieces, dim=out_dim)

    override.cogniedit_focus = True  # lets adapters recognise (and not double-wrap) their own override
    return override
