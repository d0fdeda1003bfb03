"""Evaluate an editor on ShapeEdit cases: exact per-kind metrics, a before/after grid, results JSON.

    python -m cogniedit.shapes.evaluate --n 500 --editor default --grid out.png
    python -m cogniedit.shapes.evaluate --cases my_cases.jsonl --editor oracle --results results.json
    python -m cogniedit.shapes.evaluate --n 500 --phrasing paraphrase --decompose on
    python -m cogniedit.shapes.evaluate --compare base.json decompose.json   # paired counts + sign test

Editors: ``default`` (the shipped small editor, ``cogniedit.shapes.editor.load_default_editor``), ``identity``,
``oracle``, or ``package.module:factory`` (called with the editor options, returns an object with
``edit(images, instructions, seed)``). ``--decompose/--focus/--lora`` are passed through to the editor factory as
keyword options, and only when they differ from the default (off); with ``default`` they (and the knobs of
``cogniedit.shapes.cogniedit_editor``, e.g. ``--editor-option focus_strength=2``) wrap the editor in CogniEdit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time

import numpy as np

from ..atomic_io import atomic_write
from ..image_grid import save_image_grid
from .cases import KINDS, PHRASINGS, generate_cases, read_jsonl, write_jsonl
from .phrasing import SPLITS
from .editors import IdentityEditor, OracleEditor
from .render import render_scene
from .scorer import aggregate, score_edit


class EditorUnavailable(RuntimeError):
    pass


def load_editor(name: str, cases, **options):
    """An editor object for ``name`` (see the module docstring)."""
    if name == "identity":
        return IdentityEditor()
    if name == "oracle":
        return OracleEditor(cases)
    if name == "default":
        try:
            from . import editor as editor_package
            from .editor import load_default_editor
        except ImportError as exc:
            raise EditorUnavailable(
                f"the default ShapeEdit editor cannot be imported ({exc}); install the shapes extra "
                "(pip install -e .[shapes]) or pick --editor identity|oracle|module:factory") from exc
        load_errors = (OSError, ValueError) + tuple(
            e for e in (getattr(editor_package, "EditorWeightsError", None),) if isinstance(e, type))
        factory = load_default_editor
        if options:  # --decompose/--focus/--lora (and their --editor-option knobs) wrap the editor in CogniEdit
            from .cogniedit_editor import OPTION_NAMES, load_cogniedit_editor

            if any(key in OPTION_NAMES for key in options):
                factory = load_cogniedit_editor
        try:
            return factory(**options)
        except load_errors as exc:
            raise EditorUnavailable(f"the default ShapeEdit editor did not load: {exc}") from exc
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise EditorUnavailable(f"--editor {name}: cannot import {attr} from {module} ({exc})") from exc
        return factory(**options)
    raise EditorUnavailable(f"unknown editor {name!r}: use default, identity, oracle or package.module:factory")


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="case", file=sys.stderr)
    except ImportError:
        return _Counter(total, desc)


class _Counter:
    def __init__(self, total, desc):
        self.total, self.desc, self.done = total, desc, 0

    def update(self, n):
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self):
        print(file=sys.stderr)


HELD_OUT_SEED = 20261129


def run_cases(editor, cases, batch_size: int = 32, seed: int = 0, progress: bool = True):
    """Edit every case's source render; returns (outputs uint8 [N, H, W, 3], scores)."""
    bar = _progress(len(cases), "editing") if progress else None
    outputs, scores = [], []
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        sources = np.stack([render_scene(c.source, c.world) for c in batch])
        edited = np.asarray(editor.edit(sources, [c.instruction for c in batch], seed=seed + start))
        if edited.shape != sources.shape:
            raise ValueError(f"the editor returned shape {edited.shape} for inputs {sources.shape}; it must keep "
                             "the batch and image size (uint8 [B, H, W, 3])")
        if edited.dtype != np.uint8:
            edited = np.clip(edited.astype(np.float64) * (255.0 if edited.max(initial=0) <= 1.0 else 1.0), 0, 255)
            edited = edited.round().astype(np.uint8)
        outputs.append(edited)
        scores.extend(score_edit(img, case) for img, case in zip(edited, batch))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return (np.concatenate(outputs) if outputs else np.zeros((0, 1, 1, 3), np.uint8)), scores


