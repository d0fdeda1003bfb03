"""Whole sampling runs: record a trajectory (ODE or SDE) and replay its transition log-probabilities.

One loop serves ComfyUI inference (eta = 0, Euler ODE) and Dense GRPO rollouts (eta > 0, Flow-GRPO SDE). The
trainer replays the recorded transitions ``x_j -> x_{j+1}`` at ``sigma_j -> sigma_{j+1}`` under the current
policy to get importance ratios; with the same velocity function the replayed log-probabilities equal the
recorded ones bit for bit (same inputs, same arithmetic).

``velocity_fn(x, sigma)`` gets x ``[B, ...]`` and sigma as a float32 ``[B]`` tensor on x's device (the form
ComfyUI models and diffusers transformers take) and returns the velocity ``noise - x0`` with x's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .steps import denoised_from_velocity, euler_step, gaussian_log_prob, sde_mean_std, sde_step

__all__ = ["Trajectory", "sample_trajectory", "replay_log_probs", "initial_noise", "noise_latent", "check_sigmas"]

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """A recorded run. Transition j goes from ``latents[j]`` at ``sigmas[j]`` to ``latents[j+1]``."""

    sigmas: torch.Tensor  # [T+1] float32, CPU, descending
    latents: torch.Tensor  # [T+1, B, ...] (latents[0] = start, latents[-1] = result)
    log_probs: torch.Tensor | None  # [T, B] float64; None for eta = 0 (a deterministic step has no density)
    means: torch.Tensor | None  # [T, B, ...] transition means (for a KL to the rollout policy); None for eta = 0
    eta: float
    seed: int | None = None

    @property
    def num_steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]


def check_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Validate a schedule (1-D, >= 2 entries, strictly descending, within [0, 1], only the last may be 0)."""
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries (steps + 1), got shape {tuple(sigmas.shape)}")
    sigmas = sigmas.detach().to("cpu", torch.float32)
    if not torch.all(sigmas[1:] < sigmas[:-1]):
        raise ValueError(f"sigmas must strictly descend (noise -> image), got {sigmas.tolist()}")
    if sigmas[0] > 1 or sigmas[-1] < 0:
        raise ValueError(f"flow-matching sigmas must lie in [0, 1], got {sigmas[0].item()}..{sigmas[-1].item()}")
    return sigmas


def _batch_sigma(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.device).expand(x.shape[0])


def sample_trajectory(
    velocity_fn: VelocityFn,
    x_init: torch.Tensor,
    sigmas: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    seed: int | None = None,
) -> Trajectory:
    """Integrate from ``x_init`` (at ``sigmas[0]``) down the schedule; eta = 0: Euler ODE, eta > 0: SDE.

    Runs under ``torch.no_grad`` (rollout / inference); gradients come from ``replay_log_probs``.
    ``callback(step, x, denoised)`` is called before each step with the current latent and its x0 estimate.
    SDE noise is drawn from ``generator`` (see ``sde_step``); ``seed`` is only recorded.
    """
    sigmas = check_sigmas(sigmas)
    eta = float(eta)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_init
    latents, log_probs, means = [x], [], []
    with torch.no_grad():
        for j in range(sigmas.numel() - 1):
            sigma, sigma_next = sigmas[j].to(x.device), sigmas[j + 1].to(x.device)
            velocity = velocity_fn(x, _batch_sigma(sigma, x))
            if callback is not None:
                callback(j, x, denoised_from_velocity(x, velocity, sigma))
            if eta == 0:
                x = euler_step(x, velocity, sigma, sigma_next)
            else:
                step = sde_step(x, velocity, sigma, sigma_next, eta, generator=generator)
                log_probs.append(gaussian_log_prob(step.prev_sample, step.mean, step.std))
                means.append(step.mean)
                x = step.prev_sample
            latents.append(x)
    return Trajectory(
        sigmas=sigmas,
        latents=torch.stack(latents),
        log_probs=torch.stack(log_probs) if log_probs else None,
        means=torch.stack(means) if means else None,
        eta=eta,
        seed=seed,
    )


def replay_log_probs(
    velocity_fn: VelocityFn,
    trajectory: Trajectory,
    steps: Iterable[int] | None = None,
    eta: float | None = None,
    return_means: bool = False,
):
    """Log-probabilities ``[len(steps), B]`` (float64) of the recorded transitions under ``velocity_fn``.

    Differentiable through ``velocity_fn`` (call it with grad enabled for the policy update). ``steps``: the
    transition indices (default all); ``eta``: the SDE noise level (default the trajectory's). With
    ``return_means`` also returns the means ``[len(steps), B, ...]``.
    """
    eta = trajectory.eta if eta is None else float(eta)
    if eta <= 0:
        raise ValueError("replay_log_probs needs an SDE trajectory (eta > 0): an ODE step has no density. "
                         "Record the rollout with sample_trajectory(..., eta=0.1) or pass eta=.")
    indices = list(range(trajectory.num_steps)) if steps is None else [int(j) for j in steps]
    for j in indices:
        if not 0 <= j < trajectory.num_steps:
            raise ValueError(f"step {j} out of range for a {trajectory.num_steps}-step trajectory")
    if not indices:
        raise ValueError("replay_log_probs: steps is empty")
    out, means = [], []
    for j in indices:
        x, x_next = trajectory.latents[j], trajectory.latents[j + 1]
        sigma = trajectory.sigmas[j].to(x.device)
        sigma_next = trajectory.sigmas[j + 1].to(x.device)
        velocity = velocity_fn(x, _batch_sigma(sigma, x))
        mean, std = sde_mean_std(x, velocity, sigma, sigma_next, eta)
        out.append(gaussian_log_prob(x_next, mean, std))
        means.append(mean)
    log_probs = torch.stack(out)
    return (log_probs, torch.stack(means)) if return_means else log_probs


def initial_noise(shape, seed: int, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """Standard-normal starting noise for ``seed``, equal to ComfyUI's ``comfy.sample.prepare_noise`` (one
    float32 ``randn`` of the whole latent shape from a CPU generator seeded with ``seed``), then cast/moved."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(tuple(shape), dtype=torch.float32, generator=generator, device="cpu")
    return noise.to(device=device, dtype=dtype)


def noise_latent(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """``sigma*noise + (1-sigma)*x0``: the start latent for img2img / denoise < 1 (``sigma = sigmas[0]``);
    same arithmetic as ComfyUI's CONST.noise_scaling."""
    if x0.shape != noise.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match latent shape {tuple(x0.shape)}")
    s = torch.as_tensor(sigma, device=x0.device)
    if s.ndim == 1 and s.numel() > 1:
        s = s.view(-1, *([1] * (x0.ndim - 1)))
    return s * noise + (1.0 - s) * x0
