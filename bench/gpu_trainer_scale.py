"""The trainer at Qwen-Image-Edit's full size on one GPU: seconds per step and peak memory of a rollout, a Dense
update and a sparse update, in each memory mode (train.memory: bf16, fp8, offload).

The DiT is diffusers' ``QwenImageTransformer2DModel`` at the 2509 configuration (60 blocks, hidden 3072, text width
3584, 20.4 B parameters) with random weights, built block by block on the device (no download, no 80 GB float32
copy). Records are synthetic 1024 px edits: random text embeddings (300 tokens) and random reference latent tokens
(64 x 64 grid), cached as the trainer caches real ones; rewards are random (the VAE and the judge are not part of
the measurement). Per mode: a rank-4 LoRA on to_k / to_v / to_out.0, diffusers' block checkpointing on, one rollout
of ``--trajectories`` trajectories with ``--steps`` SDE steps, then one Dense update (k = ``--window``, sweep) and
one sparse update over the same k steps, each forward+backward+AdamW step; time = best of ``--repeats`` (2) calls,
peak = torch.cuda.max_memory_allocated during the phase (weights included). Estimated 4-5 minutes on an 80 GB H100
(budget: 8; a mode that would start after 7 minutes is skipped and says so). Not yet run on a GPU.

    python bench/gpu_trainer_scale.py                 # needs CUDA; prints "skipped: no CUDA device" without one
    python bench/gpu_trainer_scale.py --tiny          # the same code on a tiny DiT, on CPU (checks the building code)

``--tiny`` runs a 2-block narrow DiT at 64 px on the CPU (1 thread) and reports each mode's time and memory
against bf16 (memory: peak live CPU-allocator bytes of the update, as bench_grpo_update.py measures it; on the
CPU offload copies nothing, so its memory equals bf16's there by construction).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.config import load_config  # noqa: E402
from training.lora import inject_lora, lora_parameters  # noqa: E402
from training.memory import GIB, apply_memory_mode  # noqa: E402
from training.objectives import ObjectiveSettings, dense_grpo_loss, sparse_grpo_loss  # noqa: E402
from training.qwen_edit import QwenEditPolicy  # noqa: E402
from training.rollout import CachedConditioningPolicy, rollout  # noqa: E402

FULL = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56))
TINY = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32,
            num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12))
MODES = ("bf16", "fp8", "offload")
BUDGET_S = 7 * 60  # leave the rest of the 8 minutes to the last mode in flight


def build_dit(config: dict, device: torch.device):
    """Random-weight DiT in bf16, built one block at a time on ``device`` (float32 init, then bf16): the peak is
    the bf16 model plus one float32 block."""
    from diffusers import QwenImageTransformer2DModel
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock

    torch.manual_seed(0)
    with torch.device(device):
        model = QwenImageTransformer2DModel(**dict(config, num_layers=1))
        torch.nn.Module.to(model, torch.bfloat16)  # (diffusers' own .to warns about float32 modules it has none of)
        for _ in range(config["num_layers"] - 1):
            block = QwenImageTransformerBlock(dim=config["num_attention_heads"] * config["attention_head_dim"],
                                              num_attention_heads=config["num_attention_heads"],
                                              attention_head_dim=config["attention_head_dim"])
            model.transformer_blocks.append(block.to(torch.bfloat16))
    return model.requires_grad_(False)


class SyntheticPolicy(QwenEditPolicy):
    """QwenEditPolicy's velocity and latent shapes on synthetic cached conditioning (no VAE, no text encoder)."""

    def __init__(self, transformer, records: int, resolution: int, text_tokens: int = 300):
        CachedConditioningPolicy.__init__(self, bf16=True)
        self._transformer = transformer
        self.channels = transformer.config.in_channels
        grid = resolution // 16
        width = transformer.config.joint_attention_dim
        generator = torch.Generator().manual_seed(1)
        for i in range(records):
            self._cache[f"r{i}"] = (torch.randn(text_tokens, width, generator=generator).to(torch.bfloat16),
                                    torch.ones(text_tokens, dtype=torch.long),
                                    torch.randn(grid * grid, self.channels, generator=generator).to(torch.bfloat16),
                                    torch.tensor(8), torch.tensor([grid, grid]))

    def decode(self, latents, cond=None):
        return None  # rewards are random in the bench


class Case:
    def __init__(self, case_id):
        self.case_id = case_id


def measure(device, fn, repeats: int, cpu_peak=None):
    """(best seconds of ``repeats`` calls, peak bytes) of ``fn``: CUDA's max allocated over the calls, or on CPU the
    profiler's live-bytes peak of one more call. The first call of a mode pays its warm-up; the best one does not."""
    best, peak = float("inf"), 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated())
        best = min(best, time.perf_counter() - t0)
    if cpu_peak is not None:
        peak = cpu_peak(fn)
    return best, peak