def format_table(metrics: dict) -> str:
    """Plain-text table: one row overall, one per kind."""
    cols = ("n", "success", "colour_acc", "position_acc", "count_acc", "preserved", "psnr", "ssim", "reward")

    def cell(key, value):
        if value is None:
            return "-"
        if key == "n":
            return str(value)
        if key == "psnr":
            return f"{value:.1f}"
        if key in ("ssim", "reward"):
            return f"{value:.4f}" if key == "ssim" else f"{value:.3f}"
        return f"{100 * value:.1f}%"

    rows = [("overall", metrics)] + list(metrics.get("per_kind", {}).items())
    table = [["kind", *cols]] + [[name, *(cell(k, m.get(k)) for k in cols)] for name, m in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def save_grid(path, cases, outputs, scores, rows: int = 16, scale: int = 3) -> None:
    """PNG grid, one case a row: source | edited | target, caption = instruction and verdict (atomic write)."""
    rows = min(rows, len(cases))
    if rows == 0:
        raise ValueError("no cases to draw")
    lines = []
    for case, out, score in zip(cases[:rows], outputs, scores):
        tiles = (render_scene(case.source, case.world), out, render_scene(case.target, case.world))
        colour = (0, 120, 0) if score.success else (180, 0, 0)
        lines.append((tiles, ("OK " if score.success else "X  ") + case.instruction, colour))
    save_image_grid(path, ("source", "edited", "target"), lines, cases[0].world.image_size * scale)


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def sign_test_p(only_a: int, only_b: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven if either arm wins a discordant
    case with probability 1/2."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def compare_results(path_a, path_b) -> dict:
    """Paired comparison of two results files of the same cases: cases only A / only B gets right, sign test."""
    runs = []
    for path in (path_a, path_b):
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f)["cases"])
    a, b = runs
    keys = [[(c["case_id"], c["instruction"]) for c in run] for run in runs]
    if keys[0] != keys[1]:
        raise ValueError(f"{path_a} and {path_b} hold different cases; compare runs of the same cases")
    only_a = sum(x["success"] and not y["success"] for x, y in zip(a, b))
    only_b = sum(y["success"] and not x["success"] for x, y in zip(a, b))
    return {"n": len(a), "success_a": sum(x["success"] for x in a) / len(a),
            "success_b": sum(y["success"] for y in b) / len(b), "only_a": only_a, "only_b": only_b,
            "sign_test_p": sign_test_p(only_a, only_b)}


