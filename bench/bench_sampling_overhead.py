"""Overhead of cogniedit.sampling's loop against a plain hand-rolled Euler loop on the same tiny model.

Model: a tiny random diffusers QwenImageTransformer2DModel (the real architecture, 2 blocks, narrow width),
packed latents as the diffusers pipeline uses them. Prints wall times (best of --repeats) and ratios against
the hand-rolled Euler loop measured in this same run; no threshold is asserted.

    .venv/bin/python bench/bench_sampling_overhead.py [--steps 20] [--repeats 5] [--size 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cogniedit.sampling import flow_sigmas, initial_noise, replay_log_probs, sample_trajectory  # noqa: E402


def tiny_qwen_velocity(latent_size: int, batch: int, device: str):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32,
        num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12),
    ).to(device).eval()
    side = latent_size // 2  # 2x2 patches of a [16, latent_size, latent_size] latent -> 64-channel tokens
    text = torch.randn(batch, 7, 64, device=device)
    mask = torch.ones(batch, 7, dtype=torch.long, device=device)
    img_shapes = [[(1, side, side)]] * batch

    def velocity(x, sigma):  # diffusers' Qwen transformer takes the flow time sigma in [0, 1] as `timestep`
        return model(hidden_states=x, encoder_hidden_states=text, encoder_hidden_states_mask=mask,
                     timestep=sigma, img_shapes=img_shapes, return_dict=False)[0]

    return velocity, (batch, side * side, 64)


def hand_rolled_euler(velocity, x, sigmas):
    with torch.no_grad():
        for j in range(len(sigmas) - 1):
            v = velocity(x, sigmas[j].expand(x.shape[0]))
            x = x + v * (sigmas[j + 1] - sigmas[j])
    return x


def best_time(fn, repeats, sync):
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="latent side (pixels / 8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    velocity, shape = tiny_qwen_velocity(args.size, args.batch, args.device)
    sigmas = flow_sigmas(args.steps, shift=3.1)
    x = initial_noise(shape, seed=0, device=args.device)
    generator = torch.Generator(device="cpu").manual_seed(0)

    ode_reference = hand_rolled_euler(velocity, x, sigmas)
    ode_ours = sample_trajectory(velocity, x, sigmas).final
    same = torch.equal(ode_reference, ode_ours)
    trajectory = sample_trajectory(velocity, x, sigmas, eta=0.1, generator=generator)

    timings = {
        "hand-rolled Euler loop (baseline)": best_time(
            lambda: hand_rolled_euler(velocity, x, sigmas), args.repeats, sync),
        "sample_trajectory eta=0 (ODE)": best_time(lambda: sample_trajectory(velocity, x, sigmas), args.repeats, sync),
        "sample_trajectory eta=0.1 (SDE + log-probs)": best_time(
            lambda: sample_trajectory(velocity, x, sigmas, eta=0.1, generator=generator), args.repeats, sync),
        "replay_log_probs, all steps, no grad": best_time(
            lambda: torch.no_grad()(replay_log_probs)(velocity, trajectory), args.repeats, sync),
    }
    base = timings["hand-rolled Euler loop (baseline)"]
    print(f"device={args.device} threads={args.threads} steps={args.steps} batch={args.batch} "
          f"tokens={shape[1]} repeats={args.repeats} (best of)")
    print(f"ODE result identical to the hand-rolled loop: {same}")
    for name, seconds in timings.items():
        print(f"{name:46s} {seconds * 1000:9.2f} ms   ratio {seconds / base:5.3f}")


if __name__ == "__main__":
    main()
