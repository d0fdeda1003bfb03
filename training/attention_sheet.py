"""The trainer's attention sheet: for a fixed set of cases (the first ``log.attention_cases``), per focus phrase,
where the policy's image tokens attend to it without and with (learned) focus, over a deterministic ODE edit (seed 0,
``rollout.steps``/``rollout.shift``), averaged over ``log.attention_blocks`` and the ``log.attention_steps`` range.
Same recorder and rendering as the Token Focus node's ``attention_maps`` output (cogniedit.focus.attention_maps).

Phrases: the decomposer's focus phrases when ``decompose.enabled`` (the text the policy encodes is its enriched
instruction), else the rules' focus phrases of the instruction as it is encoded. Without learned focus both maps are
the policy's own (the sheet still shows how the LoRA moves the attention over training). Recording is read-only.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from cogniedit.focus.attention_maps import AttentionMapRecorder, phrase_entries, render_phrase_maps
from cogniedit.focus.bias import FocusSchedule, focus_weights
from cogniedit.sampling import flow_sigmas, initial_noise, sample_trajectory

TILE = 96


def focus_phrases(case, text: str, decomposer) -> list[str]:
    if decomposer is not None:
        return [p.text for p in decomposer.decomposition(case).focus]
    from cogniedit.decompose.rules import decompose_rules

    return [p.text for p in decompose_rules(text, rewrite=False).focus]


def phrase_weights_in(text: str, phrases: list[str], tokenizer, mask: torch.Tensor):
    """(names, ``[1, P, L]`` weights) of the phrases in one encoded case: its valid text (``mask``) ends with the
    instruction and the Qwen template's suffix, so positions count from the end of the valid tokens."""
    from cogniedit.focus.spans import phrase_spans

    names, entries = phrase_entries(phrase_spans(text, phrases, tokenizer, "qwen_image"), "end")
    n_valid, length = int(mask.sum()), mask.shape[-1]
    weights = torch.zeros(1, max(len(names), 1), length)
    if names:
        weights[0, :len(names), :n_valid] = focus_weights(entries, n_valid)
    return names, weights


@contextlib.contextmanager
def recording(policy, recorder: AttentionMapRecorder, sample_sigmas, n_reference: int):
    """The policy's focus processors record into ``recorder`` (installed for this block when focus is not trained),
    with each call's sigma."""
    from cogniedit.focus.diffusers_adapter import FocusState, install_focus_processors, restore_processors

    transformer = policy.transformer
    state, original = policy.focus_state, None
    if state is None:  # no learned focus: plain processors, strength 0 (exactly diffusers' attention)
        state = FocusState(None, 0.0, n_reference=n_reference)
        original = install_focus_processors(transformer, state)
    saved = (state.maps, state.sample_sigmas, state.sigma)
    state.maps, state.sample_sigmas = recorder, list(sample_sigmas)

    def record_sigma(module, args, kwargs):
        state.sigma = float(torch.as_tensor(kwargs["timestep"]).reshape(-1)[0])

    hook = transformer.register_forward_pre_hook(record_sigma, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()
        state.maps, state.sample_sigmas, state.sigma = saved
        if original is not None:
            restore_processors(transformer, original)


def case_maps(policy, case, text: str, phrases: list[str], rollout_cfg: dict, blocks: str, steps: FocusSchedule):
    """``PhraseMaps`` of one case's ODE edit by the current policy, or None when no phrase is in its text."""
    cond = policy.encode_cases([case])
    names, weights = phrase_weights_in(text, phrases, policy.tokenizer, cond.mask[0].cpu())
    if not names:
        return None
    sigmas = flow_sigmas(int(rollout_cfg["steps"]), float(rollout_cfg["shift"]))
    recorder = AttentionMapRecorder(weights, [names], policy.token_grid(cond), blocks, steps)
    device = next(policy.transformer.parameters()).device
    cond = cond.to(device)
    x = initial_noise(policy.latent_shape(1, cond), 0).to(device)
    with torch.no_grad(), recording(policy, recorder, sigmas.tolist(), cond.ref.shape[1]):
        sample_trajectory(policy.velocity_fn(cond), x, sigmas, eta=0.0)
    return recorder.result()


def attention_sheet(policy, cases, texts, phrases, sources, rollout_cfg: dict, blocks: str = "all",
                    steps: FocusSchedule | None = None) -> np.ndarray | None:
    """uint8 sheet: each case's rows (source | without focus | with focus per phrase) stacked, left-aligned on white;
    None when no case has a focus phrase in its text."""
    sheets = []
    for case, text, words, source in zip(cases, texts, phrases, sources):
        maps = case_maps(policy, case, text, words, rollout_cfg, blocks, steps or FocusSchedule())
        if maps is not None:
            sheets.append(render_phrase_maps(maps, [source], tile=TILE))
    if not sheets:
        return None
    width = max(s.shape[1] for s in sheets)
    return np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255)
                           for s in sheets])