def editor_options(args) -> dict:
    """The options for the editor factory; only the ones that differ from the defaults."""
    options = {}
    if args.decompose in ("on", "mllm"):
        options["decompose"] = True
    if args.decompose == "mllm":  # the shipped decomposer model (cogniedit.shapes.decomposer)
        options["decomposer"] = "mllm"
    if args.focus != "off":
        options["focus"] = args.focus
    if args.lora:
        options["lora"] = args.lora
    for item in args.editor_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--editor-option {item!r}: write key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cogniedit.shapes.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                     help="compare two --results files of the same cases (paired counts, sign test) and exit")
    src.add_argument("--cases", help="case file (JSONL, docs/shapeedit.md); default: generate --n cases")
    src.add_argument("--n", type=int, default=500, help="number of cases to generate (default 500)")
    # The editor's training draws its cases from seeds k*1_000_003 + chunk (small chunk numbers), so the
    # default evaluation seed is far from those: scores are on cases the editor never saw.
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                   help=f"seed of the generated cases (default {HELD_OUT_SEED}, never used in training)")
    p.add_argument("--kinds", default=None, help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--phrasing", choices=PHRASINGS + ("mixed",), default="template",
                   help="wording of generated cases (default template: the editor's grammar)")
    p.add_argument("--split", choices=SPLITS, default="eval",
                   help="wording pool of paraphrase/reasoning cases (default eval: held-out verbs and frames)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    p.add_argument("--editor", default="default", help="default | identity | oracle | package.module:factory")
    p.add_argument("--decompose", choices=("on", "off", "mllm"), default="off",
                   help="instruction decomposition: on = rules, mllm = the shipped decomposer model")
    p.add_argument("--focus", choices=("off", "training_free", "learned"), default="off", help="token focus")
    p.add_argument("--lora", default=None, help="LoRA weights (safetensors) for the editor")
    p.add_argument("--editor-option", action="append", metavar="KEY=VALUE",
                   help="extra keyword option for the editor factory (value parsed as JSON when it can be)")
    p.add_argument("--edit-seed", type=int, default=0, help="sampling seed of the editor (default 0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grid", default=None, help="write a source|edited|target PNG grid here")
    p.add_argument("--grid-rows", type=int, default=16)
    p.add_argument("--results", default=None, help="write metrics and per-case scores as JSON here")
    p.add_argument("--write-cases", default=None, help="also write the evaluated cases as JSONL here")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare:
        try:
            c = compare_results(*args.compare)
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{c['n']} cases: A {100 * c['success_a']:.1f}% / B {100 * c['success_b']:.1f}% success; "
              f"only A right {c['only_a']}, only B right {c['only_b']}, sign test p = {c['sign_test_p']:.3g}")
        return 0
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else None
    try:
        if args.cases:
            cases = read_jsonl(args.cases)
            if kinds:
                cases = [c for c in cases if c.kind in kinds]
        else:
            cases = generate_cases(args.n if args.limit is None else min(args.n, args.limit), args.seed, kinds,
                                   phrasing=args.phrasing, split=args.split)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cases = cases[:args.limit] if args.limit is not None else cases
    if not cases:
        print("error: no cases to evaluate", file=sys.stderr)
        return 2
    try:
        editor = load_editor(args.editor, cases, **editor_options(args))
    except EditorUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    outputs, scores = run_cases(editor, cases, args.batch_size, args.edit_seed, progress=not args.no_progress)
    elapsed = time.perf_counter() - started
    metrics = aggregate(scores)
    phrasings = sorted({c.phrasing for c in cases})
    print(f"ShapeEdit: {len(cases)} cases ({', '.join(phrasings)}), editor {args.editor}")
    print(format_table(metrics))
    decomposer = None
    if args.decompose == "mllm":
        from .decomposer import decomposer_summary
        from .decomposer.answer_check import CHOICES as CHECK_CHOICES

        decomposer = decomposer_summary(cases, elapsed, getattr(editor, "decompose_cache", None))
        print(decomposer["line"])
        counts = getattr(editor, "check_counts", None) if getattr(editor, "decompose_check", False) else None
        if counts is not None:  # what the grammar check gave the editor (decomposer.answer_check)
            decomposer["check"] = {choice: counts.get(choice, 0) for choice in CHECK_CHOICES}
            print("grammar check: " + ", ".join(f"{k} {v}" for k, v in decomposer["check"].items())
                  + " (explicit: the rules' text; answer: the model's; beam: a beam of the model's where its "
                  "answer did not read; fallback: the rules', no answer read)")
    if args.grid:
        save_grid(args.grid, cases, outputs, scores, rows=args.grid_rows)
        print(f"grid -> {args.grid}")
    if args.write_cases:
        write_jsonl(args.write_cases, cases)
        print(f"cases -> {args.write_cases}")
    if args.results:
        payload = {"editor": args.editor, "options": editor_options(args), "metrics": metrics, "decomposer": decomposer,
                   "phrasing": args.phrasing if not args.cases else phrasings, "split": args.split,
                   "cases": [{**s.to_dict(), "instruction": c.instruction, "phrasing": c.phrasing}
                             for s, c in zip(scores, cases)]}
        atomic_write(args.results, lambda f: json.dump(_json_safe(payload), f, indent=1))
        print(f"results -> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
