"""CogniEdit on the small ShapeEdit editor: Instruction Decompose, Token Focus Relocation and a LoRA around it.

    python -m cogniedit.shapes.evaluate --n 500 --seed 0 --editor cogniedit.shapes.cogniedit_editor:load_cogniedit_editor \
        --decompose on --focus training_free --editor-option focus_strength=2

``CogniEditEditor`` keeps the editor protocol (``edit(images uint8 [B,H,W,3], instructions, seed) -> uint8``) and
wraps a base editor (``cogniedit.shapes.editor.DefaultEditor`` or a bare ``ShapeEditor``):

* decompose: each (source image, instruction) goes through ``cogniedit.decompose.decompose`` (rules by default);
  the editor encodes the enriched instruction. ``decompose_cache=DIR`` keeps a model's answers on disk, so every
  arm evaluated on the same cases asks the decomposer once.
* focus ``training_free``: the decomposer's focus phrases are mapped to token positions of the editor's own text
  sequence (``cogniedit.focus.spans``, layout ``qwen_image``: the editor drops ``<|im_start|>user\\n`` as ComfyUI's
  Qwen-Image conditioning does), and ``FocusAttnProcessor`` (``cogniedit.focus.diffusers_adapter``) adds the focus
  core's ``log(1 + s*w)`` bias to the noisy-image query rows of the DiT's joint attention. Processors are installed
  for one edit and the original ones restored afterwards, so the base editor is untouched.
* focus ``learned``: a ``LearnedFocus`` file rewrites the text stream of its blocks and its window weights feed
  the same bias (``cogniedit.focus.learned``).
* lora: a trainer LoRA file (``diffusion_model.<module>.lora_A.weight / .lora_B.weight / .alpha``) merged into a
  copy of the transformer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..focus import bias as focus_bias
from ..focus.attention_maps import AttentionMapRecorder, phrase_weights
from ..focus.diffusers_adapter import (FocusState, install_focus_processors, learned_focus_call,
                                      learned_focus_hooks, restore_processors)
from ..focus.spans import phrase_spans
from .editor.latent import GRID

log = logging.getLogger(__name__)

FOCUS_MODES = ("off", "training_free", "learned")
DEFAULT_FOCUS_KINDS = ("colour", "position", "count")
LORA_PREFIX = "diffusion_model."
# Options this module understands (evaluate.py routes the default editor here when one is given).
OPTION_NAMES = ("decompose", "decomposer", "decompose_check", "decompose_cache", "decompose_beams", "focus",
                "focus_strength", "focus_blocks", "focus_kinds", "focus_start", "focus_end", "focus_reference",
                "focus_weights", "focus_shape", "focus_mode", "lora", "lora_strength")


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
                 focus_weights=None, lora=None, lora_strength: float = 1.0, focus_shape: str = "uniform",
                 focus_mode: str = "bias", decompose_check=None, decompose_cache=None, decompose_beams=None):
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
        # Check a model's decompositions against the editor's grammar on the scene its <info> describes
        # (decomposer.answer_check); on by default for a model, meaningless for the rules.
        from .decomposer.answer_check import checks_answers

        self.decompose_check = checks_answers(decomposer) if decompose_check is None else _as_switch(decompose_check)
        # where the checked answer does not read, first ask the same model for this many beams (decomposer.beams);
        # 0 turns that off
        from .decomposer.beams import DEFAULT_BEAMS

        self.decompose_beams = DEFAULT_BEAMS if decompose_beams is None else int(decompose_beams)
        if self.decompose_beams < 0:
            raise ValueError(f"decompose_beams must be 0 (off) or a number of beams, got {decompose_beams!r}")
        # a folder of the model's answers (JSON per image + instruction + model files): arms evaluated on the same
        # cases ask the decomposer once
        from ..decompose import DecompositionCache

        self.decompose_cache = DecompositionCache(directory=decompose_cache) if decompose_cache else None
        self.check_counts: Counter = Counter()
        self.last_checks: list[str] = []
        self.focus = focus
        self.focus_strength = float(focus_strength)
        focus_bias.logit_bias_from_weights(torch.zeros(1), self.focus_strength)  # validates strength > -1
        self.focus_blocks = str(focus_blocks)  # --editor-option focus_blocks=1 arrives as the JSON number 1
        kinds = focus_kinds.split(",") if isinstance(focus_kinds, str) else focus_kinds
        self.focus_kinds = tuple(k.strip() for k in kinds if k.strip())
        self.schedule = focus_bias.FocusSchedule(float(focus_start), float(focus_end))
        self.focus_reference = bool(focus_reference)
        self.focus_shape, self.focus_mode = str(focus_shape), str(focus_mode)  # FocusState checks them
        FocusState(None, 0.0, shape=self.focus_shape, mode=self.focus_mode)
        self.learned = self._load_learned(focus_weights) if focus == "learned" else None
        self.last_instructions: list[str] = []
        self.last_spans: list = []
        self.probe = False  # set True to record attention mass per block call in last_records
        self.last_records: list = []
        # set to {"blocks": "0-1", "steps": FocusSchedule(0, 0.5)} (either optional) for per-focus-phrase attention
        # maps of the next edits in last_maps (cogniedit.focus.attention_maps; render_phrase_maps draws them)
        self.attention_maps: dict | None = None
        self.last_maps = None

    # --- decomposition -------------------------------------------------------------------------------------
    def _decompositions(self, images, instructions):
        from ..decompose import decompose

        arrays = [np.asarray(img, np.uint8) for img in images]
        out = [decompose(img, text, backend=self.decomposer, cache=self.decompose_cache)
               for img, text in zip(arrays, instructions)]
        if not self.decompose_check:
            return out
        from .decomposer.beams import check_with_beams

        checked = [check_with_beams(d, img, text, self.decomposer, self.decompose_beams)
                   for d, img, text in zip(out, arrays, instructions)]
        self.last_checks = [choice for _, choice in checked]
        self.check_counts.update(self.last_checks)
        return [d for d, _ in checked]

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
        maps = self.attention_maps
        if maps is not None and self.focus == "off":
            raise ValueError("attention maps need focus on: for the base model's maps use focus=training_free with "
                             "focus_strength=0")
        need_decomposition = self.decompose or self.focus == "training_free" or maps is not None
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
                           bias_reference=self.focus_reference, probe=self.probe, shape=self.focus_shape,
                           mode=self.focus_mode)
        spans_needed = self.focus == "training_free" or maps is not None
        positions = self._focus_positions(texts, decompositions) if spans_needed else None
        handles, calls = [], contextlib.ExitStack()

        def on_text(editor, ids, mask):  # the editor's own tokenisation: build per-sample weights from it
            text_len = ids.shape[1] - editor.prefix_len
            if spans_needed:
                self._check_layout(mask)
            if self.focus == "training_free":
                state.weights = focus_bias.focus_weights(positions, text_len)
            else:  # learned
                handles.extend(learned_focus_hooks(transformer, self.learned, state))
                calls.enter_context(learned_focus_call(transformer, state, mask[:, editor.prefix_len:]))
            if maps is not None:  # per focus phrase, on the noisy image's token grid
                weights, names = phrase_weights(self.last_spans, text_len)
                state.maps = AttentionMapRecorder(weights, names, (GRID, GRID), **maps)
            return {}

        def record_sigma(module, args, kwargs_):
            state.sigma = float(torch.as_tensor(kwargs_["timestep"]).reshape(-1)[0])

        original = install_focus_processors(transformer, state)
        handles.append(transformer.register_forward_pre_hook(record_sigma, with_kwargs=True))
        try:
            return self.model.edit(images, texts, seed=seed, focus=on_text, **kwargs)
        finally:
            calls.close()
            for handle in handles:
                handle.remove()
            restore_processors(transformer, original)
            self.last_records = state.records
            self.last_maps = state.maps.result() if state.maps is not None else None


def load_cogniedit_editor(decompose="off", focus="off", focus_strength: float = 1.0, focus_blocks: str = "all",
                          focus_kinds=DEFAULT_FOCUS_KINDS, focus_start: float = 0.0, focus_end: float = 1.0,
                          focus_reference: bool = False, focus_weights=None, decomposer="rules", lora=None,
                          lora_strength: float = 1.0, focus_shape: str = "uniform", focus_mode: str = "bias",
                          decompose_check=None, decompose_cache=None, decompose_beams=None, base=None,
                          **editor_options):
    """Factory for ``--editor cogniedit.shapes.cogniedit_editor:load_cogniedit_editor`` (evaluate.py also routes
    ``--editor default`` here when a CogniEdit option is set). ``editor_options`` go to ``load_default_editor``
    (``path``, ``steps``, ``shift``, ``device``); ``base`` overrides the loaded editor (tests)."""
    if base is None:
        from .editor import load_default_editor

        base = load_default_editor(**editor_options)
    elif editor_options:
        raise TypeError(f"unknown options {sorted(editor_options)} (a base editor was given)")
    return CogniEditEditor(base, decompose=decompose, decomposer=decomposer, decompose_check=decompose_check,
                           decompose_cache=decompose_cache, decompose_beams=decompose_beams, focus=focus,
                           focus_strength=focus_strength, focus_blocks=focus_blocks, focus_kinds=focus_kinds,
                           focus_start=focus_start, focus_end=focus_end, focus_reference=focus_reference,
                           focus_weights=focus_weights, lora=lora, lora_strength=lora_strength,
                           focus_shape=focus_shape, focus_mode=focus_mode)


__all__ = ["CogniEditEditor", "merge_lora", "load_cogniedit_editor", "OPTION_NAMES"]
