"""Held-out evaluation of a Qwen-Image-Edit run on image records: the base against the trained LoRA (and focus).

    python -m training.evaluate_records --run runs/qwen_image_edit_dense --records heldout.jsonl
    python -m training.evaluate_records --run ... --records ... --set rewards.vlm_http.url=http://judge:8080/score

The run's config comes from its newest checkpoint, and the LoRA (and focus file) are loaded exactly as training
left them. Each record is edited by a deterministic ODE (rollout.steps, seed = the record's index) twice, with the
LoRA and focus off (the base) and on, and both edits are scored with the run's reward plugins. Prints the mean of
every reward dimension and of the weighted reward; writes ``results.json`` and a source | base | trained sheet to
``--out`` (default ``<run>/eval``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from . import cli
from .advantages import weighted_reward
from .config import ConfigError, apply_overrides, validate


def run_config(run, records, out: Path, overrides=()) -> tuple[dict, Path]:
    """The run's own config (newest checkpoint) with the held-out records, a cache under ``out`` and overrides."""
    path = ckpt.resolve_resume("latest", run)
    _, state, _ = ckpt.load_checkpoint(path)
    config = copy.deepcopy(state["config"])
    if config["model"]["kind"] == "shapeedit":
        raise ConfigError(f"{run} trained the ShapeEdit editor: evaluate it with python -m training.evaluate_lora")
    apply_overrides(config, [f"data.records={records}", f"data.cache_dir={out / 'cache'}", *overrides])
    validate(config)
    return config, path


def evaluate_records(run, records, out=None, overrides=()) -> dict:
    from cogniedit.atomic_io import atomic_write
    from cogniedit.image_grid import BLACK, save_image_grid

    from .grpo import Trainer
    from .image_records import sheet_tile
    from .rewards import score_all

    out = Path(out) if out else Path(run) / "eval"
    config, checkpoint = run_config(run, records, out, overrides)
    trainer = Trainer(config)
    trainer.resume(str(checkpoint))
    rows, sheet = [], []
    for i, case in enumerate(trainer.cases):
        edits = {name: trainer.edit_record(case, i, base=name == "base") for name in ("base", "trained")}
        scores = {}
        for name, img in edits.items():
            rewards = score_all(trainer.rewards, img[None], [case])
            scores[name] = {k: float(v[0]) for k, v in rewards.items()}
            scores[name]["weighted"] = float(weighted_reward(rewards, trainer.reward_weights)[0])
        rows.append({"id": case.case_id, "instruction": case.instruction, **scores})
        sheet.append(((case.source_image, edits["base"], edits["trained"]), case.instruction, BLACK))
    means = {name: {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]} for name in ("base", "trained")}
    result = {"run": str(run), "checkpoint": str(checkpoint), "records": str(records), "step": trainer.step,
              "means": means, "per_record": rows}
    atomic_write(out / "results.json", lambda f: json.dump(result, f, indent=1))
    save_image_grid(out / "sheet.png", ("source", "base", "trained"), sheet, sheet_tile(trainer.cases))
    return result


def main(argv=None) -> int:
    return cli.run(lambda: _main(argv), argv)


def _main(argv) -> int:
    parser = cli.parser("python -m training.evaluate_records", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the training run's output_dir (its newest checkpoint is used)")
    parser.add_argument("--records", required=True, help="held-out JSONL records (training/image_records.py)")
    parser.add_argument("--out", help="where results.json and sheet.png go (default <run>/eval)")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a config key")
    args = parser.parse_args(argv)
    result = evaluate_records(args.run, args.records, args.out, args.set)
    print(f"{len(result['per_record'])} records, step {result['step']}")
    print(f"{'reward':<28} {'base':>8} {'trained':>8}")
    for key in result["means"]["base"]:
        print(f"{key:<28} {result['means']['base'][key]:8.4f} {result['means']['trained'][key]:8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
