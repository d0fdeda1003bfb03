"""Metrics: ``<output_dir>/metrics.jsonl`` (always), a tqdm bar (if installed), tensorboard (opt-in, lazy import)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class _Bar:
    def __init__(self, total, initial, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="grpo", unit="step", dynamic_ncols=True)
            except ImportError:  # progress bar is optional
                self.bar = None

    def update(self, metrics: dict):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['loss']:.3g}", reward=f"{metrics['reward_mean']:.3f}",
                                 ratio=f"{metrics.get('ratio_mean', 1):.4f}", refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class MetricsLog:
    def __init__(self, output_dir, log_cfg: dict, enabled: bool = True, truncate_after: int | None = None):
        self.enabled = enabled
        self.cfg = log_cfg
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            # a resumed run replays the steps after its checkpoint; drop what the interrupted run logged for them
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= (truncate_after or 0)]
            self.path.write_text("".join(line + "\n" for line in keep))
        if log_cfg.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError("log.tensorboard=true needs the tensorboard package (pip install tensorboard) "
                                   "or set log.tensorboard=false") from exc
            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def progress(self, total: int, initial: int) -> _Bar:
        return _Bar(total, initial, self.enabled and bool(self.cfg.get("progress", True)))

    def write(self, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, metrics["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
