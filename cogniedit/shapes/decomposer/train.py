"""Train the ShapeEdit decomposer from nothing: a small stock Qwen2.5-VL that reads a scene and an instruction and
writes the four stages (docs/shapeedit-decomposer.md).

    python -m cogniedit.shapes.decomposer.train                 # writes cogniedit/shapes/weights/decomposer/
    python -m cogniedit.shapes.decomposer.train --steps 40 --out out/dec --state out/dec_state.safetensors

Supervised next-token loss on the answer tokens, fresh generated cases every step (a pure function of the seed
and the step), AdamW with warm-up and cosine decay. Every ``--ckpt-every`` steps the training state (weights,
optimizer moments, step) is written atomically to ``--state``; running the same command again resumes from it
exactly (``--fresh`` starts over). The exported model folder is rewritten at every check, so a usable decomposer
exists while training runs. One CPU thread by default: on a busy 2-core machine two threads are slower.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ...safetensors_io import save_safetensors_atomic
from ..editor.train import lr_at
from . import data as D
from .config import DecomposerDims, build_processor, load_tokenizer, new_model, write_tokenizer
from .folder import DEFAULT_FOLDER, save_folder
from .model import CellProbe, batch_loss, export_model, to_training_model
from .phrasings import PHRASINGS, available_phrasings, case_source, parse_mix

# weight_from: the stage from which answer tokens weigh answer_weight (the <info> scene list is learnt early and
# is then nearly free; the errors are in <think>, where the instruction is grounded on the scene).
DEFAULTS = dict(steps=8000, batch=24, lr=3e-3, warmup=30, seed=0, ckpt_every=50, check_every=1000,
                check_cases=24, dropout=0.08, answer_weight=2.0, weight_from="think", probe_weight=1.0,
                vocab_cases=1500, mix="template=1,paraphrase=1,reasoning=2")
STATE_FORMAT = "cogniedit.shapes.decomposer.train_state"
CHECK_SEED = 777_777  # held-out cases of the in-training check (training seeds start at data.TRAIN_SEED_BASE)


def _processor(workdir: Path, system_turn: bool):
    tok_dir = workdir / "tokenizer"
    if not (tok_dir / "vocab.json").is_file():
        write_tokenizer(tok_dir)
    return build_processor(load_tokenizer(tok_dir), system_turn)


def _optimizer(model, lr):
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98))


def save_state(path, model, opt, step: int, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for index, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    save_safetensors_atomic(path, tensors, {"format": STATE_FORMAT, "step": str(step), "meta": json.dumps(meta)})


def load_state(path) -> tuple[dict, dict, int, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
        if header.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a decomposer training state; delete it or pass --fresh")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    return model_state, opt_state, int(header["step"]), json.loads(header["meta"])


def check(model, processor, phrasings, n: int, seed: int = CHECK_SEED) -> dict:
    """Held-out decomposition accuracy per phrasing, on the exported stock model, through the pack's parser."""
    from ...decompose.parser import decomposition_from_answer
    from ..render import render_scene
    from .infer import generate_answers
    from .scoring import score_decomposition, summarise

    stock = export_model(model)
    result = {}
    for phrasing in phrasings:
        cases = case_source(phrasing, split="eval")(n, seed)
        answers = generate_answers(stock, processor, [render_scene(c.source, c.world) for c in cases],
                                   [c.instruction for c in cases])
        rows = [score_decomposition(c, decomposition_from_answer(a, c.instruction)) for c, a in zip(cases, answers)]
        result[phrasing] = summarise(rows)
    return result


def _progress(total: int, initial: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc="decomposer", unit="step", file=sys.stderr, mininterval=5)
    except ImportError:
        return None


