"""Flow-matching sigma schedules that reproduce ComfyUI's "simple" scheduler.

ComfyUI builds a table of sigmas from its model sampling object and the "simple" scheduler picks evenly spaced
entries of that table (from the noisy end), then appends 0. We rebuild the same float32 table with the same
arithmetic so the schedule matches ComfyUI bit for bit, without importing ComfyUI:

* ``kind="discrete_flow"``: ``ModelSamplingDiscreteFlow`` (nodes ModelSamplingAuraFlow -> multiplier 1.0, the
  Qwen-Image(-Edit) workflows; ModelSamplingSD3 -> multiplier 1000); a 1000-entry table of
  ``time_snr_shift(shift, t)`` at ``t = k/1000``.
* ``kind="flux"``: ``ModelSamplingFlux`` (Flux, Qwen-Image default); a 10000-entry table of
  ``flux_time_shift(mu, t)`` at ``t = k/10000``; ``shift`` is mu (see ``flux_shift_for_size``).

``denoise < 1`` follows ComfyUI's BasicScheduler / KSampler: schedule ``int(steps / denoise)`` steps and keep the
last ``steps + 1`` sigmas.
"""

from __future__ import annotations

import math

import torch

__all__ = ["time_snr_shift", "flux_time_shift", "flux_shift_for_size", "flow_sigmas", "sigma_table"]

# Table sizes of ComfyUI's model sampling classes (ModelSamplingDiscreteFlow: 1000, ModelSamplingFlux: 10000).
_TABLE_SIZE = {"discrete_flow": 1000, "flux": 10000}


def time_snr_shift(shift: float, t):
    """SD3 / AuraFlow time shift ``shift*t / (1 + (shift-1)*t)`` (identity for shift 1). ``t`` float or tensor."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t):
    """Flux time shift ``e^mu / (e^mu + (1/t - 1))``. ``t`` float or tensor; t=0 gives 0 for tensors (1/0 = inf)."""
    exp_mu = math.exp(mu)
    return exp_mu / (exp_mu + (1 / t - 1))


def flux_shift_for_size(height: int, width: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """mu for a Flux-style model at this *pixel* size, as ComfyUI's ModelSamplingFlux node computes it.

    The token count is ``height*width / (8*8*2*2)`` (VAE /8, 2x2 patches); mu is linear in it through
    (256 tokens, base_shift) and (4096 tokens, max_shift). 1024x1024 -> 1.15.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"flux_shift_for_size: height and width must be positive pixels, got {height}x{width}")
    x1, x2 = 256, 4096
    slope = (max_shift - base_shift) / (x2 - x1)
    intercept = base_shift - slope * x1
    return (width * height / (8 * 8 * 2 * 2)) * slope + intercept


def sigma_table(shift: float = 1.0, kind: str = "discrete_flow", multiplier: float = 1.0) -> torch.Tensor:
    """The float32 sigma table ComfyUI's model sampling object holds (ascending, last entry 1.0)."""
    if kind not in _TABLE_SIZE:
        raise ValueError(f"flow_sigmas: kind must be one of {sorted(_TABLE_SIZE)}, got {kind!r}")
    size = _TABLE_SIZE[kind]
    # Same float32 operations, in the same order, as the ComfyUI tables: integer arange / size (-> float32).
    t = torch.arange(1, size + 1, 1) / size
    if kind == "flux":
        return flux_time_shift(shift, t).to(torch.float32)
    if multiplier <= 0:
        raise ValueError(f"flow_sigmas: multiplier must be > 0, got {multiplier}")
    return time_snr_shift(shift, (t * multiplier) / multiplier).to(torch.float32)


def flow_sigmas(
    steps: int,
    shift: float = 1.0,
    kind: str = "discrete_flow",
    denoise: float = 1.0,
    multiplier: float = 1.0,
) -> torch.Tensor:
    """Descending sigmas ``[steps + 1]`` (float32, CPU) ending in 0, equal to ComfyUI's "simple" scheduler.

    ``kind="discrete_flow"``: ``shift`` is the AuraFlow/SD3 shift (Qwen-Image-Edit workflows: 3.1), ``multiplier``
    1.0 as ModelSamplingAuraFlow sets it (1000 for ModelSamplingSD3; both give the same float32 table).
    ``kind="flux"``: ``shift`` is mu (``flux_shift_for_size``; ComfyUI default 1.15).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"flow_sigmas: steps must be a positive integer, got {steps}")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"flow_sigmas: denoise must be in (0, 1], got {denoise}")
    steps = int(steps)
    total = steps if denoise >= 1.0 else int(steps / denoise)  # as ComfyUI's BasicScheduler
    table = sigma_table(shift, kind, multiplier)
    stride = len(table) / total
    picked = [float(table[-(1 + int(i * stride))]) for i in range(total)] + [0.0]
    return torch.tensor(picked, dtype=torch.float32)[-(steps + 1):]
