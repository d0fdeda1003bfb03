"""Single steps: Euler ODE, Flow-GRPO SDE and its exact Gaussian log-probability."""

from __future__ import annotations

import math

import pytest
import torch

from cogniedit.sampling import euler_step, gaussian_log_prob, sde_mean_std, sde_step


def _xv(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 5, 6, generator=g), torch.randn(batch, 4, 5, 6, generator=g)


@pytest.mark.parametrize("sigma,sigma_next", [(1.0, 0.93), (0.6, 0.41), (0.2, 0.0)])
def test_eta_zero_is_the_euler_step_bit_for_bit(sigma, sigma_next):
    x, v = _xv()
    s, s_next = torch.tensor(sigma), torch.tensor(sigma_next)
    step = sde_step(x, v, s, s_next, eta=0.0, generator=torch.Generator().manual_seed(1))
    ode = euler_step(x, v, s, s_next)
    assert torch.equal(step.prev_sample, ode) and torch.equal(step.mean, ode)
    # the mean formula itself (not only the eta=0 shortcut) reduces to Euler
    assert torch.equal(sde_mean_std(x, v, s, s_next, 0.0)[0], ode)
    # and a positive eta really changes the mean (the correction term is live)
    assert not torch.allclose(sde_mean_std(x, v, s, s_next, 0.5)[0], ode)


def test_euler_step_formula():
    x, v = _xv()
    assert torch.allclose(euler_step(x, v, 0.7, 0.5), x - 0.2 * v, atol=1e-6)
    x64, v64 = x.double(), v.double()  # Python-float sigmas keep float64 precision for float64 latents
    assert torch.equal(euler_step(x64, v64, 0.7, 0.5), x64 + v64 * (0.5 - 0.7))
    half = euler_step(x.bfloat16(), v.bfloat16(), 0.7, 0.5)
    assert half.dtype == torch.bfloat16


def test_sde_mean_and_std_follow_flow_grpo_formula():
    x, v = _xv(batch=2, seed=4)
    sigma, sigma_next, eta = 0.55, 0.35, 0.7
    mean, std = sde_mean_std(x, v, sigma, sigma_next, eta)
    dt = sigma_next - sigma
    std_t = eta * math.sqrt(sigma / (1 - sigma))
    # the form written in the paper notes: x(1 + std^2/(2 sigma) dt) + v(1 + std^2 (1-sigma)/(2 sigma)) dt
    expected = x * (1 + std_t**2 / (2 * sigma) * dt) + v * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    assert torch.allclose(mean, expected, atol=1e-5)
    assert float(std) == pytest.approx(std_t * math.sqrt(-dt), rel=1e-6)


def test_sigma_one_uses_sigma_next_in_the_denominator():
    x, v = _xv()
    mean, std = sde_mean_std(x, v, torch.tensor(1.0), torch.tensor(0.9), 0.3)
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert float(std) == pytest.approx(0.3 * math.sqrt(1.0 / 0.1) * math.sqrt(0.1), rel=1e-6)


def test_sde_sample_is_mean_plus_scaled_noise():
    x, v = _xv()
    noise = torch.randn_like(x)
    step = sde_step(x, v, 0.8, 0.7, 0.4, noise=noise)
    assert torch.equal(step.prev_sample, step.mean + step.std * noise)
    # a seeded generator makes the draw reproducible
    a = sde_step(x, v, 0.8, 0.7, 0.4, generator=torch.Generator().manual_seed(5)).prev_sample
    b = sde_step(x, v, 0.8, 0.7, 0.4, generator=torch.Generator().manual_seed(5)).prev_sample
    assert torch.equal(a, b)


def test_per_sample_sigmas_match_scalar_sigmas():
    x, v = _xv(batch=2)
    sig, nxt = torch.tensor([0.9, 0.4]), torch.tensor([0.8, 0.1])
    mean, std = sde_mean_std(x, v, sig, nxt, 0.5)
    for b in range(2):
        m_b, s_b = sde_mean_std(x[b:b + 1], v[b:b + 1], sig[b], nxt[b], 0.5)
        assert torch.equal(mean[b:b + 1], m_b) and torch.equal(std[b].flatten(), s_b.flatten())


def test_log_prob_equals_torch_normal():
    x, v = _xv(seed=7)
    step = sde_step(x, v, 0.7, 0.6, 0.8, generator=torch.Generator().manual_seed(2))
    ours = gaussian_log_prob(step.prev_sample, step.mean, step.std)
    reference = torch.distributions.Normal(step.mean.double(), step.std.double()).log_prob(step.prev_sample.double())
    assert ours.shape == (3,) and ours.dtype == torch.float64
    assert torch.allclose(ours, reference.flatten(1).sum(1), rtol=0, atol=1e-9)


def test_log_prob_per_sample_std_equals_torch_normal():
    g = torch.Generator().manual_seed(3)
    sample, mean = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    std = torch.tensor([0.3, 1.7]).view(2, 1, 1)
    ours = gaussian_log_prob(sample, mean, std, dtype=None)
    reference = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(sample).flatten(1).sum(1)
    assert ours.dtype == torch.float32 and torch.allclose(ours, reference, atol=1e-4)


def test_log_prob_gradient_reaches_the_velocity():
    x, v = _xv()
    v = v.clone().requires_grad_(True)
    target = sde_step(x, v.detach(), 0.5, 0.4, 0.6, generator=torch.Generator().manual_seed(0)).prev_sample
    mean, std = sde_mean_std(x, v, 0.5, 0.4, 0.6)
    gaussian_log_prob(target, mean, std).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    x, v = _xv()
    with pytest.raises(ValueError, match="eta"):
        sde_mean_std(x, v, 0.5, 0.4, -0.1)
    with pytest.raises(ValueError, match="noise shape"):
        sde_step(x, v, 0.5, 0.4, 0.1, noise=torch.zeros(1))
    with pytest.raises(ValueError, match="batch"):
        euler_step(x, v, torch.tensor([0.5, 0.4]), 0.3)
