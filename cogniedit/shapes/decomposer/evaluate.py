"""The decomposer alone, scored exactly: does its answer, read back into ops, equal each case's ops?

    python -m cogniedit.shapes.decomposer.evaluate --n 500 --phrasing template,paraphrase,reasoning
    python -m cogniedit.shapes.decomposer.evaluate --n 50 --mode backend      # one case at a time, via decompose()

Per phrasing: accuracy (the model's own ``<answer>`` gives the case's ops), malformed answers (no answer in the
editor's grammar), fallbacks (the pack's parser used the rules instead), pipeline accuracy (the instruction the
editor receives, whoever wrote it), seconds per case, and accuracy per edit kind (colour, position, count,
compound). ``--mode backend`` runs every case through
``cogniedit.decompose.decompose`` with the ``transformers_vlm`` backend on the folder, one at a time, exactly as
the editor wrapper and the ComfyUI node do; ``batched`` (default) runs the same prompts through the same model
and parser in batches of ``--batch-size`` (left-padded; faster on a CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .folder import DEFAULT_FOLDER

DEFAULT_SEED = 20261129  # the evaluation command's held-out seed; training seeds start at data.TRAIN_SEED_BASE


def decompose_cases(cases, backend, progress=None, cache=None) -> tuple[list, float]:
    """Decompositions of ``cases`` through ``decompose()`` (one at a time, through ``cache`` when given) and the
    seconds they took."""
    from ...decompose import decompose
    from ..render import render_scene

    started, out = time.perf_counter(), []
    for case in cases:
        out.append(decompose(render_scene(case.source, case.world), case.instruction, backend, cache=cache))
        if progress is not None:
            progress(1)
    return out, time.perf_counter() - started


def decompose_batched(cases, model, processor, batch_size: int = 32) -> tuple[list, float]:
    from ...decompose.parser import decomposition_from_answer
    from ..render import render_scene
    from .infer import generate_answers

    started = time.perf_counter()
    answers = generate_answers(model, processor, [render_scene(c.source, c.world) for c in cases],
                               [c.instruction for c in cases], batch_size=batch_size)
    out = [decomposition_from_answer(a, c.instruction) for a, c in zip(answers, cases)]
    return out, time.perf_counter() - started


def report(cases, decompositions, seconds: float) -> dict:
    from .scoring import correct_by_kind, score_decomposition, summarise

    rows = [score_decomposition(c, d) for c, d in zip(cases, decompositions)]
    summary = summarise(rows)
    summary["correct_by_kind"] = correct_by_kind(cases, rows)
    summary["seconds_per_case"] = seconds / max(1, len(cases))
    return summary


def format_rows(rows: dict) -> str:
    cols = ("n", "correct", "malformed", "fallback", "pipeline_correct", "info_correct", "seconds_per_case")
    lines = ["phrasing    " + "  ".join(f"{c:>16s}" for c in cols)]
    for name, r in rows.items():
        cells = [f"{r['n']:16d}"] + [f"{100 * r[c]:15.1f}%" for c in cols[1:6]] + [f"{r['seconds_per_case']:16.3f}"]
        lines.append(f"{name:11s} " + "  ".join(cells))
    for name, r in rows.items():
        kinds = " / ".join(f"{kind} {100 * share:.1f}%" for kind, share in r.get("correct_by_kind", {}).items())
        if kinds:
            lines.append(f"{name} correct by kind: {kinds}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cogniedit.shapes.decomposer.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=str(DEFAULT_FOLDER))
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--phrasing", default="template,paraphrase,reasoning")
    p.add_argument("--split", default="eval", choices=("train", "eval"))
    p.add_argument("--mode", default="batched", choices=("batched", "backend"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)

    import torch

    from ...atomic_io import atomic_write
    from ..cases import generate_cases
    from .folder import DecomposerFolderError, load_backend

    torch.set_num_threads(args.threads)
    try:
        backend = load_backend(args.folder)
        backend.load()
    except (DecomposerFolderError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = {}
    for phrasing in [s.strip() for s in args.phrasing.split(",") if s.strip()]:
        cases = generate_cases(args.n, args.seed, phrasing=phrasing, split=args.split)
        if args.mode == "backend":
            decompositions, seconds = decompose_cases(cases, backend)
        else:
            decompositions, seconds = decompose_batched(cases, backend.model, backend.processor, args.batch_size)
        rows[phrasing] = report(cases, decompositions, seconds)
        print(f"{phrasing}: {json.dumps(rows[phrasing])}", file=sys.stderr, flush=True)
    print(f"ShapeEdit decomposer {args.folder}: {args.n} cases per phrasing, seed {args.seed}, split {args.split}, "
          f"mode {args.mode}")
    print(format_rows(rows))
    if args.results:
        atomic_write(args.results, lambda f: json.dump({"args": vars(args), "rows": rows}, f, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
