"""Cost of the focus attention override against plain SDPA on the same tensors, measured in this run.

Joint attention shaped like Qwen-Image-Edit: [text | noisy image | reference image] tokens, heads x 128.
Compares: plain torch SDPA (baseline), the override's structured form (text/image/reference rows run
separately, [B,1,1,Lk] bias), the dense [B,1,Lq,Lk] bias, and value scaling. Prints best-of wall times,
ratios to the baseline and the extra bias memory; no threshold is asserted. CPU by default, CUDA if asked.

    .venv/bin/python bench/bench_focus.py [--image-tokens 1024] [--text 96] [--heads 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cogniedit.focus.override import TXT_LEN_KEY, make_attention_override  # noqa: E402


def sdpa(q, k, v, heads, mask=None, skip_reshape=True, skip_output_reshape=False, **kwargs):
    """An attention callable with the host's calling convention ([B,H,L,D] in, [B,L,H*D] out)."""
    if mask is not None and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out if skip_output_reshape else out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def best_time(fn, repeats, device):
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-tokens", type=int, default=1024)
    ap.add_argument("--text", type=int, default=96)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    n = args.text + 2 * args.image_tokens  # reference image as large as the output
    g = torch.Generator(device=args.device).manual_seed(0)
    q, k, v = (torch.randn(args.batch, args.heads, n, 128, generator=g, device=args.device, dtype=dtype) for _ in range(3))
    to = {TXT_LEN_KEY: args.text, "cond_or_uncond": [0, 1][: args.batch], "reference_image_num_tokens": [args.image_tokens]}
    spans = [[3, 4, 10]]
    variants = {
        "plain sdpa": lambda: sdpa(q, k, v, args.heads),
        "focus structured": lambda: make_attention_override(spans, 2.0)(sdpa, q, k, v, args.heads, None, transformer_options=to, skip_reshape=True),
        "focus dense bias": lambda: make_attention_override(spans, 2.0, structured=False)(sdpa, q, k, v, args.heads, None, transformer_options=to, skip_reshape=True),
        "focus value mode": lambda: make_attention_override(spans, 2.0, mode="value")(sdpa, q, k, v, args.heads, None, transformer_options=to, skip_reshape=True),
        "strength 0 (pass-through)": lambda: make_attention_override(spans, 0.0)(sdpa, q, k, v, args.heads, None, transformer_options=to, skip_reshape=True),
    }
    for fn in variants.values():  # warm-up
        fn()
    base = best_time(variants["plain sdpa"], args.repeats, args.device)
    el = torch.tensor([], dtype=dtype).element_size()
    print(f"B={args.batch} heads={args.heads} L_text={args.text} L_total={n} device={args.device} dtype={args.dtype}")
    for name, fn in variants.items():
        t = best_time(fn, args.repeats, args.device)
        print(f"{name:28s} {t * 1e3:9.2f} ms   x{t / base:5.2f}")
    print(f"bias memory: dense {args.batch * n * n * el / 2**20:.1f} MiB, structured {args.batch * n * el / 2**10:.1f} KiB")


if __name__ == "__main__":
    main()
