"""The all-in-one CogniEdit Sampler against the core graph it replaces, in one run, on tiny models (CPU).

Baseline (core): VAEEncode -> ReferenceLatent (positive, negative) -> RandomNoise + CFGGuider + KSamplerSelect(euler)
+ BasicScheduler(simple) -> SamplerCustomAdvanced. Ours: CogniEditSampler on the same model, VAE, image,
conditioning and settings (focus off, eta 0). Both results are checked to be identical. Prints best-of-N wall
times (measured interleaved, so machine load hits both alike) and the ratio; target <= 1.02. No threshold is asserted.

    .venv/bin/python bench/bench_sampler_node.py [--model qwen|flux] [--steps 20] [--repeats 15] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "host"))
sys.path.insert(0, str(REPO))

from comfy_inprocess import (bootstrap, flux_conditioning, pack_module, qwen_conditioning, random_image,  # noqa: E402
                             tiny_flux_kontext, tiny_qwen_image, tiny_taef1_vae, tiny_wan_vae)
from cogniedit.host import find_comfyui  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["qwen", "flux"], default="qwen")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=128, help="source image side in pixels (multiple of 32)")
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    host = find_comfyui()
    if not host.root:
        sys.exit(f"no ComfyUI found ({host.reason})")
    comfy = bootstrap(host.root)
    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm output in either run
    sampler = pack_module("nodes.sampler")
    if args.model == "qwen":
        model, vae, (positive, negative) = tiny_qwen_image(comfy), tiny_wan_vae(comfy), qwen_conditioning()
    else:
        model, vae, (positive, negative) = tiny_flux_kontext(comfy), tiny_taef1_vae(comfy), flux_conditioning()
    image = random_image(args.size, args.size)
    ncs, seed = comfy.ncs, 42

    def core():
        (latent,) = comfy.nodes.VAEEncode().encode(vae, image)
        pos = comfy.edit.ReferenceLatent.execute(positive, latent).args[0]
        neg = comfy.edit.ReferenceLatent.execute(negative, latent).args[0]
        return ncs.SamplerCustomAdvanced.execute(
            ncs.RandomNoise.execute(seed).args[0], ncs.CFGGuider.execute(model, pos, neg, args.cfg).args[0],
            ncs.KSamplerSelect.execute("euler").args[0],
            ncs.BasicScheduler.execute(model, "simple", args.steps, 1.0).args[0], latent).args[0]["samples"]

    def ours():
        return sampler.CogniEditSampler.execute(model, positive, negative, seed, args.steps, args.cfg, 1.0, 0.0,
                                                source_image=image, vae=vae).args[0]["samples"]

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        same = torch.equal(core(), ours())  # also the warm-up
        times = {"core": float("inf"), "ours": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("core", core), ("ours", ours)):
                start = time.perf_counter()
                fn()
                times[name] = min(times[name], time.perf_counter() - start)

    print(f"model {args.model}, {args.size}x{args.size} px, {args.steps} steps, cfg {args.cfg}, "
          f"{torch.get_num_threads()} thread(s), best of {args.repeats}")
    print(f"core SamplerCustomAdvanced graph: {times['core'] * 1000:.1f} ms")
    print(f"CogniEdit Sampler:                {times['ours'] * 1000:.1f} ms")
    print(f"ratio ours/core: {times['ours'] / times['core']:.3f} (target <= 1.02); identical result: {same}")


if __name__ == "__main__":
    main()
