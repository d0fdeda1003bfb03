"""Sampling time with the CogniEdit Token Focus patch over sampling time without, same model and steps, one run (CPU).

Model: the tiny Qwen-Image(-Edit), Flux Kontext, FLUX.2 klein, LongCat-Image or Mage-Flow DiT of tests/host (real
ComfyUI classes; the new families at their real text widths and text lengths: klein 512 tokens of 7680, LongCat 512
of 3584, Mage-Flow prompt + 5 of 2560) with a reference latent, or the tiny InstructPix2Pix UNet (cross-attention path; no learned mode), sampled by ComfyUI's KSampler (euler, simple, cfg > 1 so both the cond and the uncond pass run). Timed: the unpatched
model, then the node's output in training_free_bias, value_scale and learned mode (a random LearnedFocus written to a
focus-weights file and read back through cogniedit.focus.weights_file). Runs are interleaved; best-of-N wall and
process-CPU times and their ratios are printed. Targets: <= 1.05x training-free, <= 1.15x learned. No threshold
is asserted.

    .venv/bin/python bench/bench_focus_node.py [--model qwen|flux|ip2p|flux2|longcat|mageflow] [--steps 6]
        [--repeats 7] [--latent 16] [--attention pytorch|default]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "host"))
sys.path.insert(0, str(REPO))

from comfy_inprocess import (bootstrap, flux_conditioning, pack_module, qwen_conditioning,  # noqa: E402
                             sd_conditioning, tiny_flux_kontext, tiny_instructpix2pix, tiny_qwen_image)
from cogniedit.host import find_comfyui  # noqa: E402
from cogniedit.focus.text_layout import encoder_tokens, layout_for  # noqa: E402
from cogniedit.text.tokenizer import load_qwen25_tokenizer  # noqa: E402

PROMPTS = {"qwen": ("make the cat red", "cat, red", 9), "flux": ("make the left cup red", "left cup, red", 8),
           "ip2p": ("make the left cup red", "left cup, red", 77)}
# FLUX.2 klein, LongCat, Mage-Flow: (layout, focus-file family, real text width, latent channels, patch size)
FAMILIES = {"flux2": ("flux2_klein", "flux2_klein", 7680, 128, 1), "longcat": ("longcat", "longcat_image", 3584, 16, 2),
            "mageflow": ("mage_flow", "mage_flow", 2560, 128, 1)}
PROMPTS.update({name: ("make the left cup red", "left cup, red", None) for name in FAMILIES})


def family_model(comfy, name):
    """(model, focus-file family, positive, negative, latent channels, patch) for a new family: the conditioning
    has the length that family's encoder gives the prompt (text_layout), random values at the real width."""
    from tiny_families import tiny_flux2, tiny_longcat, tiny_mage_flow

    layout, file_family, width, channels, patch = FAMILIES[name]
    build = {"flux2": tiny_flux2, "longcat": tiny_longcat, "mageflow": tiny_mage_flow}[name]
    tokens = len(encoder_tokens(PROMPTS[name][0], load_qwen25_tokenizer(), layout_for(layout))[0])
    generator = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, tokens, width, generator=generator), {}]]
    negative = [[torch.randn(1, tokens, width, generator=generator) * 0.5, {}]]
    return build(comfy, text_width=width), file_family, positive, negative, channels, patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(PROMPTS), default="qwen")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--latent", type=int, default=16, help="latent side (image tokens = (side/2)^2, + as many "
                        "reference tokens)")
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attention", choices=["default", "pytorch"], default="pytorch",
                        help="ComfyUI's attention backend: pytorch (SDPA, as --use-pytorch-cross-attention and the "
                        "usual GPU path) or default (on CPU: sub-quadratic, which reads free memory on every call)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    host = find_comfyui()
    if not host.root:
        sys.exit(f"no ComfyUI found ({host.reason})")
    if args.attention == "pytorch":  # must be set before ComfyUI picks its attention function at import
        sys.path.insert(0, str(host.root))
        from comfy.cli_args import args as comfy_args

        comfy_args.use_pytorch_cross_attention = True
    comfy = bootstrap(host.root)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    focus = pack_module("nodes.focus")
    weights_file = pack_module("cogniedit.focus.weights_file")
    learned = pack_module("cogniedit.focus.learned")

    prompt, phrases, tokens = PROMPTS[args.model]
    channels, patch = 16, 2
    if args.model in FAMILIES:
        model, family, positive, negative, channels, patch = family_model(comfy, args.model)
        tokens = positive[0][0].shape[1]
    elif args.model == "qwen":
        model, family = tiny_qwen_image(comfy), "qwen_image_edit"
        positive, negative = qwen_conditioning(tokens=tokens)
    elif args.model == "flux":
        model, family = tiny_flux_kontext(comfy), "flux_kontext"
        positive, negative = flux_conditioning(tokens=tokens)
    else:  # IP2P: the source image rides in the conditioning (concat), there is no reference latent
        model, family = tiny_instructpix2pix(comfy), None
        positive, negative = sd_conditioning()
    channels = 4 if family is None else channels
    if family is not None:
        reference = torch.randn(1, channels, args.latent, args.latent, generator=torch.Generator().manual_seed(1))
        positive, negative = (comfy.node_helpers.conditioning_set_values(c, {"reference_latents": [reference]},
                                                                         append=True) for c in (positive, negative))
    latent = {"samples": torch.zeros(1, channels, args.latent, args.latent)}

    focus_weights = None
    if family is not None:
        dit = model.model.diffusion_model
        module = learned.LearnedFocus.for_model(dit, blocks="all", xi=2, window=8)
        with tempfile.TemporaryDirectory() as folder:
            path = weights_file.save_focus_weights(Path(folder) / "bench.safetensors", module,
                                                   {"family": family, "base_hash": weights_file.base_model_hash(dit)})
            focus_weights = weights_file.load_focus_weights(path)

    def patched(mode):
        return focus.CogniEditTokenFocus.execute(model, prompt=prompt, phrases=phrases, mode=mode, strength=2.0,
                                                 focus_weights=focus_weights).args[0]

    modes = ["training_free_bias", "value_scale"] + (["learned"] if family is not None else [])
    runs = {"unpatched": model, **{mode: patched(mode) for mode in modes}}

    def sample(m):
        return comfy.nodes.KSampler().sample(m, 3, args.steps, args.cfg, "euler", "simple", positive, negative,
                                             latent)[0]["samples"]

    for m in runs.values():  # warm-up (first-call allocations, model load)
        sample(m)
    # wall time and process CPU time: the models run on the CPU, and on a shared machine CPU time is the steadier
    wall = {name: float("inf") for name in runs}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for name, m in runs.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            sample(m)
            wall[name] = min(wall[name], time.perf_counter() - start_wall)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)

    image_tokens = (args.latent // patch) ** 2 if family is not None else args.latent ** 2
    extra = f" + {image_tokens} reference" if family is not None else " (at full latent size)"
    print(f"model {args.model} (tiny), {args.steps} steps, cfg {args.cfg}, {image_tokens} image{extra} "
          f"tokens, {tokens} text tokens, best of {args.repeats}, {args.threads} thread(s), attention "
          f"{comfy.comfy.ldm.modules.attention.optimized_attention.__name__}")
    print(f"  {'unpatched':<19} wall {wall['unpatched'] * 1000:8.1f} ms   cpu {cpu['unpatched'] * 1000:8.1f} ms")
    targets = {"training_free_bias": 1.05, "value_scale": 1.05, "learned": 1.15}
    for name in modes:
        target = targets[name]
        ratio_wall, ratio_cpu = wall[name] / wall["unpatched"], cpu[name] / cpu["unpatched"]
        print(f"  {name:<19} wall {wall[name] * 1000:8.1f} ms   cpu {cpu[name] * 1000:8.1f} ms   ratio wall "
              f"{ratio_wall:.3f}x, cpu {ratio_cpu:.3f}x  (target <= {target}x: "
              f"{'ok' if ratio_cpu <= target else 'OVER'} on cpu)")


if __name__ == "__main__":
    main()
