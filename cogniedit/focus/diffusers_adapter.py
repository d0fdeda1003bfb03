"""Token Focus on diffusers' Qwen-Image DiT (the ShapeEdit editor, Qwen-Image-Edit in the trainer): the adapter
from the host-free focus core (``bias.py``, ``learned.py``) to diffusers' attention processors and blocks.

* ``FocusAttnProcessor`` (installed by ``install_focus_processors``) adds the core's ``log(1 + s*w)`` bias to the
  noisy-image query rows of each block's joint attention; inactive (strength 0, block or step off) it is exactly
  diffusers' own processor.
* ``learned_focus_hooks`` rewrites the text stream of the learned blocks with ``LearnedFocus`` and hands its window
  weights to the processors (the attention forcing), inside a ``learned_focus_call`` (where the instruction is),
  also when diffusers checkpoints the blocks.

Importing this module imports diffusers (the processor subclasses diffusers' own); the focus core does not.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from . import bias as focus_bias
from .spans import QWEN_SUFFIX_TOKENS


@dataclass
class FocusState:
    """What the focus processors of one edit share: per-sample focus weights, gating, the current sigma, a probe.

    ``weights``: ``[B, text_len]`` (1 on focused tokens, or soft window weights); ``block_weights`` overrides it per
    block (learned focus: set by the block hooks while ``learned_call`` is set). ``n_reference``: trailing image
    tokens that are the source image (their query rows keep their exact attention unless ``bias_reference``).
    ``records``: filled when ``probe`` is True.
    """

    weights: torch.Tensor | None
    strength: float
    blocks: str | dict = "all"
    schedule: focus_bias.FocusSchedule = field(default_factory=focus_bias.FocusSchedule)
    sample_sigmas: Sequence[float] | None = None
    n_reference: int = 0
    bias_reference: bool = False
    total_blocks: int | None = None
    probe: bool = False
    sigma: float | None = None
    block_weights: dict = field(default_factory=dict)
    records: list = field(default_factory=list)
    learned_call: "LearnedCall | None" = None
    maps: object = None  # an attention_maps.AttentionMapRecorder: per-phrase maps of the chosen blocks and steps
    shape: str = "uniform"  # bias.row_bias: uniform (the plain log(1 + s*w)), sharpen, text
    mode: str = "bias"      # bias: on the logits; value: the focused text values times (1 + s*w) for image rows

    def __post_init__(self):
        self.blocks = focus_bias.parse_blocks(self.blocks) if isinstance(self.blocks, str) else self.blocks
        if self.shape not in focus_bias.BIAS_SHAPES or self.mode not in ("bias", "value"):
            raise ValueError(f"focus shape must be one of {focus_bias.BIAS_SHAPES} and mode bias or value, got "
                             f"shape={self.shape!r}, mode={self.mode!r}")
        if self.mode == "value" and self.shape != "uniform":
            raise ValueError(f"focus mode 'value' scales values uniformly; shape {self.shape!r} needs mode 'bias'")

    def weights_for(self, block_index: int) -> torch.Tensor | None:
        return self.block_weights.get(block_index, self.weights)

    def active(self, block_index: int, weights: torch.Tensor | None) -> bool:
        if weights is None or focus_bias.is_identity(list(weights), self.strength):
            return False
        if not focus_bias.block_active(block_index, self.blocks, "double", self.total_blocks):
            return False
        return self.schedule.active(self.sigma, self.sample_sigmas)


def _diffusers_qwen():
    from diffusers.models.transformers import transformer_qwenimage

    return transformer_qwenimage


def _processor_base():
    return _diffusers_qwen().QwenDoubleStreamAttnProcessor2_0


class FocusAttnProcessor(_processor_base()):
    """diffusers' Qwen-Image joint-attention processor plus the focus bias on the noisy-image query rows.

    The joint sequence is ``[text (L) | noisy image | reference image]`` (diffusers concatenates text first; the
    ShapeEditor appends the source tokens after the noisy ones). When focus is inactive for this block/step (or
    strength 0) the call goes to the parent unchanged, so the output is bit-identical to the base editor.
    """

    def __init__(self, block_index: int, state: FocusState):
        super().__init__()
        self.block_index = int(block_index)
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        state = self.state
        weights = state.weights_for(self.block_index) if state is not None else None
        mapping = state is not None and state.maps is not None and state.maps.wants(
            self.block_index, state.total_blocks, state.sigma, state.sample_sigmas)
        if state is None or encoder_hidden_states is None or attention_mask is not None or (
                not state.active(self.block_index, weights) and not state.probe and not mapping):
            return super().__call__(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                                    attention_mask, image_rotary_emb)
        active = state.active(self.block_index, weights)
        q, k, v = self._joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        n_txt, n_img = encoder_hidden_states.shape[1], hidden_states.shape[1]
        n_q = n_txt + n_img
        key_mask = None
        if encoder_hidden_states_mask is not None:  # same key mask the parent builds (True = attend)
            image_mask = torch.ones((hidden_states.shape[0], n_img), dtype=torch.bool, device=hidden_states.device)
            key_mask = torch.cat([encoder_hidden_states_mask.bool(), image_mask], dim=1)[:, None, None, :]
        rows = (n_txt, n_q if state.bias_reference else n_q - state.n_reference)
        spans = list(weights.to(q.device)) if weights is not None else []
        focus_mask = None
        if active and state.mode == "bias":
            dense = self._shaped_bias(q, k, weights.to(q.device), n_txt, rows, key_mask) if state.shape != "uniform" \
                else focus_bias.dense_bias(spans, n_txt, n_q, n_q, state.strength, image_rows=rows, dtype=q.dtype,
                                           device=q.device)
            focus_mask = focus_bias.combine_masks(dense, key_mask, q.dtype)
        if state.probe and weights is not None:
            self._record(q, k, weights.to(q.device), n_txt, rows, key_mask, focus_mask)
        if mapping:
            self._record_maps(q, k, n_txt, (n_txt, n_q - state.n_reference), key_mask, focus_mask)
        if not active:
            return super().__call__(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                                    attention_mask, image_rotary_emb)
        if state.mode == "value":
            return self._attend(attn, q, k, v, focus_bias.combine_masks(None, key_mask, q.dtype), n_txt,
                                value_rows=(rows, weights.to(q.device)))
        return self._attend(attn, q, k, v, focus_mask, n_txt)

    def _shaped_bias(self, q, k, weights, n_txt, rows, key_mask):
        """``[B, H, Lq, Lk]`` bias from ``bias.row_bias`` on the image rows: it depends on where each row (per head)
        attends without focus."""
        qh, kh = q.transpose(1, 2), k.transpose(1, 2)
        wide = torch.promote_types(q.dtype, torch.float32)
        logits = (qh[:, :, rows[0]:rows[1]].to(wide) @ kh.to(wide).transpose(-1, -2)) / (q.shape[-1] ** 0.5)
        base_mask = focus_bias.combine_masks(None, key_mask, wide)
        if base_mask is not None:
            logits = logits + base_mask
        p_text = logits.softmax(-1)[..., :n_txt]                                         # [B, H, rows, text]
        shaped = focus_bias.row_bias(p_text, weights, self.state.strength, self.state.shape)
        dense = torch.zeros(q.shape[0], q.shape[2], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        dense[:, :, rows[0]:rows[1], :n_txt] = shaped.to(q.dtype)
        return dense

    def _joint_qkv(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb):
        """Joint ``[B, L, H, D]`` q/k/v exactly as the parent computes them (projections, QK-norm, RoPE, text first)."""
        rope = _diffusers_qwen().apply_rotary_emb_qwen
        head_dim = attn.inner_dim // attn.heads
        img = [proj(hidden_states).unflatten(-1, (-1, head_dim)) for proj in (attn.to_q, attn.to_k, attn.to_v)]
        txt = [proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
               for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)]
        for norm, tensors, i in ((attn.norm_q, img, 0), (attn.norm_k, img, 1),
                                 (attn.norm_added_q, txt, 0), (attn.norm_added_k, txt, 1)):
            if norm is not None:
                tensors[i] = norm(tensors[i])
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            for i in (0, 1):
                img[i] = rope(img[i], img_freqs, use_real=False)
                txt[i] = rope(txt[i], txt_freqs, use_real=False)
        return tuple(torch.cat([t, m], dim=1) for t, m in zip(txt, img))

    def _attend(self, attn, q, k, v, mask, n_txt, value_rows=None):
        def attend(q_rows, values, rows_mask):
            return _diffusers_qwen().dispatch_attention_fn(
                q_rows, k, values, attn_mask=rows_mask, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=self._parallel_config)

        out = attend(q, v, mask)
        if value_rows is not None:  # value mode: the image rows again, with the focused text values scaled
            (r0, r1), weights = value_rows
            scale = torch.ones(v.shape[0], v.shape[1], dtype=v.dtype, device=v.device)
            scale[:, :n_txt] = 1 + self.state.strength * weights.to(v.dtype)
            out = out.clone()
            out[:, r0:r1] = attend(q[:, r0:r1], v * scale[:, :, None, None],
                                   focus_bias.rows_of_mask(mask, r0, r1, q.shape[1]))
        out = out.flatten(2, 3).to(q.dtype)
        txt_out, img_out = out[:, :n_txt], out[:, n_txt:]
        img_out = attn.to_out[0](img_out.contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(txt_out.contiguous())

    def _record_maps(self, q, k, n_txt, image_rows, key_mask, focus_mask):
        """Per-phrase attention of the noisy-image rows, without and with the focus bias (``attention_maps``)."""
        state = self.state
        state.maps.record(q.transpose(1, 2), k.transpose(1, 2), n_txt, image_rows,
                          focus_bias.combine_masks(None, key_mask, q.dtype), focus_mask, self.block_index,
                          state.sigma, state.sample_sigmas)

    def _record(self, q, k, weights, n_txt, rows, key_mask, focus_mask):
        """Attention mass the focused text keys get from the biased rows, without and with the focus bias."""
        qh, kh = q.transpose(1, 2), k.transpose(1, 2)
        base = focus_bias.attention_mass(qh, kh, weights, n_txt, rows, focus_bias.combine_masks(None, key_mask, q.dtype))
        focused = base if focus_mask is None else focus_bias.attention_mass(qh, kh, weights, n_txt, rows, focus_mask)
        self.state.records.append({"block_index": self.block_index, "sigma": self.state.sigma,
                                   "mass_base": base.tolist(), "mass": focused.tolist()})


def install_focus_processors(transformer, state: FocusState) -> dict:
    """Put a ``FocusAttnProcessor`` on every transformer block; returns the previous processors (for restoring)."""
    original = dict(transformer.attn_processors)
    blocks = transformer.transformer_blocks
    state.total_blocks = len(blocks)
    new = {}
    for name in original:
        parts = name.split(".")
        if parts[0] != "transformer_blocks":
            new[name] = original[name]
            continue
        new[name] = FocusAttnProcessor(int(parts[1]), state)
    transformer.set_attn_processor(new)
    return original


def restore_processors(transformer, original: dict) -> None:
    transformer.set_attn_processor(dict(original))  # set_attn_processor pops from the dict it is given


@dataclass
class LearnedCall:
    """Where one model call's instruction is, per sample (``text_starts``/``text_lens`` in the text stream), whether
    its window weights are detached, and the call's reference-token count."""

    text_starts: torch.Tensor
    text_lens: torch.Tensor
    detach: bool
    n_reference: int


