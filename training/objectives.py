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

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from cogniedit.sampling.steps import gaussian_log_prob, sde_mean_std

log = logging.getLogger(__name__)

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
    dense_backward: str = "graph"      # dense: graph | checkpoint | sweep (how the window's gradient is computed)

    @classmethod
    def from_config(cls, objective: dict) -> "ObjectiveSettings":
        from .config import clip_space

        return cls(float(objective["clip_eps"]), clip_space(objective), float(objective["beta"]),
                   objective["logprob_reduction"], objective["detach_inputs"], objective["dense_backward"])


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
                    backward: bool = False, on_policy: bool = False) -> ObjectiveResult:
    """Dense GRPO over the windows ``starts[n] ... starts[n]+window-1`` (see the module docstring).

    ``settings.dense_backward``: ``graph`` keeps the k steps' graphs and back-propagates once; ``checkpoint``
    recomputes each step's forward in backward; ``sweep`` (with ``backward``) back-propagates one step at a time
    in reverse (``_dense_sweep``). ``on_policy``: the parameters are the rollout's (the first minibatch after it),
    which lets the sweep skip its value pass."""
    n = rollouts.num_trajectories
    starts = torch.as_tensor(starts, dtype=torch.long).reshape(n)
    if window < 1 or int(starts.min()) < 0 or int(starts.max()) + window > rollouts.num_steps:
        raise ValueError(f"window {window} from starts {starts.tolist()} leaves the {rollouts.num_steps}-step rollout")
    if settings.dense_backward not in ("graph", "checkpoint", "sweep"):
        raise ValueError(f"dense_backward must be graph, checkpoint or sweep, got {settings.dense_backward!r}")
    if settings.dense_backward == "sweep" and backward and torch.is_grad_enabled():
        return _dense_sweep(velocity_fn, rollouts, advantages, starts, window, settings, ref_velocity_fn, mask,
                            normaliser, on_policy)
    mask, idx, elements, device = _prepare(rollouts, settings, ref_velocity_fn, mask)
    step = _WindowStep(velocity_fn, ref_velocity_fn, rollouts, starts, settings, idx, elements, device)
    state = rollouts.latents[starts, idx].detach()
    psi = torch.zeros(n, dtype=torch.float64, device=device)
    kl_total = torch.zeros(n, dtype=torch.float64, device=device)
    for i in range(window):
        # Checkpointing recomputes the whole step (network, mean, float64 log-prob, KL) in backward; the last
        # step's graph is freed first in backward anyway, so recomputing it would only cost time.
        if settings.dense_backward == "checkpoint" and i + 1 < window and torch.is_grad_enabled():
            mean, log_ratio, kl = checkpoint(step, i, state, use_reentrant=False)
        else:
            mean, log_ratio, kl = step(i, state)
        psi, kl_total = psi + log_ratio, kl_total + kl
        if i + 1 < window:  # the next state carries the policy's change of this step's mean (see docstring)
            state = step.next_state(i, mean)
    adv = advantages.to(device=device, dtype=torch.float64)
    policy, ratio, clipped = clipped_surrogate(psi, adv, settings.clip_eps, settings.clip_space)
    ratio = ratio.detach()
    per_sample = policy + settings.beta * kl_total / window
    loss = _reduce(per_sample, mask.to(device), normaliser)
    if backward:
        loss.backward()
        loss = loss.detach()
    return ObjectiveResult(loss, _stats(ratio, clipped, kl_total.detach() / window, mask.to(device)))


class _WindowStep:
    """Step i of every trajectory's window: network call, SDE mean, log-prob and (beta > 0) the KL to the base, at
    a given state, exactly as ``dense_grpo_loss`` computes them."""

    def __init__(self, velocity_fn, ref_velocity_fn, rollouts, starts, settings, idx, elements, device):
        self.velocity_fn, self.ref_velocity_fn, self.rollouts = velocity_fn, ref_velocity_fn, rollouts
        self.starts, self.settings, self.idx, self.elements, self.device = starts, settings, idx, elements, device

    def __call__(self, i: int, state: torch.Tensor):
        """(mean, log-ratio to the rollout policy, KL) of step i at ``state``. The KL's reference mean depends on
        the state too, so its gradient also flows along the chain (none is needed at the window's start)."""
        ro, s, j = self.rollouts, self.settings, self.starts + i
        sigma, sigma_next = ro.sigmas[j].to(self.device), ro.sigmas[j + 1].to(self.device)
        x_in = state.detach() if (i == 0 or s.detach_inputs == "all") else state
        mean, std = sde_mean_std(state, self.velocity_fn(x_in, sigma), sigma, sigma_next, ro.eta)
        log_p = _scale(gaussian_log_prob(ro.latents[j + 1, self.idx], mean, std), s.reduction, self.elements)
        old = _scale(ro.log_probs[j, self.idx].to(self.device), s.reduction, self.elements)
        kl = torch.zeros_like(old)
        if s.beta > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and state.requires_grad):
                mean_ref, _ = sde_mean_std(state, self.ref_velocity_fn(x_in, sigma), sigma, sigma_next, ro.eta)
            kl = _kl(mean, mean_ref, std, s.reduction, self.elements)
        return mean, log_p - old, kl

    def next_state(self, i: int, mean: torch.Tensor) -> torch.Tensor:
        j = self.starts + i
        return self.rollouts.latents[j + 1, self.idx] + (mean - self.rollouts.means[j, self.idx].to(self.device))