def train(out=DEFAULT_FOLDER, state_path=None, steps=DEFAULTS["steps"], batch=DEFAULTS["batch"], lr=DEFAULTS["lr"],
          warmup=DEFAULTS["warmup"], seed=DEFAULTS["seed"], ckpt_every=DEFAULTS["ckpt_every"],
          check_every=DEFAULTS["check_every"], check_cases=DEFAULTS["check_cases"], dropout=DEFAULTS["dropout"],
          answer_weight=DEFAULTS["answer_weight"], weight_from=DEFAULTS["weight_from"],
          probe_weight=DEFAULTS["probe_weight"],
          vocab_cases=DEFAULTS["vocab_cases"], phrasing="mixed", mix=DEFAULTS["mix"],
          dims: DecomposerDims = DecomposerDims(), threads: int = 1, fresh: bool = False, stop_after=None,
          max_minutes=None, command: str = "", log=print, progress: bool = True, system_turn: bool = False):
    """Returns the training-side model. ``stop_after``: stop (with a state checkpoint) after this many steps of
    the ``steps``-step schedule; ``max_minutes``: the same when this much wall time has passed."""
    torch.set_num_threads(threads)
    out = Path(out)
    state_path = Path(state_path) if state_path else Path("out") / "decomposer_train_state.safetensors"
    workdir = state_path.parent / (state_path.stem + "_work")
    processor = _processor(workdir, system_turn)
    encoder = D.Encoder(processor)
    source = case_source(phrasing, split="train", weights=parse_mix(mix))
    phrasings = available_phrasings() if phrasing == "mixed" else (phrasing,)

    meta = {"dims": dims.to_json(), "phrasing": phrasing, "mix": mix, "seed": seed, "steps": steps, "batch": batch,
            "command": command, "lr": lr, "dropout": dropout, "answer_weight": answer_weight,
            "weight_from": weight_from,
            "system_turn": system_turn, "probe_weight": probe_weight}
    start_step, resumed = 0, None
    if state_path.is_file() and not fresh:
        resumed = load_state(state_path)
        saved = {k: v for k, v in resumed[3].items() if k != "command"}
        if saved != {k: v for k, v in meta.items() if k != "command"}:
            raise SystemExit(f"{state_path} was written by another configuration ({resumed[3].get('command')!r}); "
                             "rerun that command to resume it, or pass --fresh to start over")
        vocab = resumed[0]["model.language_model.embed_tokens.vocab"]
    else:
        vocab_seed = D.TRAIN_SEED_BASE - 1 - seed
        vocab = D.vocabulary(encoder, [c for p in phrasings
                                       for c in case_source(p, split="train")(vocab_cases, vocab_seed)])
    model = to_training_model(new_model(dims, seed), vocab, seed)
    from ..scene import DEFAULT_WORLD

    model.cell_probe = CellProbe(dims.hidden, len(DEFAULT_WORLD.colours), len(DEFAULT_WORLD.shapes))
    opt = _optimizer(model, lr)
    if resumed is not None:
        model.load_state_dict(resumed[0])
        state = opt.state_dict()
        state["state"] = resumed[1]
        opt.load_state_dict(state)
        start_step = resumed[2]
        log(f"resuming {state_path} at step {start_step}/{steps}")
    model.train()
    log(f"decomposer: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M trained parameters "
        f"(vocabulary {len(vocab)} ids), {steps} steps of {batch}, phrasing {phrasing}")

    if weight_from not in ("info", "think", "answer", "object"):
        raise SystemExit(f"--weight-from {weight_from!r}: use one of info, think, answer, object")
    marker = encoder.tokenizer(f"<{weight_from}>")["input_ids"]
    started, losses, checks = time.time(), [], {}
    bar = _progress(steps, start_step) if progress else None
    last = steps if stop_after is None else min(steps, stop_after)

    def export(step, final=False):
        info = {**meta, "steps_done": step, "final": final, "heldout_check": checks,
                "train_minutes_this_run": round((time.time() - started) / 60, 1)}
        save_folder(export_model(model), processor, out, info)

    step = start_step
    while step < last:
        if max_minutes is not None and time.time() - started > max_minutes * 60:
            log(f"time budget of {max_minutes} min reached at step {step}; state saved, rerun to resume")
            break
        cases = D.batch_cases(step, batch, seed, source)
        rng = np.random.default_rng([seed, step, 7])
        samples = D.encode_cases(encoder, cases)
        batch_data = D.collate(samples, encoder, model.model.get_rope_index, dropout, rng, answer_weight, marker)
        batch_data.update(D.cell_labels(cases))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = batch_loss(model, batch_data, model.cell_probe if probe_weight else None, probe_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % 50 == 0:
            el = time.time() - started
            log(f"step {step}/{steps} loss {np.mean(losses[-50:]):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{el / max(1, step - start_step):.2f} s/step")
        if step % ckpt_every == 0 or step == last:
            save_state(state_path, model, opt, step, meta)
        if check_every and (step % check_every == 0 or step == steps) and check_cases:
            model.eval()
            checks = {"step": step, **check(model, processor, phrasings, check_cases)}
            model.train()
            log(f"check at step {step}: " + json.dumps(checks))
            export(step, final=step == steps)
    if bar is not None:
        bar.close()
    if step == steps and not (check_every and check_cases):
        export(step, final=True)
    elif step < steps:
        save_state(state_path, model, opt, step, meta)
        export(step)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cogniedit.shapes.decomposer.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_FOLDER), help="model folder to write (default: the shipped one)")
    p.add_argument("--state", default="out/decomposer_train_state.safetensors",
                   help="training state file (resumed when it exists)")
    helps = {"mix": "share of each phrasing in a mixed batch (default %(default)s)"}
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value, help=helps.get(key))
    p.add_argument("--phrasing", default="mixed", choices=("mixed",) + PHRASINGS)
    p.add_argument("--layers", type=int, default=DecomposerDims.layers)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state and start over")
    p.add_argument("--stop-after", type=int, default=None, help="stop (state saved) after this many steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (state saved) after this wall time")
    p.add_argument("--system-turn", action="store_true",
                   help="train with the system prompt in the chat template (default: without, see config.py)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        parse_mix(args.mix)
    except ValueError as exc:
        p.error(str(exc))  # one line and exit 2, before any model is built
    command = "python -m cogniedit.shapes.decomposer.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    kwargs = {k: getattr(args, k) for k in DEFAULTS}
    train(out=args.out, state_path=args.state, phrasing=args.phrasing, dims=DecomposerDims(layers=args.layers),
          threads=args.threads, fresh=args.fresh, stop_after=args.stop_after, max_minutes=args.max_minutes,
          command=command, progress=not args.no_progress, system_turn=args.system_turn,
          log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True), **kwargs)


if __name__ == "__main__":
    main()