def learned_focus_hooks(transformer, learned, state: FocusState) -> list:
    """Pre-hooks on the learned blocks: while a ``learned_focus_call`` is active, rewrite the text stream with the
    soft tokens and hand the window weights to the focus processors' bias (the attention forcing); outside one the
    blocks run untouched. diffusers calls a block by keyword, but positionally under gradient checkpointing: both
    are handled. Returns the handles (remove them to take the hooks off)."""
    handles = []
    for index in learned.block_indices:
        block = transformer.transformer_blocks[index]
        slot = _positional_slot(block, TEXT_ARGUMENT)

        def hook(module, args, kwargs, index=index, slot=slot):
            call = state.learned_call
            if call is None:
                state.block_weights.pop(index, None)
                return None
            by_name = TEXT_ARGUMENT in kwargs
            if not by_name and len(args) <= slot:
                raise TypeError(f"transformer block {index} was called without {TEXT_ARGUMENT}; learned focus cannot "
                                "find the text stream")
            txt = kwargs[TEXT_ARGUMENT] if by_name else args[slot]
            new_txt, window = learned(txt, index, text_start=call.text_starts.to(txt.device),
                                      text_len=call.text_lens.to(txt.device))
            state.block_weights[index] = window.detach().float() if call.detach else window.float()
            if by_name:
                return args, dict(kwargs, **{TEXT_ARGUMENT: new_txt})
            return (*args[:slot], new_txt, *args[slot + 1:]), kwargs

        handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


