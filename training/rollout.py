"""What the trainer calls on a policy (``CachedConditioningPolicy``), the ShapeEdit editor's policy, and the rollout
of G SDE trajectories per case (no CFG). Qwen-Image-Edit's policy is in ``qwen_edit.py``.

Per-case conditioning (text embeddings + mask, source-image latent tokens, for Qwen-Image-Edit the instruction's
token count) is computed once and cached; batches pad the text to the longest case with mask 0. Rollouts use
``cogniedit.sampling.sample_trajectory`` with the Flow-GRPO SDE and store latents, means and log-probabilities.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from cogniedit.sampling import flow_sigmas, initial_noise, sample_trajectory

from .lora import lora_disabled
from .objectives import Rollouts


def derived_seed(*parts) -> int:
    """A 63-bit seed from (run seed, step, purpose, ...): every random draw of a step is a function of these,
    so a resumed run draws exactly what the uninterrupted run drew."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


@dataclass
class Conditioning:
    text: torch.Tensor   # [N, L, D]
    mask: torch.Tensor   # [N, L]
    ref: torch.Tensor    # [N, tokens, channels]
    instruction_len: torch.Tensor | None = None  # [N]: the instruction's tokens before the suffix (None: all)
    grid: tuple[int, int] | None = None          # (rows, cols) of the image token grid, where it varies by batch

    def _map(self, fn) -> "Conditioning":
        return Conditioning(*(None if t is None else fn(t)
                              for t in (self.text, self.mask, self.ref, self.instruction_len)), grid=self.grid)

    def repeat(self, group_size: int) -> "Conditioning":
        return self._map(lambda t: t.repeat_interleave(group_size, 0))

    def subset(self, index) -> "Conditioning":
        return self._map(lambda t: t[index])

    def to(self, device) -> "Conditioning":
        return self._map(lambda t: t.to(device))


