"""Dense / sparse GRPO objectives on a toy flow: reduction to sparse at k=1, on-policy ratios exactly 1, and the
dense gradient against an independent float64 scalar implementation differentiated by finite differences."""

import math

import numpy as np
import pytest
import torch

from cogniedit.sampling import flow_sigmas, sample_trajectory
from training.objectives import ObjectiveSettings, Rollouts, dense_grpo_loss, draw_steps, sparse_grpo_loss

D = 3  # latent elements per sample
N = 4  # trajectories
ETA = 0.8


def toy_velocity(theta):
    """A linear 'velocity model' with two parameters: v = theta0 * x + theta1 * sigma."""
    def fn(x, sigma):
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return theta[0] * x + theta[1] * s
    return fn


def toy_rollouts(theta_old, steps=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(N, D, generator=gen, dtype=torch.float64)
    traj = sample_trajectory(toy_velocity(theta_old), x0, flow_sigmas(steps, shift=1.0), eta=ETA, generator=gen)
    return Rollouts(traj.sigmas, traj.latents, traj.log_probs, traj.means, traj.eta)


def reference_dense_loss(theta, ref_theta, ro: Rollouts, start, k, adv, eps, beta, n):
    """One trajectory's dense loss, written out with numpy float64 (sigma-only terms in float32 as the sampler)."""
    x = ro.latents[:, n].numpy()
    old = ro.log_probs[:, n].numpy()
    mean_old = ro.means[:, n].numpy()
    sig = ro.sigmas.numpy()

    def mean_std(s, v, j):
        sg, sn = np.float32(sig[j]), np.float32(sig[j + 1])
        dt = np.float32(sn - sg)
        denom = sn if sg >= 1 else sg
        std_t = np.float32(np.float32(ETA) * np.sqrt(sg / (np.float32(1) - denom)))
        mean = (s + v * np.float64(dt)) + np.float64(std_t**2 / (2 * sg)) * (s + np.float64(1 - sg) * v) * np.float64(dt)
        return mean, np.float64(std_t * np.sqrt(-dt))

    s = x[start].copy()
    psi, kl = 0.0, 0.0
    for i in range(k):
        j = start + i
        mean, std = mean_std(s, theta[0] * s + theta[1] * np.float64(np.float32(sig[j])), j)
        logp = np.sum(-(x[j + 1] - mean) ** 2 / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)) / D
        psi += logp - old[j] / D
        mean_ref, _ = mean_std(s, ref_theta[0] * s + ref_theta[1] * np.float64(np.float32(sig[j])), j)
        kl += np.sum((mean - mean_ref) ** 2 / (2 * std**2)) / D
        s = x[j + 1] + (mean - mean_old[j])
    ratio = math.exp(psi)
    clipped = math.exp(min(max(psi, -math.log1p(eps)), math.log1p(eps)))
    return -min(ratio * adv, clipped * adv) + beta * kl / k


