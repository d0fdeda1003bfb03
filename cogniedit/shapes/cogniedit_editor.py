"""CogniEdit on the small ShapeEdit editor: Instruction Decompose, Token Focus Relocation and a LoRA around it.

    python -m cogniedit.shapes.evaluate --n 500 --seed 0 --editor cogniedit.shapes.cogniedit_editor:load_cogniedit_editor \
        --decompose on --focus training_free --editor-option focus_strength=2

``CogniEditEditor`` keeps the editor protocol (``edit(images uint8 [B,H,W,3], instructions, seed) -> uint8``) and
wraps a base editor (``cogniedit.shapes.editor.DefaultEditor`` or a bare ``ShapeEditor``):

* decompose: each (source image, instruction) goes through ``cogniedit.decompose.decompose`` (rules by default);
  the editor encodes the enriched instruction.
* focus ``training_free``: the decomposer's focus phrases are mapped to token positions of the editor's own text
  sequence (``cogniedit.focus.spans``, layout ``qwen_image``: the editor drops ``<|im_start|>user\\n`` as ComfyUI's
  Qwen-Image conditioning does), and ``FocusAttnProcessor`` adds the focus core's ``log(1 + s*w)`` bias to the
  noisy-image query rows of the DiT's joint attention. Processors are installed for one edit and the original
  ones restored afterwards, so the base editor is untouched.
* focus ``learned``: a ``LearnedFocus`` file rewrites the text stream of its blocks and its window weights feed
  the same bias (``cogniedit.focus.learned``).
* lora: a trainer LoRA file (``diffusion_model.<module>.lora_A.weight / .lora_B.weight / .alpha``) merged into a
  copy of the transformer.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..focus import bias as focus_bias
from ..focus.spans import phrase_spans

log = logging.getLogger(__name__)

FOCUS_MODES = ("off", "training_free", "learned")
DEFAULT_FOCUS_KINDS = ("colour", "position", "count")
LORA_PREFIX = "diffusion_model."
# Options this module understands (evaluate.py routes the default editor here when one is given).
OPTION_NAMES = ("decompose", "decomposer", "focus", "focus_strength", "focus_blocks", "focus_kinds", "focus_start",
                "focus_end", "focus_reference", "focus_weights", "lora", "lora_strength")


# --------------------------------------------------------------------------------------- attention processor


@dataclass
class FocusState:
    """What the focus processors of one edit share: per-sample focus weights, gating, the current sigma, a probe.

    ``weights``: ``[B, text_len]`` (1 on focused tokens, or soft window weights); ``block_weights`` overrides it per
    block (learned focus). ``n_reference``: trailing image tokens that are the source image (their query rows keep
    their exact attention unless ``bias_reference``). ``records``: filled when ``probe`` is True.
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

    def __post_init__(self):
        self.blocks = focus_bias.parse_blocks(self.blocks) if isinstance(self.blocks, str) else self.blocks

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
        if state is None or encoder_hidden_states is None or attention_mask is not None or (
                not state.active(self.block_index, weights) and not state.probe):
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
        if active:
            dense = focus_bias.dense_bias(spans, n_txt, n_q, n_q, state.strength, image_rows=rows,
                                          dtype=q.dtype, device=q.device)
            focus_mask = focus_bias.combine_masks(dense, key_mask, q.dtype)
        if state.probe and weights is not None:
            self._record(q, k, weights.to(q.device), n_txt, rows, key_mask, focus_mask)
        if not active:
            return super().__call__(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                                    attention_mask, image_rotary_emb)
        return self._attend(attn, q, k, v, focus_mask, n_txt)

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

    def _attend(self, attn, q, k, v, mask, n_txt):
        out = _diffusers_qwen().dispatch_attention_fn(
            q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(q.dtype)
        txt_out, img_out = out[:, :n_txt], out[:, n_txt:]
        img_out = attn.to_out[0](img_out.contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(txt_out.contiguous())

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


def learned_focus_hooks(transformer, learned, state: FocusState, text_mask: torch.Tensor, detach: bool = True,
                        instruction_len: torch.Tensor | None = None) -> list:
    """Pre-hooks on the learned blocks: rewrite the text stream with the soft tokens and hand the window weights to
    the focus processors' bias (the attention forcing). ``text_mask``: the encoded text's mask (template head cut),
    whose valid tokens end with the instruction and the 5-token assistant suffix. ``instruction_len`` ([B], the
    instruction's token count): what precedes it (Qwen-Image-Edit's vision tokens) is never overwritten; None = the
    instruction starts the stream (the ShapeEdit editor). As ComfyUI's Token Focus node does, the span is counted
    from the end. ``detach=False`` keeps the bias differentiable (training). Returns the handles."""
    from ..focus.spans import QWEN_SUFFIX_TOKENS

    before_suffix = text_mask.sum(1) - QWEN_SUFFIX_TOKENS
    text_lens = (before_suffix if instruction_len is None else instruction_len.to(before_suffix)).clamp(min=1)
    text_starts = (before_suffix - text_lens).clamp(min=0)
    handles = []
    for index in learned.block_indices:
        def hook(module, args, kwargs, index=index):
            txt = kwargs["encoder_hidden_states"]
            new_txt, window = learned(txt, index, text_start=text_starts.to(txt.device),
                                      text_len=text_lens.to(txt.device))
            state.block_weights[index] = window.detach().float() if detach else window.float()
            return args, dict(kwargs, encoder_hidden_states=new_txt)

        handles.append(transformer.transformer_blocks[index].register_forward_pre_hook(hook, with_kwargs=True))
    return handles


# --------------------------------------------------------------------------------------------------- LoRA


def merge_lora(transformer, path, strength: float = 1.0) -> int:
    """Add ``strength * alpha/rank * B @ A`` of every LoRA module in ``path`` to the transformer's Linear weights.

    Keys: ``diffusion_model.<diffusers module path>.lora_A.weight`` (rank x in), ``.lora_B.weight`` (out x rank),
    ``.alpha`` (optional, default rank). Returns the number of merged modules. Call on a copy.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} not found; pass the .safetensors file the trainer wrote "
                                "(python -m training ... writes it into its run folder)")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    modules = sorted({k[: -len(".lora_A.weight")] for k in tensors if k.endswith(".lora_A.weight")})
    if not modules:
        raise ValueError(f"{path} has no '*.lora_A.weight' keys; it is not a CogniEdit/ComfyUI LoRA file")
    used = set()
    with torch.no_grad():
        for key in modules:
            name = key[len(LORA_PREFIX):] if key.startswith(LORA_PREFIX) else key
            try:
                layer = transformer.get_submodule(name)
            except AttributeError:
                raise ValueError(f"LoRA module {name!r} of {path.name} is not in the ShapeEdit transformer; the LoRA "
                                 "was trained for another model") from None
            a, b = tensors[key + ".lora_A.weight"], tensors.get(key + ".lora_B.weight")
            if b is None or not isinstance(layer, torch.nn.Linear) or b.shape[0] != layer.out_features \
                    or a.shape[1] != layer.in_features or a.shape[0] != b.shape[1]:
                raise ValueError(f"LoRA tensors for {name!r} in {path.name} do not fit the layer "
                                 f"{getattr(layer, 'weight', torch.empty(0)).shape}; the LoRA was trained for another model")
            rank = a.shape[0]
            alpha = float(tensors[key + ".alpha"]) if key + ".alpha" in tensors else float(rank)
            delta = (b.double() @ a.double()) * (alpha / rank) * float(strength)
            layer.weight.add_(delta.to(layer.weight.dtype))
            used.update((key + ".lora_A.weight", key + ".lora_B.weight", key + ".alpha"))
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"{path.name} has keys this loader does not understand, e.g. {unused[0]!r}")
    return len(modules)


# ------------------------------------------------------------------------------------------------- editor


def _as_switch(value) -> bool:
    if isinstance(value, str):
        if value.lower() in ("on", "true", "1", "yes"):
            return True
        if value.lower() in ("off", "false", "0", "no", ""):
            return False
        raise ValueError(f"decompose must be on or off, got {value!r}")
    return bool(value)


class CogniEditEditor:
    """A base ShapeEdit editor plus Instruction Decompose, Token Focus Relocation and an optional merged LoRA."""

    def __init__(self, base, decompose=False, decomposer="rules", focus: str = "off", focus_strength: float = 1.0,
                 focus_blocks: str = "all", focus_kinds: Sequence[str] | str = DEFAULT_FOCUS_KINDS,
                 focus_start: float = 0.0, focus_end: float = 1.0, focus_reference: bool = False,
                 focus_weights=None, lora=None, lora_strength: float = 1.0):
        if focus not in FOCUS_MODES:
            raise ValueError(f"focus must be one of {FOCUS_MODES}, got {focus!r}")
        self.model = getattr(base, "model", base)  # DefaultEditor wraps a ShapeEditor
        self.steps = int(getattr(base, "steps", 12))
        self.shift = float(getattr(base, "shift", 1.0))
        if lora:
            self.model = copy.deepcopy(self.model)  # never change the caller's editor
            merge_lora(self.model.transformer, lora, lora_strength)
        self.decompose = _as_switch(decompose)
        if decomposer == "mllm":  # the shipped ShapeEdit decomposer model, through the transformers_vlm backend
            from .decomposer import shipped_backend

            decomposer = shipped_backend()
        self.decomposer = decomposer
        self.focus = focus
        self.focus_strength = float(focus_strength)
        focus_bias.logit_bias_from_weights(torch.zeros(1), self.focus_strength)  # validates strength > -1
        self.focus_blocks = focus_blocks
        kinds = focus_kinds.split(",") if isinstance(focus_kinds, str) else focus_kinds
        self.focus_kinds = tuple(k.strip() for k in kinds if k.strip())
        self.schedule = focus_bias.FocusSchedule(float(focus_start), float(focus_end))
        self.focus_reference = bool(focus_reference)
        self.learned = self._load_learned(focus_weights) if focus == "learned" else None
        self.last_instructions: list[str] = []
        self.last_spans: list = []
        self.probe = False  # set True to record attention mass per block call in last_records
        self.last_records: list = []

    # --- decomposition -------------------------------------------------------------------------------------
    def _decompositions(self, images, instructions):
        from ..decompose import decompose

        return [decompose(np.asarray(img, np.uint8), text, backend=self.decomposer)
                for img, text in zip(images, instructions)]

    def _focus_phrases(self, decomposition) -> list[str]:
        return [p.text for p in decomposition.focus if p.kind in self.focus_kinds]

    # --- focus ----------------------------------------------------------------------------------------------
    def _focus_positions(self, texts, decompositions) -> list[list[int]]:
        from .editor.text import tokenizer

        tok = tokenizer()
        self.last_spans = [phrase_spans(t, self._focus_phrases(d), tok, layout="qwen_image")
                           for t, d in zip(texts, decompositions)]
        return [s.positions for s in self.last_spans]

    def _check_layout(self, mask: torch.Tensor) -> None:
        """The spans' text length must equal what the editor encodes, else the layout is wrong."""
        lengths = (mask[:, self.model.prefix_len:].sum(1)).tolist()
        for spans, n in zip(self.last_spans, lengths):
            if spans.text_len != n:
                raise RuntimeError(f"focus spans assume {spans.text_len} text tokens but the editor encodes {n}; the "
                                   "editor's text template no longer matches the qwen_image span layout")

    def _load_learned(self, path):
        if not path:
            raise ValueError("focus=learned needs a focus-weights file: pass --editor-option focus_weights=PATH "
                             "(written by the Dense GRPO trainer with cogniedit.focus.weights_file.save_focus_weights)")
        from ..focus.weights_file import base_model_hash, load_learned_focus

        transformer = self.model.transformer
        return load_learned_focus(path, expect_family="shapeedit", expect_hash=base_model_hash(transformer),
                                  expect_hidden=transformer.inner_dim)

    # --- edit -------------------------------------------------------------------------------------------------
    def edit(self, images, instructions, seed: int = 0, **kwargs):
        instructions = list(instructions)
        images = np.asarray(images)
        need_decomposition = self.decompose or self.focus == "training_free"
        decompositions = self._decompositions(images, instructions) if need_decomposition else []
        texts = [d.enriched_instruction for d in decompositions] if self.decompose else instructions
        self.last_instructions = list(texts)
        kwargs.setdefault("steps", self.steps)
        kwargs.setdefault("shift", self.shift)
        if self.focus == "off":
            return self.model.edit(images, texts, seed=seed, **kwargs)

        from ..sampling.schedule import flow_sigmas

        transformer = self.model.transformer
        state = FocusState(None, self.focus_strength, self.focus_blocks, self.schedule,
                           sample_sigmas=flow_sigmas(kwargs["steps"], kwargs["shift"]).tolist(),
                           n_reference=int(self.model.image_to_latent(images[:1]).shape[1]),
                           bias_reference=self.focus_reference, probe=self.probe)
        positions = self._focus_positions(texts, decompositions) if self.focus == "training_free" else None
        handles = []

        def on_text(editor, ids, mask):  # the editor's own tokenisation: build per-sample weights from it
            text_len = ids.shape[1] - editor.prefix_len
            if positions is not None:
                self._check_layout(mask)
                state.weights = focus_bias.focus_weights(positions, text_len)
            else:  # learned
                handles.extend(learned_focus_hooks(transformer, self.learned, state, mask[:, editor.prefix_len:]))
            return {}

        def record_sigma(module, args, kwargs_):
            state.sigma = float(torch.as_tensor(kwargs_["timestep"]).reshape(-1)[0])

        original = install_focus_processors(transformer, state)
        handles.append(transformer.register_forward_pre_hook(record_sigma, with_kwargs=True))
        try:
            return self.model.edit(images, texts, seed=seed, focus=on_text, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
            restore_processors(transformer, original)
            self.last_records = state.records


def load_cogniedit_editor(decompose="off", focus="off", focus_strength: float = 1.0, focus_blocks: str = "all",
                          focus_kinds=DEFAULT_FOCUS_KINDS, focus_start: float = 0.0, focus_end: float = 1.0,
                          focus_reference: bool = False, focus_weights=None, decomposer="rules", lora=None,
                          lora_strength: float = 1.0, base=None, **editor_options):
    """Factory for ``--editor cogniedit.shapes.cogniedit_editor:load_cogniedit_editor`` (evaluate.py also routes
    ``--editor default`` here when a CogniEdit option is set). ``editor_options`` go to ``load_default_editor``
    (``path``, ``steps``, ``shift``, ``device``); ``base`` overrides the loaded editor (tests)."""
    if base is None:
        from .editor import load_default_editor

        base = load_default_editor(**editor_options)
    elif editor_options:
        raise TypeError(f"unknown options {sorted(editor_options)} (a base editor was given)")
    return CogniEditEditor(base, decompose=decompose, decomposer=decomposer, focus=focus,
                           focus_strength=focus_strength, focus_blocks=focus_blocks, focus_kinds=focus_kinds,
                           focus_start=focus_start, focus_end=focus_end, focus_reference=focus_reference,
                           focus_weights=focus_weights, lora=lora, lora_strength=lora_strength)


__all__ = ["CogniEditEditor", "FocusAttnProcessor", "FocusState", "install_focus_processors", "restore_processors",
           "learned_focus_hooks", "merge_lora", "load_cogniedit_editor", "OPTION_NAMES"]
