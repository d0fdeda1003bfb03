"""Why training-free Token Focus costs accuracy on ShapeEdit, and which design (if any) helps: paired screens of focus
settings against no focus, and the per-block attention mass on the focus tokens on the cases focus wins and loses.

    python -m cogniedit.shapes.focus_study screen --n 200 --seed 3 --arm plain:focus_strength=1 \\
        --arm sharpen:focus_shape=sharpen,focus_strength=2 --results screen.json
    python -m cogniedit.shapes.focus_study mass --n 200 --seed 3 --arm plain:focus_strength=1 --results mass.json

Every arm is the CogniEdit editor with training-free focus and the given ``--editor-option``-style options, compared
case by case with the same editor without focus (same cases, edit seed, steps): cases only the arm gets right, only
no focus gets right, and the two-sided sign test on those. Docs: docs/focus-study.md.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ..atomic_io import atomic_write
from .cases import generate_cases
from .evaluate import sign_test_p
from .render import render_scene
from .scorer import aggregate, score_edit


def paired(base: list[bool], arm: list[bool]) -> dict:
    """Paired counts of two success lists over the same cases, with the sign test."""
    wins = sum(1 for b, a in zip(base, arm) if a and not b)
    losses = sum(1 for b, a in zip(base, arm) if b and not a)
    return {"wins": wins, "losses": losses, "delta_points": 100.0 * (sum(arm) - sum(base)) / max(len(base), 1),
            "p": sign_test_p(wins, losses)}


def parse_arm(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` (values parsed as JSON when they can be) -> (name, options)."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--arm {text!r}: write name:key=value,key=value")
        try:
            options[key] = value if key in TEXT_OPTIONS else json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name.strip(), options


TEXT_OPTIONS = ("focus_blocks", "focus_kinds", "focus_shape", "focus_mode")  # "1" is a block spec, not a number


def edit_all(editor, cases, batch_size: int = 32, seed: int = 0, probe: bool = False):
    """Edit every case (as ``evaluate.run_cases``: edit seed ``seed + batch start``); returns the scores and, with
    ``probe``, per case ``{block: (mass without, mass with focus)}``, each the mean over the sampling steps."""
    scores, masses = [], []
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        sources = np.stack([render_scene(c.source, c.world) for c in batch])
        if probe:
            editor.probe = True
        edited = np.asarray(editor.edit(sources, [c.instruction for c in batch], seed=seed + start))
        scores.extend(score_edit(img, case) for img, case in zip(edited, batch))
        if probe:
            masses.extend(_per_block(editor.last_records, len(batch)))
    return scores, masses


def _per_block(records, n: int) -> list[dict]:
    sums: list[dict] = [{} for _ in range(n)]
    for record in records:
        for i in range(n):
            entry = sums[i].setdefault(record["block_index"], [0.0, 0.0, 0])
            entry[0] += record["mass_base"][i]
            entry[1] += record["mass"][i]
            entry[2] += 1
    return [{b: (s0 / c, s1 / c) for b, (s0, s1, c) in per.items()} for per in sums]


def localisation(editor, cases, blocks: list[int], batch_size: int = 32) -> dict:
    """Per block: the mean over cases of (attention on all focus phrases in the touched cells' tokens) / (its mean
    over the image), without and with focus (the same calls; ``attention_maps``), and the mean image share."""
    from .editor.latent import GRID

    out = {}
    for block in blocks:
        ratios, shares = [[], []], [[], []]
        for start in range(0, len(cases), batch_size):
            batch = cases[start:start + batch_size]
            sources = np.stack([render_scene(c.source, c.world) for c in batch])
            editor.attention_maps = {"blocks": str(block)}
            editor.edit(sources, [c.instruction for c in batch], seed=start)
            maps = editor.last_maps
            for which, tensor in enumerate((maps.base, maps.focused)):
                union = tensor.sum(1)                                                       # [B, rows, cols]
                for i, case in enumerate(batch):
                    cell_tokens = GRID // case.world.grid
                    cells = [union[i, r * cell_tokens:(r + 1) * cell_tokens, c * cell_tokens:(c + 1) * cell_tokens]
                             for r, c in case.touched]
                    mean = float(union[i].mean())
                    if not cells or mean <= 0:
                        continue
                    ratios[which].append(float(torch.stack(cells).mean()) / mean)
                    shares[which].append(mean)
        editor.attention_maps = None
        out[block] = {"ratio_base": float(np.mean(ratios[0])), "ratio_focus": float(np.mean(ratios[1])),
                      "share_base": float(np.mean(shares[0])), "share_focus": float(np.mean(shares[1])),
                      "cases": len(ratios[0])}
    return out


def text_mass(base_editor, cases, batch_size: int = 32, steps: int = 12) -> dict:
    """Per block, the mean attention the noisy-image rows put on all text tokens (no focus): what the focus tokens'
    share is part of, and so how much of a plain bias's extra focus mass must come from the image keys."""
    from ..focus.diffusers_adapter import FocusState, install_focus_processors, restore_processors
    from ..sampling.schedule import flow_sigmas

    model = getattr(base_editor, "model", base_editor)
    transformer = model.transformer
    sums: dict = {}
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        sources = np.stack([render_scene(c.source, c.world) for c in batch])
        state = FocusState(None, 0.0, sample_sigmas=flow_sigmas(steps, 1.0).tolist(), probe=True,
                           n_reference=int(model.image_to_latent(sources[:1]).shape[1]))

        def all_text(editor, ids, mask):
            state.weights = mask[:, editor.prefix_len:].float()
            return {}

        original = install_focus_processors(transformer, state)
        try:
            model.edit(sources, [c.instruction for c in batch], seed=start, steps=steps, focus=all_text)
        finally:
            restore_processors(transformer, original)
        for record in state.records:
            entry = sums.setdefault(record["block_index"], [0.0, 0])
            entry[0] += sum(record["mass_base"])
            entry[1] += len(record["mass_base"])
    return {block: total / count for block, (total, count) in sorted(sums.items())}