THETA_OLD = torch.tensor([-0.3, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("clip_space", ["log", "ratio"])
def test_window_of_one_is_the_sparse_objective(clip_space):
    ro = toy_rollouts(THETA_OLD)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=torch.float64)
    steps = torch.tensor([0, 2, 5, 3])
    settings = ObjectiveSettings(clip_eps=0.05, clip_space=clip_space, beta=0.3)
    ref_fn = toy_velocity(torch.tensor([-0.2, 0.4], dtype=torch.float64))
    grads = []
    for objective in ("dense", "sparse"):
        theta = (THETA_OLD + torch.tensor([0.02, -0.03], dtype=torch.float64)).requires_grad_(True)
        if objective == "dense":
            out = dense_grpo_loss(toy_velocity(theta), ro, adv, steps, 1, settings, ref_fn)
        else:
            out = sparse_grpo_loss(toy_velocity(theta), ro, adv, steps[:, None], settings, ref_fn)
        out.loss.backward()
        grads.append((out.loss.detach(), theta.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    assert grads[0][1].abs().sum() > 0


@pytest.mark.parametrize("objective", ["dense", "sparse"])
def test_on_policy_ratios_are_exactly_one(objective):
    ro = toy_rollouts(THETA_OLD)
    gen = torch.Generator().manual_seed(1)
    steps = draw_steps(objective, N, ro.num_steps, 4, gen)
    settings = ObjectiveSettings(clip_eps=1e-4, clip_space="log" if objective == "dense" else "ratio")
    adv = torch.ones(N, dtype=torch.float64)
    fn = dense_grpo_loss if objective == "dense" else sparse_grpo_loss
    args = (steps, 4) if objective == "dense" else (steps,)
    out = fn(toy_velocity(THETA_OLD), ro, adv, *args, settings)
    assert out.stats["ratio_min"] == 1.0 and out.stats["ratio_max"] == 1.0
    assert out.stats["clip_frac"] == 0.0


def _fd_gradient(f, theta, h=1e-6):
    g = np.zeros(len(theta))
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


@pytest.mark.parametrize("eps,beta", [(0.5, 0.0), (0.5, 0.7), (1e-4, 0.7)])
def test_dense_gradient_matches_independent_finite_differences(eps, beta):
    ro = toy_rollouts(THETA_OLD, steps=8, seed=3)
    starts = torch.tensor([0, 1, 3, 2])
    k = 5
    adv = torch.tensor([1.3, -0.7, 0.4, -2.0], dtype=torch.float64)
    ref_theta = np.array([-0.25, 0.45])
    theta0 = np.array([-0.3 + 0.04, 0.5 - 0.05])
    settings = ObjectiveSettings(clip_eps=eps, clip_space="log", beta=beta)
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    out = dense_grpo_loss(toy_velocity(theta), ro, adv, starts, k, settings,
                          toy_velocity(torch.tensor(ref_theta)), backward=True)

    def total(th):
        return np.mean([reference_dense_loss(th, ref_theta, ro, int(starts[n]), k, float(adv[n]), eps, beta, n)
                        for n in range(N)])

    assert float(out.loss) == pytest.approx(total(theta0), rel=1e-9, abs=1e-12)
    expected = _fd_gradient(total, theta0)
    np.testing.assert_allclose(theta.grad.numpy(), expected, rtol=2e-5, atol=1e-8)
    if eps == 1e-4 and beta == 0.7:
        assert out.stats["clip_frac"] > 0  # the clipped branch is exercised too


def test_chain_gradient_differs_from_independent_steps():
    """The window's states carry gradient: cutting the chain (paper's sg at every network input still keeps the
    explicit x terms) changes the gradient, and treating steps independently changes it again."""
    ro = toy_rollouts(THETA_OLD, steps=8, seed=3)
    starts = torch.tensor([0, 1, 3, 2])
    adv = torch.tensor([1.3, -0.7, 0.4, -2.0], dtype=torch.float64)
    grads = {}
    for mode in ("first", "all"):
        theta = (THETA_OLD + torch.tensor([0.04, -0.05], dtype=torch.float64)).requires_grad_(True)
        settings = ObjectiveSettings(clip_eps=0.5, clip_space="log", detach_inputs=mode)
        dense_grpo_loss(toy_velocity(theta), ro, adv, starts, 5, settings, backward=True)
        grads[mode] = theta.grad.clone()
    assert not torch.allclose(grads["first"], grads["all"], rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.7])
@pytest.mark.parametrize("detach", ["first", "all"])
def test_every_dense_backward_gives_the_same_gradient_and_values(beta, detach):
    """graph, checkpoint and the reverse sweep (value pass off-policy) agree: loss, stats and gradient."""
    ro = toy_rollouts(THETA_OLD, steps=8, seed=3)
    starts = torch.tensor([0, 1, 3, 2])
    adv = torch.tensor([1.3, -0.7, 0.4, -2.0], dtype=torch.float64)
    results, grads = {}, {}
    for mode in ("graph", "checkpoint", "sweep"):
        theta = (THETA_OLD + torch.tensor([0.04, -0.05], dtype=torch.float64)).requires_grad_(True)
        settings = ObjectiveSettings(clip_eps=0.5, beta=beta, detach_inputs=detach, dense_backward=mode)
        ref = toy_velocity(THETA_OLD) if beta else None
        results[mode] = dense_grpo_loss(toy_velocity(theta), ro, adv, starts, 5, settings, ref_velocity_fn=ref,
                                        backward=True)
        grads[mode] = theta.grad.clone()
    assert torch.equal(grads["graph"], grads["checkpoint"])
    torch.testing.assert_close(grads["sweep"], grads["graph"], rtol=1e-10, atol=1e-12)
    assert float(results["sweep"].loss) == pytest.approx(float(results["graph"].loss), rel=1e-12)
    for key, value in results["graph"].stats.items():
        assert results["sweep"].stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert results["graph"].stats["ratio_max"] > 1.0  # off-policy: the chain really carries gradient


def test_on_policy_sweep_skips_the_value_pass_and_keeps_the_gradient():
    """At the rollout's parameters the sweep needs no value pass: k network calls with grad (sparse's count)."""
    ro = toy_rollouts(THETA_OLD, steps=8, seed=4)
    starts = torch.tensor([0, 2, 3, 1])
    adv = torch.tensor([0.5, -1.1, 2.0, -0.3], dtype=torch.float64)
    grads, calls = {}, {}
    for mode, on_policy in (("graph", False), ("sweep", True)):
        theta = THETA_OLD.clone().requires_grad_(True)
        velocity = toy_velocity(theta)
        count = []

        def counted(x, sigma, velocity=velocity, count=count):
            count.append(torch.is_grad_enabled())
            return velocity(x, sigma)

        result = dense_grpo_loss(counted, ro, adv, starts, 5, ObjectiveSettings(dense_backward=mode), backward=True,
                                 on_policy=on_policy)
        assert result.stats["ratio_min"] == result.stats["ratio_max"] == 1.0
        grads[mode], calls[mode] = theta.grad.clone(), count
    torch.testing.assert_close(grads["sweep"], grads["graph"], rtol=1e-10, atol=1e-12)
    assert calls["sweep"] == [True] * 5


def test_window_outside_the_rollout_is_rejected():
    ro = toy_rollouts(THETA_OLD)
    with pytest.raises(ValueError, match="leaves"):
        dense_grpo_loss(toy_velocity(THETA_OLD), ro, torch.ones(N), torch.tensor([3, 0, 0, 0]), 4,
                        ObjectiveSettings())


@pytest.mark.parametrize("backward", [False, True])
def test_sparse_loss_and_gradient_are_the_mean_over_its_steps(backward):
    """Sparse with k steps per trajectory: the loss is the mean over trajectories and steps of the one-step loss,
    written out independently (``reference_dense_loss`` with a window of 1), and so is its gradient."""
    ro = toy_rollouts(THETA_OLD, steps=8, seed=5)
    steps = torch.tensor([[0, 3, 5], [1, 2, 7], [4, 6, 0], [7, 1, 3]])
    adv = torch.tensor([0.9, -1.2, 0.3, 1.7], dtype=torch.float64)
    ref_theta = np.array([-0.25, 0.45])
    theta0 = np.array([-0.3 + 0.03, 0.5 - 0.04])
    eps, beta = 0.5, 0.6
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    out = sparse_grpo_loss(toy_velocity(theta), ro, adv, steps, ObjectiveSettings(clip_eps=eps, beta=beta),
                           toy_velocity(torch.tensor(ref_theta)), backward=backward)
    if not backward:
        out.loss.backward()

    def total(th):
        return np.mean([reference_dense_loss(th, ref_theta, ro, int(steps[n, i]), 1, float(adv[n]), eps, beta, n)
                        for n in range(N) for i in range(steps.shape[1])])

    assert float(out.loss.detach()) == pytest.approx(total(theta0), rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(theta.grad.numpy(), _fd_gradient(total, theta0), rtol=2e-5, atol=1e-8)


def test_drawn_windows_reach_every_start_and_sparse_steps_every_step():
    """Dense starts are uniform over 0..T-k, the last window included; sparse draws k distinct steps of 0..T-1."""
    gen = torch.Generator().manual_seed(0)
    steps, window = 6, 2
    starts = draw_steps("dense", 400, steps, window, gen)
    assert starts.shape == (400,) and set(starts.tolist()) == set(range(steps - window + 1))
    sparse = draw_steps("sparse", 400, steps, window, gen)
    assert sparse.shape == (400, window) and set(sparse.flatten().tolist()) == set(range(steps))
    assert all(len(set(row)) == window for row in sparse.tolist())
