"""Rollouts with a tiny random ShapeEdit editor (real diffusers DiT + Qwen2 encoder): conditioning is cached per
case, stored log-probs replay bit for bit, and both objectives see ratios of exactly 1 on-policy."""

import pytest
import torch

from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.editor import load_editor
from training.lora import inject_lora, lora_layers
from training.objectives import ObjectiveSettings, dense_grpo_loss, draw_steps, sparse_grpo_loss
from training.rollout import ShapeEditPolicy, rollout
from training.tiny import save_tiny_editor

ROLLOUT = {"steps": 6, "shift": 1.0, "eta": 0.7, "group_size": 2, "cases_per_step": 2, "shared_noise": False}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    torch.set_num_threads(1)
    editor = load_editor(save_tiny_editor(tmp_path_factory.mktemp("m") / "tiny.safetensors"))
    inject_lora(editor.transformer, rank=2, alpha=2.0, targets=["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():
        for layer in lora_layers(editor.transformer).values():
            layer.lora_B.weight.normal_(0, 0.05)  # a non-trivial policy
    return ShapeEditPolicy(editor)


def test_conditioning_is_computed_once_per_case(policy, monkeypatch):
    cases = generate_cases(3, seed=11)
    calls = []
    original = policy.editor.encode_text
    monkeypatch.setattr(policy.editor, "encode_text", lambda texts: calls.append(texts) or original(texts))
    first = policy.encode_cases(cases)
    again = policy.encode_cases(cases[::-1])
    assert len(calls) == 3
    assert torch.equal(again.ref[0], first.ref[2]) and torch.equal(again.mask[0], first.mask[2])


@pytest.mark.parametrize("objective", ["dense", "sparse"])
def test_on_policy_ratios_are_exactly_one_on_the_real_dit(policy, objective):
    cases = generate_cases(2, seed=12)
    cond = policy.encode_cases(cases)
    ro, images = rollout(policy, cond, ROLLOUT, seed=0, step=1)
    n = 4
    assert ro.latents.shape == (7, n, 36, 192) and ro.log_probs.shape == (6, n) and images.shape == (n, 48, 48, 3)
    steps = draw_steps(objective, n, 6, 3, torch.Generator().manual_seed(0))
    fn = policy.velocity_fn(cond.repeat(2))
    ref_fn = policy.reference_velocity_fn(cond.repeat(2))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    settings = ObjectiveSettings(beta=0.1, clip_space="log" if objective == "dense" else "ratio")
    if objective == "dense":
        out = dense_grpo_loss(fn, ro, adv, steps, 3, settings, ref_fn, backward=True)
    else:
        out = sparse_grpo_loss(fn, ro, adv, steps, settings, ref_fn, backward=True)
    assert out.stats["ratio_min"] == 1.0 and out.stats["ratio_max"] == 1.0
    assert out.stats["kl"] > 0  # the LoRA moved the policy away from the frozen base
    grads = [layer.lora_A.weight.grad for layer in lora_layers(policy.transformer).values()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    policy.transformer.zero_grad(set_to_none=True)


def test_same_step_same_rollout(policy):
    cond = policy.encode_cases(generate_cases(2, seed=13))
    a, _ = rollout(policy, cond, ROLLOUT, seed=5, step=3)
    b, _ = rollout(policy, cond, ROLLOUT, seed=5, step=3)
    c, _ = rollout(policy, cond, ROLLOUT, seed=5, step=4)
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, c.latents)
