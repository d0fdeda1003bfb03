"""Train the ShapeEdit editor from scratch by supervised flow matching on generated edit pairs.

    python -m cogniedit.shapes.editor.train --out cogniedit/shapes/weights/shapeedit_editor.safetensors

x0 = target render, reference = source render, text = instruction; x_sigma = sigma*noise + (1-sigma)*x0; the
transformer predicts x0 (loss: MSE on x0, tokens that the edit changes weighted up). Fresh cases every chunk
(deterministic from --seed). The output file is rewritten atomically at every checkpoint, so a usable editor exists
while training runs; the last write holds the final EMA weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .config import EditorConfig
from .latent import images_to_tokens
from .model import new_editor
from .text import TextVocab
from .weights import VERSION, save_editor

DEFAULTS = dict(steps=7000, batch=48, lr=1e-3, warmup=300, seed=0, chunk=3072, ckpt_every=500, eval_cases=96)


def lr_at(step: int, total: int, base: float, warmup: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine to base/10 over the steps (or over the time budget, if that runs out first)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_sigmas(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Logit-normal(0, 1) sigmas, 10% uniform (so the ends are trained too)."""
    logit = torch.sigmoid(torch.randn(batch, generator=generator))
    uniform = torch.rand(batch, generator=generator)
    pick = torch.rand(batch, generator=generator) < 0.1
    return torch.where(pick, uniform, logit).clamp(1e-3, 1.0)


class Chunks:
    """Fresh rendered pairs, ``chunk`` at a time, deterministic per chunk index."""

    def __init__(self, pair_fn, chunk: int, seed: int):
        self.pair_fn, self.chunk, self.seed = pair_fn, chunk, seed
        self.index, self.pos, self.data = -1, 0, None

    def next(self, batch: int):
        if self.data is None or self.pos + batch > self.chunk:
            self.index += 1
            src, tgt, instr = self.pair_fn(self.chunk, self.seed * 1_000_003 + self.index)
            order = np.random.default_rng(self.seed + self.index).permutation(len(instr))
            self.data = (images_to_tokens(src[order]), images_to_tokens(tgt[order]), [instr[i] for i in order])
            self.pos = 0
        s = slice(self.pos, self.pos + batch)
        self.pos += batch
        return self.data[0][s], self.data[1][s], self.data[2][s]


def flow_matching_loss(editor, ref, x0, ids, mask, generator, change_weight: float = 4.0):
    b = x0.shape[0]
    sigma = sample_sigmas(b, generator)
    noise = torch.randn(x0.shape, generator=generator)
    s = sigma.view(-1, 1, 1)
    x = s * noise + (1 - s) * x0
    emb, text_mask = editor.encode_ids(ids, mask)
    pred = editor.predict_x0(x, sigma, emb, text_mask, ref)
    changed = ((x0 - ref).abs().amax(dim=-1, keepdim=True) > 0.05).float()  # tokens the edit touches
    weight = 1.0 + change_weight * changed
    return ((pred - x0) ** 2 * weight).mean()