@contextlib.contextmanager
def learned_focus_call(transformer, state: FocusState, text_mask: torch.Tensor, instruction_len=None,
                       detach: bool = True, n_reference: int | None = None):
    """Learned focus on (through ``learned_focus_hooks``) for the model calls inside. ``text_mask``: the encoded
    text's mask (template head cut), whose valid tokens end with the instruction and the 5-token assistant suffix.
    ``instruction_len`` ([B], the instruction's token count): what precedes it (Qwen-Image-Edit's vision tokens) is
    never overwritten; None = the instruction starts the stream (the ShapeEdit editor). As ComfyUI's Token Focus
    node does, the span is counted from the end. ``detach=False`` keeps the bias differentiable (training);
    ``n_reference``: the source image's token count for the processors (None: keep ``state.n_reference``).

    Under gradient checkpointing torch recomputes a block in backward, after this scope has ended: each block call
    is bound to this call's settings, so the recomputation relocates exactly as the forward did."""
    before_suffix = text_mask.sum(1) - QWEN_SUFFIX_TOKENS
    text_lens = (before_suffix if instruction_len is None else instruction_len.to(before_suffix)).clamp(min=1)
    text_starts = (before_suffix - text_lens).clamp(min=0)
    previous = (state.learned_call, state.n_reference)
    call = LearnedCall(text_starts, text_lens, bool(detach), state.n_reference if n_reference is None
                       else int(n_reference))
    state.learned_call, state.n_reference = call, call.n_reference
    checkpointing = bool(getattr(transformer, "gradient_checkpointing", False))
    original = transformer._gradient_checkpointing_func if checkpointing else None
    if checkpointing:
        transformer._gradient_checkpointing_func = lambda block, *args: original(_BoundCall(block, state, call), *args)
    try:
        yield call
    finally:
        if checkpointing:
            transformer._gradient_checkpointing_func = original
        state.learned_call, state.n_reference = previous
        state.block_weights.clear()


class _BoundCall:
    """A block run under one ``LearnedCall``, whenever it runs: in the forward and in checkpointing's recompute."""

    def __init__(self, block, state: FocusState, call: LearnedCall):
        self.block, self.state, self.call = block, state, call

    def __call__(self, *args, **kwargs):
        state = self.state
        previous = (state.learned_call, state.n_reference)
        state.learned_call, state.n_reference = self.call, self.call.n_reference
        try:
            return self.block(*args, **kwargs)
        finally:
            state.learned_call, state.n_reference = previous


TEXT_ARGUMENT = "encoder_hidden_states"


def _positional_slot(module, name: str) -> int:
    """Index of ``name`` among ``module.forward``'s positional parameters (where a positional call carries it)."""
    names = [p.name for p in inspect.signature(module.forward).parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if name not in names:
        raise TypeError(f"{type(module).__name__}.forward has no {name!r} parameter; learned focus needs a diffusers "
                        "Qwen-Image transformer block")
    return names.index(name)


__all__ = ["FocusState", "FocusAttnProcessor", "LearnedCall", "install_focus_processors", "restore_processors",
           "learned_focus_hooks", "learned_focus_call"]
