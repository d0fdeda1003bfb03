"""Time and peak memory of one Dense GRPO update (k = 5) against one sparse (Flow-GRPO) update on the same batch.

Both updates use the same rollouts, advantages and the same 5 transitions per trajectory (the dense window);
sparse back-propagates each step on its own (only one step's graph alive). Dense is measured with each
``objective.dense_backward``: ``graph`` (one backward through the window's k graphs), ``checkpoint`` (each step's
forward recomputed in backward) and ``sweep`` (one step's graph at a time, last step first), the last both as the
trainer's first minibatch after a rollout runs it (on-policy: no value pass) and with its value pass (later
minibatches).

Time: best of ``--repeats`` wall-clock runs of forward+backward (interleaved, 1 thread).
Memory: peak of the CPU allocator's live tensor bytes during the update (allocations minus frees, in time order,
from torch.profiler's memory events); parameters, rollouts and conditioning exist before and are not counted.

    python bench/bench_grpo_update.py            # shipped editor if present, else a tiny random one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.grpo import Trainer  # noqa: E402
from training.config import load_config  # noqa: E402
from training.objectives import ObjectiveSettings, dense_grpo_loss, sparse_grpo_loss  # noqa: E402
from training.rollout import rollout  # noqa: E402


def peak_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # self (not inclusive) bytes of every op, plus the "[memory]" free events, in time order
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="editor weights (default: shipped, else tiny random)")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = args.model
    from cogniedit.shapes.editor import DEFAULT_PATH

    tmp = tempfile.TemporaryDirectory()
    if model is None:
        if DEFAULT_PATH.is_file():
            model = str(DEFAULT_PATH)
        else:
            from training.tiny import save_tiny_editor

            model = str(save_tiny_editor(Path(tmp.name) / "tiny.safetensors"))
    config = load_config(None, [f"model.path={model}", f"output_dir={tmp.name}/run", f"rollout.steps={args.steps}",
                                f"rollout.group_size={args.group}", f"rollout.cases_per_step={args.cases}",
                                f"objective.window={args.window}", "train.num_threads=1"])
    trainer = Trainer(config)
    policy = trainer.policy
    with torch.no_grad():  # non-zero LoRA so the update is off the identity
        for p in trainer.params:
            p.normal_(0, 0.02)
    cond = policy.encode_cases(trainer.step_cases(1))
    ro, _ = rollout(policy, cond, config["rollout"], 0, 1)
    n = ro.num_trajectories
    full = cond.repeat(args.group)
    adv = torch.linspace(-1, 1, n, dtype=torch.float64)
    starts = torch.randint(0, ro.num_steps - args.window + 1, (n,), generator=torch.Generator().manual_seed(0))
    steps = starts[:, None] + torch.arange(args.window)[None]
    fn = policy.velocity_fn(full)

    def dense(mode, on_policy=False):
        s = ObjectiveSettings(clip_space="log", dense_backward=mode)
        return lambda: dense_grpo_loss(fn, ro, adv, starts, args.window, s, backward=True, on_policy=on_policy)

    def sparse():
        s = ObjectiveSettings(clip_space="ratio")
        return lambda: sparse_grpo_loss(fn, ro, adv, steps, s, backward=True)

    variants = {"sparse": sparse(), "graph": dense("graph"), "checkpoint": dense("checkpoint"),
                "sweep": dense("sweep", on_policy=True), "sweep+values": dense("sweep")}
    for f in variants.values():  # warm-up
        trainer.optimizer.zero_grad(set_to_none=True)
        f()
    best = {k: float("inf") for k in variants}
    for _ in range(args.repeats):
        for name, f in variants.items():
            trainer.optimizer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t0)
    memory = {}
    for name, f in variants.items():
        trainer.optimizer.zero_grad(set_to_none=True)
        memory[name] = peak_bytes(f)
    print(f"editor {model}; {n} trajectories ({args.cases} cases x {args.group}), T={args.steps}, k={args.window}, "
          f"CPU 1 thread, best of {args.repeats}")
    print(f"{'variant':<13} {'time ms':>9} {'peak MiB':>9} {'time/sparse':>12} {'mem/sparse':>11}")
    for name in variants:
        print(f"{name:<13} {best[name] * 1e3:9.1f} {memory[name] / 2**20:9.2f} {best[name] / best['sparse']:12.2f} "
              f"{memory[name] / memory['sparse']:11.2f}")
    print("targets: dense time/sparse <= 1.5, mem/sparse <= 1.2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