def _dense_sweep(velocity_fn, rollouts, advantages, starts, window, settings, ref_velocity_fn, mask, normaliser,
                 on_policy) -> ObjectiveResult:
    """Dense GRPO's gradient, back-propagated one window step at a time, last step first.

    The loss depends on step i's parameters through its own log-prob and KL and, along the chain
    ``s_{i+1} = x_{i+1} + (mu_i - mu_i^old)``, through every later step: with ``c_{i+1} = dL/ds_{i+1}`` (from step
    i+1's backward) step i back-propagates ``g . logratio_i + w . KL_i + <c_{i+1}, mu_i>`` and hands on
    ``c_i = dL/ds_i``. ``g = dL/dpsi`` and ``w = dL/dKL`` come first, from the loss's values. Each step's graph is freed
    before the next is built, so memory is one step's (as sparse), and the gradient is the whole-graph gradient.

    The states and psi come from a no-grad pass over the window, except ``on_policy``: the parameters are the
    rollout's, so every state is the recorded latent and psi = 0; then time is sparse's too. The sweep's own
    log-ratios check that afterwards (a warning if they exceed the clip bound)."""
    n = rollouts.num_trajectories
    mask, idx, elements, device = _prepare(rollouts, settings, ref_velocity_fn, mask)
    step = _WindowStep(velocity_fn, ref_velocity_fn, rollouts, starts, settings, idx, elements, device)
    states = [rollouts.latents[starts + i, idx].to(device) for i in range(window)]
    psi = torch.zeros(n, dtype=torch.float64, device=device)
    kl_total = torch.zeros(n, dtype=torch.float64, device=device)
    if not on_policy:
        with torch.no_grad():
            for i in range(window):
                mean, log_ratio, kl = step(i, states[i])
                psi, kl_total = psi + log_ratio, kl_total + kl
                if i + 1 < window:
                    states[i + 1] = step.next_state(i, mean)
    adv = advantages.to(device=device, dtype=torch.float64)
    keep = mask.to(device)
    psi_leaf, kl_leaf = psi.clone().requires_grad_(True), kl_total.clone().requires_grad_(True)
    loss = _reduce(clipped_surrogate(psi_leaf, adv, settings.clip_eps, settings.clip_space)[0]
                   + settings.beta * kl_leaf / window, keep, normaliser)
    g, w = torch.autograd.grad(loss, (psi_leaf, kl_leaf), allow_unused=True)
    w = torch.zeros_like(kl_total) if w is None else w
    carry = None
    swept_psi = torch.zeros_like(psi)
    swept_kl = torch.zeros_like(kl_total)
    for i in reversed(range(window)):
        state = states[i].detach().requires_grad_(i > 0)
        mean, log_ratio, kl = step(i, state)
        term = (g * log_ratio).sum() + (w * kl).sum()
        if carry is not None:
            term = term + (carry * mean).sum()
        term.backward()
        carry = state.grad if i > 0 else None
        swept_psi, swept_kl = swept_psi + log_ratio.detach(), swept_kl + kl.detach()
    if on_policy:
        psi, kl_total = swept_psi, swept_kl
        drift = float(psi[keep].abs().max()) if keep.any() else 0.0
        if drift >= math.log1p(settings.clip_eps):
            log.warning("dense sweep: the minibatch given as on-policy has |log-ratio| up to %.3g (>= the clip "
                        "bound); its gradient used psi = 0", drift)
    policy, ratio, clipped = clipped_surrogate(psi, adv, settings.clip_eps, settings.clip_space)
    value = _reduce(policy + settings.beta * kl_total / window, keep, normaliser).detach()
    return ObjectiveResult(value, _stats(ratio, clipped, kl_total / window, keep))


def sparse_grpo_loss(velocity_fn: VelocityFn, rollouts: Rollouts, advantages: torch.Tensor, steps: torch.Tensor,
                     settings: ObjectiveSettings, ref_velocity_fn: VelocityFn | None = None,
                     mask: torch.Tensor | None = None, normaliser: float | None = None,
                     backward: bool = False, on_policy: bool = False) -> ObjectiveResult:
    """Flow-GRPO: independent per-step ratios at the recorded latents, per-step clip, averaged over the steps.
    ``steps``: ``[N, k]`` transition indices per trajectory. With ``backward`` each step is back-propagated on
    its own (the terms are independent, so only one step's graph is alive at a time). ``on_policy`` is unused
    (dense's sweep uses it)."""
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
