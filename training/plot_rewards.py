"""Reward curves of trainer runs, against wall time and against steps, from their ``metrics.jsonl``.

    python -m training.plot_rewards runs/shapeedit_dense runs/shapeedit_sparse --out reward_curves.png

Per run: the rollout reward (``reward_mean``, the combined reward of each step's own SDE rollouts) and the exact
ShapeEdit success of those rollouts (``r/shapeedit.success``), as a moving average over ``--window`` steps. Wall
time is the sum of the steps' ``time_step_s`` (set-up and checkpoint writing excluded), which is what an equal-time
comparison holds equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cogniedit.atomic_io import atomic_save

from . import cli


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the output_dir of a training run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first points average what exists so far)."""
    sums = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def curves(rows: list[dict], window: int) -> dict:
    steps = np.array([r["step"] for r in rows])
    minutes = np.cumsum([r.get("time_step_s", 0.0) for r in rows]) / 60
    out = {"step": steps, "minutes": minutes}
    for key in ("reward_mean", "r/shapeedit.success"):
        if all(key in r for r in rows):
            out[key] = moving_average(np.array([r[key] for r in rows]), window)
    return out


def plot(runs: list[Path], labels: list[str], out: Path, window: int = 25, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    series = [curves(read_metrics(run), window) for run in runs]
    keys = [k for k in ("reward_mean", "r/shapeedit.success") if all(k in s for s in series)]
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 3.2 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        for s, label in zip(series, labels):
            axes[row][0].plot(s["minutes"], s[key], label=label)
            axes[row][1].plot(s["step"], s[key], label=label)
        name = "rollout reward" if key == "reward_mean" else "rollout success"
        axes[row][0].set(xlabel="wall time of the steps (min)", ylabel=f"{name} ({window}-step mean)")
        axes[row][1].set(xlabel="step", ylabel=f"{name} ({window}-step mean)")
        for ax in axes[row]:
            ax.grid(alpha=0.3)
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:  # atomic: a half-written PNG never replaces a good one
        return atomic_save(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    return cli.run(lambda: _main(argv), argv)


def _main(argv) -> int:
    parser = cli.parser("python -m training.plot_rewards", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir of each run")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: folder names)")
    parser.add_argument("--out", type=Path, default=Path("reward_curves.png"))
    parser.add_argument("--window", type=int, default=25, help="moving-average window in steps")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(labels)} labels")
    print(plot(args.runs, labels, args.out, args.window, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