class CachedConditioningPolicy:
    """What the trainer calls on a policy: per-case conditioning cached in ``_cache`` as rows (text [L, D],
    mask [L], source tokens [T, C], optionally the instruction's token count), a velocity on it (``velocity``:
    subclasses), and the learned Token Focus run in every call once ``enable_learned_focus`` is called."""

    def __init__(self, bf16: bool = False):
        self.bf16 = bf16
        self._cache: dict[str, tuple] = {}
        self.focus = None  # a LearnedFocus once enable_learned_focus is called
        self.focus_state = None
        # the text a case is conditioned on: its instruction, or with decompose.enabled the decomposer's enriched
        # instruction (training.decomposition), as the CogniEdit editor encodes it at inference
        self.instruction_of = lambda case: case.instruction

    @staticmethod
    def collate(rows) -> Conditioning:
        """Cached rows -> one batch, the text padded to the longest case with mask 0."""
        length = max(r[0].shape[0] for r in rows)
        text = torch.zeros(len(rows), length, rows[0][0].shape[-1], dtype=rows[0][0].dtype)
        mask = torch.zeros(len(rows), length, dtype=rows[0][1].dtype)
        for i, (emb, m, *_) in enumerate(rows):
            text[i, :emb.shape[0]], mask[i, :m.shape[0]] = emb, m
        lengths = torch.stack([torch.as_tensor(r[3]) for r in rows]) if len(rows[0]) > 3 else None
        return Conditioning(text, mask, torch.stack([r[2] for r in rows]), lengths)

    def enable_learned_focus(self, module, strength: float) -> None:
        """Run ``module`` (cogniedit.focus.learned.LearnedFocus) in every policy call, exactly as the CogniEdit
        editor and ComfyUI's Token Focus node run it at inference (focus processors and block hooks), but with the
        bias left differentiable so the predictor and the soft tokens are trained with the LoRA."""
        from cogniedit.focus.diffusers_adapter import FocusState, install_focus_processors, learned_focus_hooks

        self.focus = module
        # the source image's tokens follow the noisy ones; like the editor, bias only the noisy-image query rows
        # (n_reference: their count, set per call where image sizes vary)
        self.focus_state = FocusState(None, float(strength), n_reference=0)
        install_focus_processors(self.transformer, self.focus_state)
        learned_focus_hooks(self.transformer, module, self.focus_state)  # idle outside focus_applied

    @contextlib.contextmanager
    def focus_applied(self, text_mask: torch.Tensor, enabled: bool = True, instruction_len=None,
                      n_reference: int | None = None):
        """Learned focus on for the calls inside (``text_mask``: the cached mask; valid tokens end with the
        instruction and the 5 suffix tokens; ``instruction_len``: see ``learned_focus_call``; ``n_reference``:
        the source image's token count, default the policy's fixed one)."""
        if self.focus is None or not enabled:
            yield
            return
        from cogniedit.focus.diffusers_adapter import learned_focus_call

        n_reference = n_reference if n_reference is not None else self.latent_shape(1)[1]
        with learned_focus_call(self.transformer, self.focus_state, text_mask, instruction_len, detach=False,
                                n_reference=n_reference):
            yield

    def velocity(self, x, sigma, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def velocity_fn(self, cond: Conditioning, focus: bool = True):
        def fn(x, sigma):
            autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
            with autocast, self.focus_applied(cond.mask, focus, cond.instruction_len, cond.ref.shape[1]):
                v = self.velocity(x, sigma, cond)
            return v.to(x.dtype)
        return fn

    def reference_velocity_fn(self, cond: Conditioning):
        """The frozen base: LoRA disabled and no learned focus."""
        policy_fn = self.velocity_fn(cond, focus=False)

        def fn(x, sigma):
            with lora_disabled(self.transformer):
                return policy_fn(x, sigma)
        return fn


class ShapeEditPolicy(CachedConditioningPolicy):
    """Velocity of the ShapeEdit editor (LoRA inside ``editor.transformer``, optionally learned Token Focus) on
    cached conditioning."""

    def __init__(self, editor, bf16: bool = False):
        super().__init__(bf16)
        self.editor = editor

    @property
    def transformer(self):
        return self.editor.transformer

    @property
    def tokenizer(self):
        from cogniedit.shapes.editor.text import tokenizer

        return tokenizer()

    def token_grid(self, cond: Conditioning | None = None) -> tuple[int, int]:
        from cogniedit.shapes.editor.latent import GRID

        return GRID, GRID

    def encode_cases(self, cases) -> Conditioning:
        from cogniedit.shapes.render import render_scene

        rows = []
        for case in cases:
            if case.case_id not in self._cache:  # computed once per case
                with torch.no_grad():
                    emb, mask = self.editor.encode_text([self.instruction_of(case)])
                    ref = self.editor.image_to_latent(render_scene(case.source, case.world)[None])
                self._cache[case.case_id] = (emb[0], mask[0], ref[0])
            rows.append(self._cache[case.case_id])
        return self.collate(rows)

    def velocity(self, x, sigma, cond: Conditioning) -> torch.Tensor:
        return self.editor.velocity(x, sigma, (cond.text, cond.mask), cond.ref)

    def latent_shape(self, n: int, cond: Conditioning | None = None) -> tuple:
        from cogniedit.shapes.editor.latent import GRID, TOKEN_CHANNELS

        return (n, GRID * GRID, TOKEN_CHANNELS)

    def decode(self, latents: torch.Tensor, cond: Conditioning | None = None) -> np.ndarray:
        return self.editor.latent_to_image(latents.detach().float().cpu())


def rollout(policy, cond: Conditioning, rollout_cfg: dict, seed: int, step: int) -> tuple[Rollouts, np.ndarray]:
    """G trajectories for each of the B cases in ``cond`` (case-major order); returns rollouts and final images."""
    g = int(rollout_cfg["group_size"])
    b = cond.text.shape[0]
    full = cond.repeat(g)
    one = policy.latent_shape(1, cond)[1:]
    if rollout_cfg.get("shared_noise"):
        noise = [initial_noise(one, derived_seed(seed, step, "init", i)) for i in range(b) for _ in range(g)]
    else:
        noise = [initial_noise(one, derived_seed(seed, step, "init", n)) for n in range(b * g)]
    x_init = torch.stack(noise).to(cond.ref.device)
    sigmas = flow_sigmas(int(rollout_cfg["steps"]), float(rollout_cfg["shift"]))
    generator = torch.Generator().manual_seed(derived_seed(seed, step, "sde"))
    traj = sample_trajectory(policy.velocity_fn(full), x_init, sigmas, eta=float(rollout_cfg["eta"]),
                             generator=generator)
    return Rollouts(traj.sigmas, traj.latents, traj.log_probs, traj.means, traj.eta), policy.decode(traj.final, cond)
