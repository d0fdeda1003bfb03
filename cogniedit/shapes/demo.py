"""Main demo: the embedded ShapeEdit editor edits a few sample cases, scored by the exact scorer.

    python -m cogniedit.shapes.demo [--n 8] [--seed 2026] [--steps 12] [--out out]

Prints one line per case (kind, instruction, success, what the scorer read) and a small metrics table, and writes
``out/shapeedit_demo.png``: one row per case, source | edited | target, 4x nearest-neighbour upscaled.
Plain editor: no decomposition, no focus, no LoRA.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _save_grid(path: Path, rows: list[tuple[np.ndarray, ...]], scale: int = 4) -> None:
    from PIL import Image

    gap = np.full((48, 4, 3), 255, np.uint8)
    lines = [np.concatenate([part for img in row for part in (img, gap)][:-1], axis=1) for row in rows]
    hgap = np.full((4, lines[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([part for line in lines for part in (line, hgap)][:-1], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    image.save(tmp)
    tmp.replace(path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="number of cases (kinds cycle: colour, position, count, compound)")
    p.add_argument("--seed", type=int, default=2026, help="case generation seed")
    p.add_argument("--sample-seed", type=int, default=0, help="sampling noise seed")
    p.add_argument("--steps", type=int, default=12, help="Euler steps")
    p.add_argument("--weights", default=None, help="editor weights (default: the shipped file)")
    p.add_argument("--out", default="out", help="folder for the PNG")
    args = p.parse_args(argv)

    import torch

    from .cases import generate_cases
    from .editor import load_default_editor
    from .render import render_scene
    from .scorer import aggregate, score_edit

    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    editor = load_default_editor(args.weights, steps=args.steps)
    meta = editor.metadata
    print(f"editor: {meta.get('version')} ({editor.num_parameters() / 1e6:.2f} M parameters, trained "
          f"{meta.get('steps_done')} steps / {meta.get('train_minutes')} min, seed {meta.get('seed')})")
    cases = generate_cases(args.n, args.seed)
    sources = np.stack([render_scene(c.source) for c in cases])
    targets = np.stack([render_scene(c.target) for c in cases])
    edited = editor.edit(sources, [c.instruction for c in cases], seed=args.sample_seed)
    scores = [score_edit(img, case) for img, case in zip(edited, cases)]

    for case, score in zip(cases, scores):
        mark = "OK  " if score.success else "FAIL"
        print(f"{mark} {case.kind:9s} {case.instruction!r:70s} preserved={score.preserved}")
    metrics = aggregate(scores)
    print(f"\n{'kind':10s} {'n':>3s} {'success':>8s} {'preserved':>10s} {'psnr':>7s}")
    for kind, m in [("all", metrics), *metrics["per_kind"].items()]:
        psnr = "-" if m["psnr"] is None else f"{m['psnr']:.1f}"
        print(f"{kind:10s} {m['n']:3d} {m['success']:8.2f} {m['preserved']:10.2f} {psnr:>7s}")
    png = Path(args.out) / "shapeedit_demo.png"
    _save_grid(png, list(zip(sources, edited, targets)))
    print(f"\nwrote {png} (rows: source | edited | target); {time.time() - start:.1f} s")
    return metrics


if __name__ == "__main__":
    main()
