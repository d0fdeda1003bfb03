"""Main demo: instructions as people write them, edited by the plain ShapeEdit editor and by CogniEdit side by side.

    python -m cogniedit.shapes.demo [--n 6] [--seed 2026] [--steps 12] [--focus off|training_free] [--out out]

Half the cases are paraphrases (open wording), half need the image to be read ("make the circle the same colour
as the square"), all in the held-out evaluation wording. Plain: the shipped editor reads the instruction as
written. CogniEdit: the shipped decomposer (a small Qwen2.5-VL, ``cogniedit/shapes/weights/decomposer``) reads
the source image and the instruction and writes its four stages, which are printed; the editor then follows its
explicit ``<answer>``. Every edit is scored by the exact scorer. Writes ``out/shapeedit_demo.png``: one row per
case, source | plain | CogniEdit | target, captioned with both verdicts and the instruction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _cases(n: int, seed: int):
    from .cases import generate_cases

    half = (n + 1) // 2
    return (generate_cases(half, seed, phrasing="paraphrase", split="eval")
            + generate_cases(n - half, seed, phrasing="reasoning", split="eval"))


def _stages(decomposition, check: str | None) -> str:
    from ..decompose.parser import parse_answer

    lines = []
    if decomposition.raw:  # the model's four stages, whichever text the grammar check passed on
        sections = parse_answer(decomposition.raw).sections
        lines = [f"    <{tag}> {sections.get(tag, '').replace(chr(10), ' | ')}"
                 for tag in ("info", "think", "answer", "object")]
    if check is not None:
        lines.append(f"    grammar check: {check} ({CHECK_MEANING[check]})")
    elif decomposition.source != "mllm":
        lines.append(f"    ({decomposition.source}: {'; '.join(decomposition.warnings)})")
    return "\n".join(lines)


CHECK_MEANING = {"explicit": "the instruction needs no image: the rules' rewrite goes to the editor",
                 "answer": "the model's <answer> reads in the editor's grammar and goes to the editor",
                 "beam": "the <answer> did not read; a beam of the same model's that reads on its <info> goes",
                 "fallback": "no <answer> reads on the scene the model described: the rules' text goes"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6, help="number of cases (half paraphrase, half reasoning)")
    p.add_argument("--seed", type=int, default=2026, help="case generation seed")
    p.add_argument("--sample-seed", type=int, default=0, help="sampling noise seed")
    p.add_argument("--steps", type=int, default=12, help="Euler steps")
    p.add_argument("--focus", default="off", choices=("off", "training_free"),
                   help="also relocate the editor's attention to the decomposition's focus phrases")
    p.add_argument("--weights", default=None, help="editor weights (default: the shipped file)")
    p.add_argument("--out", default="out", help="folder for the PNG")
    args = p.parse_args(argv)

    import torch

    from ..image_grid import save_image_grid
    from .cogniedit_editor import CogniEditEditor
    from .decomposer import shipped_backend
    from .editor import load_default_editor
    from .render import render_scene
    from .scorer import aggregate, score_edit

    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    editor = load_default_editor(args.weights, steps=args.steps)
    backend = shipped_backend()
    cogniedit = CogniEditEditor(editor, decompose=True, decomposer=backend, focus=args.focus)
    meta = editor.metadata
    print(f"editor: {meta.get('version')} ({editor.num_parameters() / 1e6:.2f} M parameters); decomposer: "
          f"{backend.backend.model_path}")
    cases = _cases(args.n, args.seed)
    sources = np.stack([render_scene(c.source) for c in cases])
    targets = np.stack([render_scene(c.target) for c in cases])
    instructions = [c.instruction for c in cases]
    plain = editor.edit(sources, instructions, seed=args.sample_seed)
    decompositions = cogniedit._decompositions(sources, instructions)
    checks = list(cogniedit.last_checks) or [None] * len(cases)
    edited = cogniedit.edit(sources, instructions, seed=args.sample_seed)  # the decomposer's answers are reused
    plain_scores = [score_edit(img, case) for img, case in zip(plain, cases)]
    scores = [score_edit(img, case) for img, case in zip(edited, cases)]

    rows = []
    for case, d, check, a, b, pi, ci, ti in zip(cases, decompositions, checks, plain_scores, scores, plain, edited,
                                                targets):
        verdict = f"plain {'OK' if a.success else 'X'} / CogniEdit {'OK' if b.success else 'X'}"
        print(f"\n[{case.phrasing}, {case.kind}] {case.instruction!r}\n  {verdict}; the editor got {d.enriched_instruction!r}")
        print(_stages(d, check))
        rows.append(((render_scene(case.source), pi, ci, ti), f"{verdict}: {case.instruction}",
                     (0, 120, 0) if b.success else (180, 0, 0)))
    print(f"\n{'':12s} {'n':>3s} {'plain':>7s} {'CogniEdit':>10s}")
    plain_m, cog_m = aggregate(plain_scores), aggregate(scores)
    for phrasing in ("paraphrase", "reasoning"):
        idx = [i for i, c in enumerate(cases) if c.phrasing == phrasing]
        if idx:
            a = np.mean([plain_scores[i].success for i in idx])
            b = np.mean([scores[i].success for i in idx])
            print(f"{phrasing:12s} {len(idx):3d} {a:7.2f} {b:10.2f}")
    print(f"{'all':12s} {len(cases):3d} {plain_m['success']:7.2f} {cog_m['success']:10.2f}")
    per_case = backend.seconds_per_call()
    png = Path(args.out) / "shapeedit_demo.png"
    save_image_grid(png, ("source", "plain", "CogniEdit", "target"), rows, 48 * 3)
    print(f"\nwrote {png} (rows: source | plain | CogniEdit | target); decomposer "
          f"{per_case if per_case is None else round(per_case, 2)} s/case; {time.time() - start:.1f} s in all")
    return {"plain": plain_m, "cogniedit": cog_m}


if __name__ == "__main__":
    main()