def evaluate(editor, pair_fn, n: int, seed: int, score_fn=None, steps: int = 12) -> dict:
    """Success rate on ``n`` held-out cases: ``score_fn(outputs, targets, instructions) -> [bool]`` or, without
    one, pixel agreement with the target render."""
    src, tgt, instr = pair_fn(n, seed)
    outs = np.concatenate([editor.edit(src[i:i + 64], instr[i:i + 64], seed=i, steps=steps) for i in range(0, n, 64)])
    far = np.abs(outs.astype(int) - tgt.astype(int)).max(-1) > 60
    cells = far.reshape(n, 3, 16, 3, 16).mean((2, 4))
    # proxy: every cell matches the canonical target render (stricter than the scorer for adds)
    result = {"pixel_agree": float(1 - far.mean()), "cells_exact": float((cells < 0.08).all((1, 2)).mean())}
    if score_fn is not None:
        try:
            result["success"] = float(np.mean(score_fn(outs, seed, n)))
        except Exception as exc:  # the scorer is optional while training; never lose a run to it
            result["scorer_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return result


def world_score_fn(outs, seed, n):
    from ..cases import generate_cases
    from ..scorer import score_edit

    cases = generate_cases(n, seed)
    return [score_edit(o, c).success for o, c in zip(outs, cases)]


def train(out, steps, batch, lr, warmup, seed, chunk, ckpt_every, eval_cases, config=None, pair_fn=None,
          vocab_texts=None, score_fn=None, threads=2, command="", log=print, init_from=None, stop_after=None,
          max_minutes=None, schedule_minutes=None):
    """``init_from``: continue from an editor file's weights (its config and vocabulary; fresh optimizer).
    ``stop_after``: stop (with a checkpoint) after this many steps of the ``steps``-step schedule.
    ``max_minutes``: also stop, with a checkpoint, when this much wall time has passed (a safety net on a busy
    machine; the schedule stays step-based, so a run that finishes is deterministic for its seed).
    ``schedule_minutes``: a wall-time budget the learning-rate schedule also follows (cosine over whichever of
    steps / time runs out first) and that ends the run: on a machine shared with other jobs the run still
    decays its learning rate and finishes in time, at the cost of bit-reproducibility (``steps_done`` is recorded;
    rerun with ``--steps <steps_done>`` for a step-based schedule of the same length)."""
    torch.set_num_threads(threads)
    if pair_fn is None:
        from .data import world_instructions, world_pairs

        pair_fn, vocab_texts, score_fn = world_pairs, world_instructions(), world_score_fn
    if init_from is not None:
        from .weights import load_editor

        editor = load_editor(init_from).train()
        config, vocab = editor.config, editor.vocab
    else:
        vocab = TextVocab.from_texts(vocab_texts)
        config = config or EditorConfig(text_vocab_rows=vocab.size)
        config = EditorConfig(**{**config.__dict__, "text_vocab_rows": vocab.size})
        editor = new_editor(config, vocab, seed=seed)
    ema = copy.deepcopy(editor).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = [p for p in editor.parameters() if p.requires_grad]
    decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    log(f"editor: {editor.num_parameters()/1e6:.2f} M parameters, vocab {vocab.size} rows, config {config.to_json()}")
    generator = torch.Generator().manual_seed(seed)
    chunks = Chunks(pair_fn, chunk, seed)
    start, last_loss = time.time(), []
    base_meta = {"training_command": command, "seed": str(seed), "trained_by": VERSION}
    if init_from is not None:
        history = editor.metadata
        base_meta["initialised_from"] = json.dumps({k: history.get(k) for k in (
            "training_command", "seed", "steps_done", "steps_planned", "train_minutes", "initialised_from")})

    def checkpoint(step, final=False):
        metrics = evaluate(ema, pair_fn, eval_cases, seed=987_654, score_fn=score_fn) if eval_cases else {}
        meta = {**base_meta, "steps_done": str(step), "steps_planned": str(steps), "final": str(final),
                "train_minutes": f"{(time.time() - start) / 60:.1f}", "heldout_metrics": json.dumps(metrics)}
        save_editor(ema, out, meta)
        log(f"checkpoint step {step} ({(time.time()-start)/60:.1f} min): {metrics} -> {out}")

    last = steps if stop_after is None else min(steps, stop_after)
    for step in range(last):
        time_progress = 0.0 if schedule_minutes is None else (time.time() - start) / (schedule_minutes * 60)
        if time_progress >= 1.0 or (max_minutes is not None and time.time() - start > max_minutes * 60):
            log(f"time budget of {max_minutes} min reached after {step} steps; stopping")
            last = step
            break
        ref, x0, instr = chunks.next(batch)
        ids, mask = editor.tokenize(instr)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, time_progress)
        loss = flow_matching_loss(editor, ref, x0, ids, mask, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), editor.parameters()):
                pe.lerp_(pm, 1 - d)
        last_loss.append(loss.item())
        if (step + 1) % 50 == 0:
            el = time.time() - start
            log(f"step {step+1}/{steps} loss {np.mean(last_loss):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{el/(step+1):.3f} s/step eta {el/(step+1)*(steps-step-1)/60:.1f} min")
            last_loss = []
        if (step + 1) % ckpt_every == 0 and step + 1 < last:
            checkpoint(step + 1)
    checkpoint(last, final=last == steps)
    return ema


def portable_arg(arg: str) -> str:
    """An absolute path as its file name: the command stored in a shared weights file names no machine's folders."""
    return Path(arg).name if Path(arg).is_absolute() else arg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="weights file to write (safetensors)")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the shipped run used 2)")
    p.add_argument("--layers", type=int, default=EditorConfig.num_layers)
    p.add_argument("--heads", type=int, default=EditorConfig.num_attention_heads)
    p.add_argument("--init-from", default=None, help="continue from this editor file (fresh optimizer)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of the schedule")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--schedule-minutes", type=float, default=None,
                   help="wall-time budget that the LR schedule also follows and that ends the run (busy machines)")
    args = p.parse_args(argv)
    command = "python -m cogniedit.shapes.editor.train " + " ".join(
        shlex.quote(portable_arg(a)) for a in (argv or sys.argv[1:]))
    config = EditorConfig(num_layers=args.layers, num_attention_heads=args.heads)
    train(args.out, args.steps, args.batch, args.lr, args.warmup, args.seed, args.chunk, args.ckpt_every,
          args.eval_cases, config=config, threads=args.threads, command=command, init_from=args.init_from,
          stop_after=args.stop_after, max_minutes=args.max_minutes,
          schedule_minutes=args.schedule_minutes, log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))


if __name__ == "__main__":
    main()
