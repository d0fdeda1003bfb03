"""Flow-matching sampling core shared by the ComfyUI nodes and the Dense GRPO trainer (see docs/sampling.md)."""

from .schedule import flow_sigmas, flux_shift_for_size, flux_time_shift, sigma_table, time_snr_shift
from .steps import SDEStep, denoised_from_velocity, euler_step, gaussian_log_prob, sde_mean_std, sde_step
from .trajectory import (
    Trajectory,
    check_sigmas,
    initial_noise,
    noise_latent,
    replay_log_probs,
    sample_trajectory,
)

__all__ = [
    "flow_sigmas", "flux_shift_for_size", "flux_time_shift", "sigma_table", "time_snr_shift",
    "SDEStep", "denoised_from_velocity", "euler_step", "gaussian_log_prob", "sde_mean_std", "sde_step",
    "Trajectory", "check_sigmas", "initial_noise", "noise_latent", "replay_log_probs", "sample_trajectory",
]
