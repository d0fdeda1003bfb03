"""Whole trajectories: ODE convergence, SDE marginals, recording and exact replay of log-probabilities."""

from __future__ import annotations

import pytest
import torch

from cogniedit.sampling import (
    euler_step,
    flow_sigmas,
    initial_noise,
    noise_latent,
    replay_log_probs,
    sample_trajectory,
)

# Toy data distribution x0 ~ N(M, S^2 I): the exact flow velocity E[noise - x0 | x_sigma] is affine in x and the
# ODE from noise z at sigma=1 ends exactly at M + S*z (the affine flow map), so the endpoint is known.
M, S = 0.7, 0.4


def gaussian_velocity(x, sigma):
    sigma = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    var = (1 - sigma) ** 2 * S**2 + sigma**2
    return -M + (sigma - (1 - sigma) * S**2) / var * (x - (1 - sigma) * M)


class TinyVelocityNet(torch.nn.Module):
    """A small deterministic network standing in for the transformer (nonlinear in x and sigma)."""

    def __init__(self, channels=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, x, sigma):
        sigma_map = sigma.view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return torch.tanh(self.conv(torch.cat([x, sigma_map], dim=1))) + x


def test_euler_ode_converges_to_the_exact_endpoint():
    z = initial_noise((8, 3), seed=11, dtype=torch.float64)
    exact = M + S * z
    errors = []
    for steps in (10, 40, 160):
        final = sample_trajectory(gaussian_velocity, z, flow_sigmas(steps, shift=3.1)).final
        errors.append((final - exact).abs().max().item())
    assert errors[2] < 0.03 and errors[2] < errors[1] < errors[0]  # measured: 0.24, 0.066, 0.017
    assert errors[0] / errors[2] > 8  # first-order method: 16x the steps gives ~16x less error


def test_sde_preserves_the_marginal():
    """eta > 0 must still land on the data distribution N(M, S^2) (wrong drift correction would not)."""
    z = initial_noise((20000, 1), seed=5, dtype=torch.float64)
    trajectory = sample_trajectory(gaussian_velocity, z, flow_sigmas(100, shift=1.0), eta=0.7,
                                   generator=torch.Generator().manual_seed(0))
    final = trajectory.final
    assert abs(final.mean().item() - M) < 0.02
    assert abs(final.std().item() - S) < 0.02
    # without the correction term (plain Euler + noise) the spread is far too large: the check can fail
    x = z
    sigmas = flow_sigmas(100, shift=1.0)
    g = torch.Generator().manual_seed(0)
    for j in range(100):
        s, s_next = sigmas[j], sigmas[j + 1]
        v = gaussian_velocity(x, s.expand(x.shape[0]))
        std = 0.7 * torch.sqrt(s / (1 - torch.where(s >= 1, s_next, s))) * torch.sqrt(s - s_next)
        x = euler_step(x, v, s, s_next) + std * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert abs(x.std().item() - S) > 0.1


def test_eta_zero_trajectory_is_a_plain_euler_loop():
    net = TinyVelocityNet()
    x = initial_noise((2, 4, 6, 6), seed=1)
    sigmas = flow_sigmas(6, shift=3.1)
    trajectory = sample_trajectory(net, x, sigmas)
    with torch.no_grad():
        for j in range(6):
            x = euler_step(x, net(x, sigmas[j].expand(2)), sigmas[j], sigmas[j + 1])
    assert torch.equal(trajectory.final, x)
    assert trajectory.log_probs is None and trajectory.latents.shape == (7, 2, 4, 6, 6)
    with pytest.raises(ValueError, match="eta > 0"):
        replay_log_probs(net, trajectory)


def test_replay_reproduces_recorded_log_probs_bitwise():
    net = TinyVelocityNet()
    sigmas = flow_sigmas(5, shift=3.1)
    trajectory = sample_trajectory(net, initial_noise((3, 4, 6, 6), seed=2), sigmas, eta=0.5,
                                   generator=torch.Generator().manual_seed(9), seed=2)
    assert trajectory.log_probs.shape == (5, 3) and trajectory.log_probs.dtype == torch.float64
    assert torch.isfinite(trajectory.log_probs).all()
    replayed, means = replay_log_probs(net, trajectory, return_means=True)
    assert torch.equal(replayed, trajectory.log_probs)  # bit for bit: same inputs, same arithmetic
    assert torch.equal(means, trajectory.means)
    subset = replay_log_probs(net, trajectory, steps=[3, 1])
    assert torch.equal(subset, trajectory.log_probs[[3, 1]])
    # the recorded log-prob is the Gaussian density of the recorded transition x_0 -> x_1 (sigma 1 -> sigmas[1])
    std = 0.5 * torch.sqrt(1 / (1 - sigmas[1].double())) * torch.sqrt(1 - sigmas[1].double())
    normal = torch.distributions.Normal(trajectory.means[0].double(), std)
    expected = normal.log_prob(trajectory.latents[1].double()).flatten(1).sum(1)
    assert torch.allclose(trajectory.log_probs[0], expected, rtol=1e-6, atol=0)  # std rounded to float32 here


