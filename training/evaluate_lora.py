"""Score a trained LoRA on fresh ShapeEdit cases with the exact scorer (deterministic ODE edits, like evaluation).

    python -m training.evaluate_lora --lora runs/shapeedit_dense/lora.safetensors --n 256 --seed 777
    python -m training.evaluate_lora --n 256 --seed 777          # the base editor, no LoRA
"""

from __future__ import annotations

import json

import torch

from . import cli


def evaluate(lora=None, model=None, n=256, seed=777, steps=12, shift=1.0, batch_size=32, threads=0):
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.editor import DefaultEditor, load_editor
    from cogniedit.shapes.evaluate import run_cases
    from cogniedit.shapes.scorer import aggregate

    from .lora import inject_lora, load_lora_state_dict, read_lora_file

    if threads:
        torch.set_num_threads(threads)
    editor = load_editor(model)
    if lora:
        tensors, meta = read_lora_file(lora)
        targets = json.loads(meta["target_modules"])
        inject_lora(editor.transformer, int(meta["rank"]), float(meta["alpha"]), targets)
        load_lora_state_dict(editor.transformer, tensors)
    cases = generate_cases(n, seed=seed)
    _, scores = run_cases(DefaultEditor(editor, steps=steps, shift=shift), cases, batch_size=batch_size, seed=0,
                          progress=False)
    return aggregate(scores)


def main(argv=None) -> int:
    return cli.run(lambda: _main(argv), argv)


def _main(argv) -> int:
    parser = cli.parser("python -m training.evaluate_lora", description=__doc__.splitlines()[0])
    parser.add_argument("--lora")
    parser.add_argument("--model", help="editor weights (default: the shipped file)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    metrics = evaluate(args.lora, args.model, args.n, args.seed, args.steps, threads=args.threads)
    metrics.pop("per_kind", None)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
