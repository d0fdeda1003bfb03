"""GRPO objectives over recorded SDE rollouts: Dense GRPO (paper section 4.3) and the sparse per-step GRPO of
Flow-GRPO (the baseline). Both are selectable by name (``objective.name``) and share one set of settings.

Notation: N trajectories (B cases x G samples), transition j goes ``latents[j] -> latents[j+1]`` at
``sigmas[j] -> sigmas[j+1]`` (cogniedit.sampling's indices), ``velocity_fn(x [N,...], sigma [N]) -> v``.

Dense GRPO (the fuller reading, docs/training.md):
* window of k consecutive transitions ``r, ..., r+k-1`` from a random start r per trajectory;
* the window's first input is the recorded latent, detached (sg); each step's mean ``mu_i`` comes from the
  current policy under grad, and the next state is ``s_{i+1} = x_{i+1} + (mu_i - mu_i^old)``: the recorded
  latent moved by how much the policy moved the mean (the reparameterised step with the rollout's own noise).
  On-policy it equals ``x_{i+1}`` exactly, so importance ratios are exactly 1; off-policy, later steps'
  log-probs back-propagate through the chain into earlier steps' network calls;
* ``psi = sum_i [log p_theta(x_{i+1} | s_i) - log p_old(x_{i+1} | x_i)]``, ratio ``exp(psi)``, clipped in log space to
  ``+-log(1+eps)`` (the paper's form) or, ``clip_space="ratio"``, to ``[1-eps, 1+eps]``;
* loss per trajectory ``-min(e^psi A, clip(e^psi) A) + beta * mean_i KL_i``,
  ``KL_i = ||mu_theta - mu_ref||^2 / (2 std^2)`` with ``mu_ref`` from the frozen base (LoRA disabled).

Sparse GRPO (Flow-GRPO): every chosen step is an independent term with its own ratio and clip, evaluated at the
recorded (detached) latent, averaged over the steps. With k = 1 and the same clip space both are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from cogniedit.sampling.steps import gaussian_log_prob, sde_mean_std

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["Rollouts", "ObjectiveSettings", "ObjectiveResult", "dense_grpo_loss", "sparse_grpo_loss",
           "compute_objective", "clipped_surrogate"]


@dataclass
class Rollouts:
    """Recorded SDE trajectories, flattened over N = B*G (see cogniedit.sampling.Trajectory)."""

    sigmas: torch.Tensor      # [T+1] float32 descending
    latents: torch.Tensor     # [T+1, N, ...]
    log_probs: torch.Tensor   # [T, N] float64, summed over elements (gaussian_log_prob)
    means: torch.Tensor       # [T, N, ...] rollout-policy means
    eta: float

    @property
    def num_steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def num_trajectories(self) -> int:
        return self.latents.shape[1]

    def subset(self, index: torch.Tensor) -> "Rollouts":
        return Rollouts(self.sigmas, self.latents[:, index], self.log_probs[:, index], self.means[:, index], self.eta)


@dataclass
class ObjectiveSettings:
    clip_eps: float = 1e-4
    clip_space: str = "log"            # log | ratio
    beta: float = 0.0
    reduction: str = "mean"            # mean | sum (log-prob and KL per element or summed)
    detach_inputs: str = "first"       # dense: first | all
    checkpoint_steps: bool = False     # dense: recompute forwards in backward

    @classmethod
    def from_config(cls, objective: dict) -> "ObjectiveSettings":
        from .config import clip_space

        return cls(float(objective["clip_eps"]), clip_space(objective), float(objective["beta"]),
                   objective["logprob_reduction"], objective["detach_inputs"], bool(objective["checkpoint_steps"]))


@dataclass
class ObjectiveResult:
    loss: torch.Tensor                       # scalar; detached when backward was run inside
    stats: dict = field(default_factory=dict)


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, eps: float, space: str):
    """Per-sample PPO loss ``-min(r A, clip(r) A)`` from a log-ratio; returns (loss, ratio, clipped mask)."""
    ratio = torch.exp(log_ratio)
    if space == "log":
        bound = math.log1p(eps)
        clipped_ratio = torch.exp(log_ratio.clamp(-bound, bound))
    elif space == "ratio":
        clipped_ratio = ratio.clamp(1.0 - eps, 1.0 + eps)
    else:
        raise ValueError(f"clip_space must be log or ratio, got {space!r}")
    loss = -torch.minimum(ratio * advantages, clipped_ratio * advantages)
    return loss, ratio, (clipped_ratio != ratio)


def _scale(x: torch.Tensor, reduction: str, elements: int) -> torch.Tensor:
    return x / elements if reduction == "mean" else x


def _kl(mean, mean_ref, std, reduction, elements):
    diff = (mean - mean_ref).to(torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64, device=diff.device)
    return _scale((diff**2 / (2 * std**2)).flatten(1).sum(1), reduction, elements)


def _velocity(fn, x, sigma, use_checkpoint):
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(fn, x, sigma, use_reentrant=False)
    return fn(x, sigma)


def _reduce(per_sample, mask, normaliser):
    mask = mask.to(per_sample.dtype)
    denominator = normaliser if normaliser is not None else mask.sum().clamp(min=1.0)
    return (per_sample * mask).sum() / denominator


def _prepare(rollouts: Rollouts, settings: ObjectiveSettings, ref_velocity_fn, mask):
    """What both objectives start from: the KL check, the mask (default: all), trajectory indices, latent size
    (for the per-element log-prob scale) and device."""
    if settings.beta > 0 and ref_velocity_fn is None:
        raise ValueError("objective.beta > 0 needs a reference velocity function (the base model, LoRA disabled)")
    n = rollouts.num_trajectories
    mask = torch.ones(n, dtype=torch.bool) if mask is None else mask
    return mask, torch.arange(n), rollouts.latents[0, 0].numel(), rollouts.latents.device


def _stats(ratio: torch.Tensor, clipped: torch.Tensor, kl: torch.Tensor, keep: torch.Tensor) -> dict:
    """Ratio range, clip fraction and KL over the kept trajectories (last dim = trajectories)."""
    if not keep.any():
        return {"ratio_mean": 1.0, "ratio_min": 1.0, "ratio_max": 1.0, "clip_frac": 0.0, "kl": 0.0}
    ratio, clipped, kl = ratio[..., keep], clipped[..., keep], kl[..., keep]
    return {"ratio_mean": float(ratio.mean()), "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "clip_frac": float(clipped.double().mean()), "kl": float(kl.mean())}


def dense_grpo_loss(velocity_fn: VelocityFn, rollouts: Rollouts, advantages: torch.Tensor, starts: torch.Tensor,
                    window: int, settings: ObjectiveSettings, ref_velocity_fn: VelocityFn | None = None,
                    mask: torch.Tensor | None = None, normaliser: float | None = None,
                    backward: bool = False) -> ObjectiveResult:
    """Dense GRPO over the windows ``starts[n] ... starts[n]+window-1`` (see the module docstring)."""
    n = rollouts.num_trajectories
    starts = torch.as_tensor(starts, dtype=torch.long).reshape(n)
    if window < 1 or int(starts.min()) < 0 or int(starts.max()) + window > rollouts.num_steps:
        raise ValueError(f"window {window} from starts {starts.tolist()} leaves the {rollouts.num_steps}-step rollout")
    mask, idx, elements, device = _prepare(rollouts, settings, ref_velocity_fn, mask)
    state = rollouts.latents[starts, idx].detach()
    psi = torch.zeros(n, dtype=torch.float64, device=device)
    kl_total = torch.zeros(n, dtype=torch.float64, device=device)
    for i in range(window):
        j = starts + i
        sigma, sigma_next = rollouts.sigmas[j].to(device), rollouts.sigmas[j + 1].to(device)
        detach_input = i == 0 or settings.detach_inputs == "all"
        x_in = state.detach() if detach_input else state
        target = rollouts.latents[j + 1, idx]

        def window_step(state, sigma=sigma, sigma_next=sigma_next, target=target, detach_input=detach_input):
            v = velocity_fn(state.detach() if detach_input else state, sigma)
            mean, std = sde_mean_std(state, v, sigma, sigma_next, rollouts.eta)
            return mean, std, gaussian_log_prob(target, mean, std)

        # Checkpointing recomputes the whole step (network, mean, float64 log-prob) in backward; the last step's
        # graph is freed first in backward anyway, so recomputing it would only cost time.
        if settings.checkpoint_steps and i + 1 < window and torch.is_grad_enabled():
            mean, std, log_p = checkpoint(window_step, state, use_reentrant=False)
        else:
            mean, std, log_p = window_step(state)
        log_p = _scale(log_p, settings.reduction, elements)
        old = _scale(rollouts.log_probs[j, idx].to(device), settings.reduction, elements)
        psi = psi + (log_p - old)
        if settings.beta > 0:
            # The reference is frozen, but its mean depends on the window's state, so the KL's gradient also
            # flows through mu_ref(s_i) along the chain (exact derivative; no grad needed at the first step).
            with torch.set_grad_enabled(torch.is_grad_enabled() and state.requires_grad):
                v_ref = _velocity(ref_velocity_fn, x_in, sigma, settings.checkpoint_steps)
                mean_ref, _ = sde_mean_std(state, v_ref, sigma, sigma_next, rollouts.eta)
            kl_total = kl_total + _kl(mean, mean_ref, std, settings.reduction, elements)
        if i + 1 < window:  # the next state carries the policy's change of this step's mean (see docstring)
            state = target + (mean - rollouts.means[j, idx].to(device))
    adv = advantages.to(device=device, dtype=torch.float64)
    policy, ratio, clipped = clipped_surrogate(psi, adv, settings.clip_eps, settings.clip_space)
    ratio = ratio.detach()
    per_sample = policy + settings.beta * kl_total / window
    loss = _reduce(per_sample, mask.to(device), normaliser)
    if backward:
        loss.backward()
        loss = loss.detach()
    return ObjectiveResult(loss, _stats(ratio, clipped, kl_total.detach() / window, mask.to(device)))


def sparse_grpo_loss(velocity_fn: VelocityFn, rollouts: Rollouts, advantages: torch.Tensor, steps: torch.Tensor,
                     settings: ObjectiveSettings, ref_velocity_fn: VelocityFn | None = None,
                     mask: torch.Tensor | None = None, normaliser: float | None = None,
                     backward: bool = False) -> ObjectiveResult:
    """Flow-GRPO: independent per-step ratios at the recorded latents, per-step clip, averaged over the steps.
    ``steps``: ``[N, k]`` transition indices per trajectory. With ``backward`` each step is back-propagated on
    its own (the terms are independent, so only one step's graph is alive at a time)."""
    n = rollouts.num_trajectories
    steps = torch.as_tensor(steps, dtype=torch.long).reshape(n, -1)
    k = steps.shape[1]
    if int(steps.min()) < 0 or int(steps.max()) >= rollouts.num_steps:
        raise ValueError(f"steps {steps.tolist()} out of range for a {rollouts.num_steps}-step rollout")
    mask, idx, elements, device = _prepare(rollouts, settings, ref_velocity_fn, mask)
    keep = mask.to(device)
    adv = advantages.to(device=device, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=device)
    ratios, clips, kls = [], [], []
    for i in range(k):
        j = steps[:, i]
        sigma, sigma_next = rollouts.sigmas[j].to(device), rollouts.sigmas[j + 1].to(device)
        x = rollouts.latents[j, idx].detach()
        mean, std = sde_mean_std(x, velocity_fn(x, sigma), sigma, sigma_next, rollouts.eta)
        log_p = _scale(gaussian_log_prob(rollouts.latents[j + 1, idx], mean, std), settings.reduction, elements)
        old = _scale(rollouts.log_probs[j, idx].to(device), settings.reduction, elements)
        policy, ratio, clipped = clipped_surrogate(log_p - old, adv, settings.clip_eps, settings.clip_space)
        per_sample = policy
        kl = torch.zeros(n, dtype=torch.float64, device=device)
        if settings.beta > 0:
            with torch.no_grad():
                mean_ref, _ = sde_mean_std(x, ref_velocity_fn(x, sigma), sigma, sigma_next, rollouts.eta)
            kl = _kl(mean, mean_ref, std, settings.reduction, elements)
            per_sample = per_sample + settings.beta * kl
        step_loss = _reduce(per_sample, keep, normaliser) / k
        if backward:
            step_loss.backward()
            step_loss = step_loss.detach()
        total = total + step_loss
        ratios.append(ratio.detach())
        clips.append(clipped)
        kls.append(kl.detach())
    return ObjectiveResult(total, _stats(torch.stack(ratios), torch.stack(clips), torch.stack(kls), keep))


def draw_steps(name: str, num_trajectories: int, num_steps: int, window: int, generator: torch.Generator):
    """Dense: window starts ``[N]`` uniform in ``0..T-k``. Sparse: ``[N, k]`` distinct random steps (Flow-GRPO
    trains on a random subset of timesteps)."""
    if name == "dense":
        return torch.randint(0, num_steps - window + 1, (num_trajectories,), generator=generator)
    return torch.stack([torch.randperm(num_steps, generator=generator)[:window] for _ in range(num_trajectories)])


def compute_objective(name: str, velocity_fn, rollouts, advantages, steps, window, settings, **kwargs):
    if name == "dense":
        return dense_grpo_loss(velocity_fn, rollouts, advantages, steps, window, settings, **kwargs)
    if name == "sparse":
        return sparse_grpo_loss(velocity_fn, rollouts, advantages, steps, settings, **kwargs)
    raise ValueError(f"objective.name must be dense or sparse, got {name!r}")