def test_replay_under_another_policy_differs_and_carries_gradients():
    old, new = TinyVelocityNet(seed=0), TinyVelocityNet(seed=1)
    trajectory = sample_trajectory(old, initial_noise((2, 4, 6, 6), seed=4), flow_sigmas(4, shift=3.1), eta=0.3,
                                   generator=torch.Generator().manual_seed(1))
    new_log_probs = replay_log_probs(new, trajectory, steps=[2])
    log_ratio = new_log_probs - trajectory.log_probs[[2]]
    assert torch.all(log_ratio.abs() > 1e-3)
    log_ratio.sum().backward()
    assert new.conv.weight.grad is not None and new.conv.weight.grad.abs().sum() > 0


def test_same_generator_seed_gives_the_same_sde_trajectory():
    net = TinyVelocityNet()
    x = initial_noise((1, 4, 6, 6), seed=0)
    sigmas = flow_sigmas(4, shift=3.1)
    runs = [sample_trajectory(net, x, sigmas, eta=0.4, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    other = sample_trajectory(net, x, sigmas, eta=0.4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(runs[0].latents, runs[1].latents)
    assert not torch.equal(runs[0].final, other.final)


def test_callback_sees_every_step_with_denoised():
    net = TinyVelocityNet()
    seen = []
    sigmas = flow_sigmas(3, shift=3.1)
    x0 = initial_noise((1, 4, 6, 6), seed=0)
    sample_trajectory(net, x0, sigmas, callback=lambda j, x, d: seen.append((j, x, d)))
    assert [j for j, _, _ in seen] == [0, 1, 2]
    with torch.no_grad():
        assert torch.allclose(seen[0][2], x0 - net(x0, sigmas[0].expand(1)) * sigmas[0])


def test_initial_noise_matches_a_seeded_cpu_randn():
    torch.manual_seed(123)  # what comfy.sample.prepare_noise does (the host test checks the real function)
    expected = torch.randn(1, 16, 4, 4)
    assert torch.equal(initial_noise((1, 16, 4, 4), 123), expected)
    assert initial_noise((1, 2), 123, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_noise_latent_starts_mid_schedule():
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(noise_latent(x0, noise, 0.25), 0.25 * noise + 0.75 * x0)
    assert torch.equal(noise_latent(x0, noise, 1.0), noise)
    with pytest.raises(ValueError, match="noise shape"):
        noise_latent(x0, noise[:1], 0.5)


@pytest.mark.parametrize("bad", [[1.0], [0.5, 0.7, 0.0], [1.2, 0.5, 0.0], [1.0, 0.0, 0.0]])
def test_bad_sigmas_are_named(bad):
    with pytest.raises(ValueError, match="sigmas"):
        sample_trajectory(TinyVelocityNet(), torch.zeros(1, 4, 2, 2), torch.tensor(bad))


def test_replay_is_bitwise_with_a_tiny_qwen_image_transformer():
    """The real architecture (diffusers QwenImageTransformer2DModel, random tiny weights) as the policy."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=32,
        num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12),
    )
    text = torch.randn(2, 5, 64)
    mask = torch.ones(2, 5, dtype=torch.long)

    def velocity(x, sigma):  # packed [B, tokens, 64] latents of a 16-channel 8x8 latent (4x4 patches of 2x2)
        return model(hidden_states=x, encoder_hidden_states=text, encoder_hidden_states_mask=mask,
                     timestep=sigma, img_shapes=[[(1, 4, 4)]] * 2, return_dict=False)[0]

    trajectory = sample_trajectory(velocity, initial_noise((2, 16, 64), seed=0), flow_sigmas(3, shift=3.1),
                                   eta=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(replay_log_probs(velocity, trajectory), trajectory.log_probs)
    replay_log_probs(velocity, trajectory, steps=[1]).sum().backward()
    assert model.proj_out.weight.grad is not None and model.proj_out.weight.grad.abs().sum() > 0