def _load(arm_options: dict, base):
    from .cogniedit_editor import load_cogniedit_editor

    return load_cogniedit_editor(focus="training_free", base=base, **arm_options)


def screen(cases, arms: list[tuple[str, dict]], base_editor, batch_size: int = 32) -> dict:
    """Every arm against no focus on the same cases: metrics, paired counts and sign test, success per kind."""
    reference, _ = edit_all(_load({"focus_strength": 0.0}, base_editor), cases, batch_size)
    ref_ok = [s.success for s in reference]
    rows = {"no focus": {"metrics": aggregate(reference), "success": ref_ok}}
    for name, options in arms:
        scores, _ = edit_all(_load(options, base_editor), cases, batch_size)
        ok = [s.success for s in scores]
        rows[name] = {"options": options, "metrics": aggregate(scores), "success": ok, "paired": paired(ref_ok, ok)}
        print(_row_line(name, rows[name]), file=sys.stderr, flush=True)
    return rows


def mass_study(cases, options: dict, base_editor, batch_size: int = 32) -> dict:
    """Per-block focus-token mass (no-focus run; the focus run without and with its bias) on the cases the arm wins,
    loses, and both get right / wrong, plus the per-block localisation on the wins and losses."""
    plain_scores, plain_mass = edit_all(_load({**options, "focus_strength": 0.0}, base_editor), cases, batch_size,
                                        probe=True)
    focus_editor = _load(options, base_editor)
    focus_scores, focus_mass = edit_all(focus_editor, cases, batch_size, probe=True)
    groups = {"wins": [], "losses": [], "both right": [], "both wrong": []}
    for i, (b, f) in enumerate(zip(plain_scores, focus_scores)):
        key = ("both right" if b.success else "wins") if f.success else ("losses" if b.success else "both wrong")
        groups[key].append(i)
    blocks = sorted({blk for per in plain_mass for blk in per})
    table = {}
    for key, idx in groups.items():
        table[key] = {"cases": len(idx), "kinds": _kinds([cases[i] for i in idx])}
        for blk in blocks:
            with_mass = [focus_mass[i][blk] for i in idx if blk in focus_mass[i]]
            table[key][blk] = {
                "no_focus_run": _mean([plain_mass[i][blk][0] for i in idx if blk in plain_mass[i]]),
                "focus_run_without_bias": _mean([m[0] for m in with_mass]),
                "focus_run_with_bias": _mean([m[1] for m in with_mass])}
    decided = [cases[i] for i in groups["wins"] + groups["losses"]]
    local = {"wins": localisation(focus_editor, [cases[i] for i in groups["wins"]], blocks, batch_size),
             "losses": localisation(focus_editor, [cases[i] for i in groups["losses"]], blocks, batch_size),
             "all decided": localisation(focus_editor, decided, blocks, batch_size) if decided else {}}
    return {"options": options, "groups": table, "localisation": local,
            "paired": paired([s.success for s in plain_scores], [s.success for s in focus_scores])}


def _kinds(cases) -> dict:
    counts: dict = {}
    for c in cases:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    return counts


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None


def _row_line(name: str, row: dict) -> str:
    m = row["metrics"]
    line = f"{name:28s} success {100 * m['success']:5.1f}%  preserved {100 * m['preserved']:5.1f}%"
    if "paired" in row:
        p = row["paired"]
        line += f"  {p['delta_points']:+5.1f} pts  wins {p['wins']:3d}  losses {p['losses']:3d}  p={p['p']:.3f}"
    kinds = m.get("per_kind", {})
    return line + "  " + " ".join(f"{k} {100 * v['success']:.1f}" for k, v in kinds.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cogniedit.shapes.focus_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("screen", "mass", "text-mass", "localise"))
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, required=True,
                   help="case seed; screens use seeds other than the held-out evaluation seeds (docs/focus-study.md)")
    p.add_argument("--arm", action="append", default=[], help="name:key=value,... (CogniEdit editor options)")
    p.add_argument("--kinds", default=None, help="comma-separated case kinds (default: all four)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", default=None, help="write everything as JSON here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from .editor import load_default_editor

    base_editor = load_default_editor()
    cases = generate_cases(args.n, args.seed, args.kinds.split(",") if args.kinds else None)
    arms = [parse_arm(a) for a in args.arm]
    if args.what == "screen":
        result = screen(cases, arms, base_editor, args.batch_size)
        print(_row_line("no focus", result["no focus"]))
        for name in (n for n in result if n != "no focus"):
            print(_row_line(name, result[name]))
    elif args.what == "localise":  # per block, on all cases, for the one arm's focus editor
        blocks = list(range(len(getattr(base_editor, "model", base_editor).transformer.transformer_blocks)))
        result = localisation(_load(arms[0][1] if arms else {"focus_strength": 1.0}, base_editor), cases, blocks,
                              args.batch_size)
        print(json.dumps(result))
    elif args.what == "text-mass":
        result = text_mass(base_editor, cases, args.batch_size)
        print(json.dumps(result))
    else:
        if len(arms) != 1:
            raise SystemExit("mass takes exactly one --arm")
        result = mass_study(cases, arms[0][1], base_editor, args.batch_size)
        print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
    if args.results:
        atomic_write(args.results, lambda f: json.dump({"n": args.n, "seed": args.seed, "result": result}, f,
                                                       indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
