"""One flow-matching step: deterministic Euler (ODE) and the Flow-GRPO SDE with its exact Gaussian log-probability.

Convention: ``x_sigma = sigma*noise + (1-sigma)*x0``, velocity ``v = noise - x0``, sigmas descend to 0, so
``dt = sigma_next - sigma < 0``.

SDE (Flow-GRPO's marginal-preserving discretisation, paper section 4.1). With the noise-prediction
``eps_hat = x + (1-sigma)*v`` the score is ``-eps_hat/sigma`` and one Euler-Maruyama step is

    mean = x + v*dt + std_t^2 / (2*sigma) * (x + (1-sigma)*v) * dt
    x'   = mean + std_t * sqrt(-dt) * eps,       eps ~ N(0, I)
    std_t = eta * sqrt(sigma / (1 - sigma))

so the policy is ``N(mean, (std_t*sqrt(-dt))^2 I)``. At sigma = 1 the denominator is 0; like Flow-GRPO (which
substitutes the schedule's second sigma there) we use ``1 - sigma_next`` in the denominator when sigma >= 1.
The mean is written as "Euler step + correction*dt" so that eta = 0 gives exactly ``euler_step`` (correction 0).

Sigmas may be Python floats, 0-d tensors, or per-sample ``[B]`` tensors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["SDEStep", "euler_step", "sde_mean_std", "sde_step", "gaussian_log_prob", "denoised_from_velocity"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class SDEStep(NamedTuple):
    prev_sample: torch.Tensor  # x at sigma_next (sampled)
    mean: torch.Tensor  # Gaussian mean of the transition (carries the velocity's autograd graph)
    std: torch.Tensor  # Gaussian scale std_t*sqrt(-dt), broadcastable to prev_sample


def _sigma_like(sigma, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a tensor on x's device that broadcasts against x: 0-d stays 0-d, [B] becomes [B, 1, ...]."""
    if isinstance(sigma, torch.Tensor):
        s = sigma.to(x.device)
        if not s.is_floating_point():
            s = s.to(torch.float32)
    else:  # Python numbers: float64 for float64 latents, else float32 (never a half type: dt would be crude)
        s = torch.tensor(sigma, device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if s.ndim == 1 and s.numel() > 1:
        if s.shape[0] != x.shape[0]:
            raise ValueError(f"per-sample sigma has {s.shape[0]} entries but the batch has {x.shape[0]}")
        s = s.view(-1, *([1] * (x.ndim - 1)))
    elif s.numel() == 1:
        s = s.reshape(())
    else:
        raise ValueError(f"sigma must be a scalar or a [B] tensor, got shape {tuple(s.shape)}")
    return s


def denoised_from_velocity(x: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """The model's x0 estimate ``x - sigma*v`` (what ComfyUI's CONST sampling calls ``denoised``)."""
    return x - velocity * _sigma_like(sigma, x)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """Deterministic flow ODE step ``x + v*(sigma_next - sigma)``.

    Same operations as ComfyUI's ``sample_euler`` (``x + d*dt``, ``dt = sigma_next - sigma``) when the velocity
    is computed as ``(x - denoised)/sigma``, so the two agree bit for bit.
    """
    dt = _sigma_like(sigma_next, x) - _sigma_like(sigma, x)
    return x + velocity * dt


def _noise_std_t(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> torch.Tensor:
    # Flow-GRPO: std_t = eta*sqrt(sigma/(1-sigma)); at sigma = 1 use sigma_next in the denominator (finite, and
    # the schedule's second sigma, which is what Flow-GRPO substitutes).
    denom_sigma = torch.where(sigma >= 1, sigma_next, sigma)
    return eta * torch.sqrt(sigma / (1 - denom_sigma))


def sde_mean_std(x: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next, eta: float):
    """Mean and scale of the SDE transition ``p(x' | x) = N(mean, std^2 I)`` (no sampling)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    s = _sigma_like(sigma, x)
    s_next = _sigma_like(sigma_next, x)
    dt = s_next - s
    std_t = _noise_std_t(s, s_next, eta)
    correction = std_t**2 / (2 * s) * (x + (1 - s) * velocity)
    mean = (x + velocity * dt) + correction * dt
    std = std_t * torch.sqrt(-dt)
    return mean, std


def sde_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma,
    sigma_next,
    eta: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SDEStep:
    """One Flow-GRPO SDE step. ``noise`` (standard normal, x's shape) is drawn from ``generator`` when not given:
    float32 on the generator's device, then moved to x (so a CPU generator gives the same draw on any device).
    eta = 0 draws nothing and returns ``prev_sample == mean == euler_step(...)`` exactly.
    """
    mean, std = sde_mean_std(x, velocity, sigma, sigma_next, eta)
    if eta == 0:
        return SDEStep(mean, mean, std)
    if noise is None:
        device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    elif noise.shape != x.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match x shape {tuple(x.shape)}")
    noise = noise.to(device=x.device, dtype=x.dtype)
    return SDEStep(mean + std * noise, mean, std)


def gaussian_log_prob(
    sample: torch.Tensor, mean: torch.Tensor, std, dtype: torch.dtype | None = torch.float64
) -> torch.Tensor:
    """Exact ``log N(sample; mean, std^2 I)`` per sample ``[B]``: summed over all non-batch dims, constants
    included (``-(x-mu)^2/(2 std^2) - log std - 0.5 log 2pi`` per element).

    Computed in ``dtype`` (float64 by default: the sum runs over every latent element, where float32 loses
    the small log-ratio differences GRPO needs); ``dtype=None`` keeps the inputs' promoted dtype.
    Differentiable w.r.t. ``mean`` (and ``std``). ``std`` must be > 0 (eta = 0 has no density).
    """
    if sample.shape != mean.shape:
        raise ValueError(f"sample shape {tuple(sample.shape)} != mean shape {tuple(mean.shape)}")
    std = torch.as_tensor(std, device=mean.device)
    if dtype is None:
        dtype = torch.promote_types(torch.promote_types(sample.dtype, mean.dtype), std.dtype)
    sample, mean, std = sample.to(dtype), mean.to(dtype), std.to(dtype)
    std = std.broadcast_to(sample.shape)
    elementwise = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - _HALF_LOG_2PI
    return elementwise.flatten(1).sum(dim=1)