def run_mode(mode: str, args, device, dit_config) -> dict:
    from bench_grpo_update import peak_bytes

    dit = build_dit(dit_config, device)  # offload then moves the block weights to pinned CPU memory
    policy = SyntheticPolicy(dit, args.cases, args.resolution)
    inject_lora(dit, 4, 4.0, ["to_k", "to_v", "to_out.0"], seed=2)
    config = load_config(None, [f"train.memory={mode}", "train.gradient_checkpointing=true",
                                f"rollout.steps={args.steps}", f"rollout.group_size={args.trajectories // args.cases}",
                                f"rollout.cases_per_step={args.cases}", f"objective.window={args.window}",
                                f"data.resolution={args.resolution}"])
    apply_memory_mode(policy, config, device)
    dit.to(device)
    dit.enable_gradient_checkpointing()
    dit.train()
    params = lora_parameters(dit)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.02)  # off the identity, as after some training
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    weights = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    cond = policy.encode_cases([Case(f"r{i}") for i in range(args.cases)]).to(device)
    out = {}

    def do_rollout():
        with torch.no_grad():
            out["ro"] = rollout(policy, cond, config["rollout"], 0, 1)[0]

    out["rollout"] = measure(device, do_rollout, args.repeats)
    ro = out["ro"]
    n = ro.num_trajectories
    generator = torch.Generator().manual_seed(3)
    advantages = torch.randn(n, generator=generator, dtype=torch.float64)
    starts = torch.randint(0, ro.num_steps - args.window + 1, (n,), generator=generator)
    steps = starts[:, None] + torch.arange(args.window)[None]
    fn = policy.velocity_fn(cond.repeat(args.trajectories // args.cases))

    def update(loss_fn):
        def step():
            optimizer.zero_grad(set_to_none=True)
            loss_fn()
            optimizer.step()
        return step

    dense = update(lambda: dense_grpo_loss(fn, ro, advantages, starts, args.window,
                                           ObjectiveSettings(clip_space="log", dense_backward="sweep"),
                                           backward=True, on_policy=True))
    sparse = update(lambda: sparse_grpo_loss(fn, ro, advantages, steps, ObjectiveSettings(clip_space="ratio"),
                                             backward=True))
    cpu_peak = peak_bytes if device.type == "cpu" else None
    out["dense"] = measure(device, dense, args.repeats, cpu_peak)
    out["sparse"] = measure(device, sparse, args.repeats, cpu_peak)
    out["weights"] = weights
    del out["ro"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-block narrow DiT at 64 px on the CPU")
    parser.add_argument("--resolution", type=int, default=None, help="pixels per side (1024; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=4, help="SDE steps of the rollout")
    parser.add_argument("--window", type=int, default=2, help="Dense window k (sparse: the same k steps)")
    parser.add_argument("--trajectories", type=int, default=2)
    parser.add_argument("--cases", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=2, help="best of this many calls per phase")
    args = parser.parse_args(argv)
    if args.tiny:
        device, dit_config = torch.device("cpu"), TINY
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, dit_config = torch.device("cuda"), FULL
    else:
        print("skipped: no CUDA device (run with --tiny to check the building code on the CPU)")
        return 0
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    modes = [m for m in args.modes.split(",") if m]
    print(f"Qwen-Image-Edit DiT {'tiny' if args.tiny else 'full size'} ({dit_config['num_layers']} blocks), "
          f"{args.resolution} px, {args.trajectories} trajectories, T={args.steps}, k={args.window}, {device}"
          + (f" ({torch.cuda.get_device_name(device)}, {torch.cuda.mem_get_info(device)[1] / GIB:.0f} GiB)"
             if device.type == "cuda" else ", 1 thread"))
    begin, results = time.perf_counter(), {}
    for mode in modes:
        if time.perf_counter() - begin > BUDGET_S:
            print(f"{mode}: not run (time budget of {BUDGET_S} s spent)")
            continue
        results[mode] = run_mode(mode, args, device, dit_config)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    unit = GIB if device.type == "cuda" else 2 ** 20
    name = "GiB" if device.type == "cuda" else "MiB"
    print(f"{'mode':<8} {'phase':<8} {'s/step':>8} {'peak ' + name:>10} {'time/bf16':>10} {'mem/bf16':>9}")
    for mode, r in results.items():
        for phase in ("rollout", "dense", "sparse"):
            seconds, peak = r[phase]
            base = results.get("bf16", {}).get(phase)
            ratio_t = f"{seconds / base[0]:10.2f}" if base else f"{'-':>10}"
            ratio_m = f"{peak / base[1]:9.2f}" if base and base[1] else f"{'-':>9}"
            memory = f"{peak / unit:10.2f}" if peak else f"{'-':>10}"  # CPU: the rollout is not profiled
            print(f"{mode:<8} {phase:<8} {seconds:8.2f} {memory} {ratio_t} {ratio_m}")
        if device.type == "cuda":
            print(f"{mode:<8} weights resident after setup: {r['weights'] / GIB:.2f} GiB")
    print(f"total {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
