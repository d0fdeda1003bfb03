"""Instruction Decompose speed, measured against baselines taken in the same run.

1. Rules: microseconds per instruction over the 60 labelled instructions (decompose_rules, and the
   full decompose() entry point with backend="rules").
2. Backend overhead of the transformers backend on a tiny random Qwen2.5-VL: the model's own
   generate() on prepared inputs (baseline) vs the full decompose() call (chat template, image
   processing, tokenisation, generate, decoding, parsing, fallback) on the same inputs, interleaved.
   Target: overhead < 5 % of generate.

Usage: python bench/bench_decompose.py [--new-tokens 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cogniedit.decompose import DecomposeSettings, decompose, decompose_rules  # noqa: E402
from cogniedit.decompose.prompt import build_messages  # noqa: E402
from tests.fixtures.tiny_models import tiny_qwen25_vl_backend  # noqa: E402

INSTRUCTIONS = [json.loads(line)["instruction"] for line in
                (REPO / "tests/core/data/instructions_60.jsonl").read_text().splitlines() if line.strip()]


def bench_rules(rounds: int = 50) -> None:
    decompose_rules(INSTRUCTIONS[0])  # compile regexes
    for label, fn in (("decompose_rules", decompose_rules), ("decompose(rules)", lambda s: decompose(None, s, "rules"))):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for text in INSTRUCTIONS:
                fn(text)
            times.append((time.perf_counter() - start) / len(INSTRUCTIONS))
        print(f"{label:>18}: {statistics.median(times) * 1e6:8.1f} µs per instruction "
              f"(median of {rounds} rounds x {len(INSTRUCTIONS)} instructions)")


def bench_backend_overhead(new_tokens: int, repeats: int) -> None:
    # min_new_tokens pins the length so both sides generate exactly the same number of tokens.
    backend = tiny_qwen25_vl_backend(max_pixels=224 * 224, generate_kwargs={"min_new_tokens": new_tokens}, model_id="tiny")
    image = np.random.default_rng(0).integers(0, 256, size=(384, 384, 3), dtype=np.uint8)
    instruction = "make the left cup red and add three birds on the right"
    settings = DecomposeSettings(max_new_tokens=new_tokens)
    kwargs = backend.generation_kwargs(settings)
    inputs = backend.prepare(build_messages(instruction), image)

    def generate_alone():
        with torch.inference_mode():
            backend.model.generate(**inputs, **kwargs)

    def full_call():
        decompose(image, instruction, backend, settings)

    generate_alone(), full_call()  # warm up
    gen_times, full_times = [], []
    for _ in range(repeats):
        for fn, times in ((generate_alone, gen_times), (full_call, full_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    gen, full = statistics.median(gen_times), statistics.median(full_times)
    start = time.perf_counter()
    for _ in range(repeats):
        backend.prepare(build_messages(instruction), image)
    prepare = (time.perf_counter() - start) / repeats
    overhead = (full - gen) / gen
    print(f"tiny Qwen2.5-VL, {inputs['input_ids'].shape[1]} prompt tokens, {new_tokens} new tokens, "
          f"median of {repeats}:")
    print(f"  generate alone  {gen * 1e3:8.1f} ms")
    print(f"  full decompose  {full * 1e3:8.1f} ms   (of which prepare ~{prepare * 1e3:.1f} ms)")
    print(f"  overhead ratio  {overhead * 100:+.1f} % of generate  (target < 5 %: {'PASS' if overhead < 0.05 else 'MISS'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_rules()
    bench_backend_overhead(args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
