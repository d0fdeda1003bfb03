"""Resume after an interrupted run reproduces the uninterrupted run bit for bit (LoRA weights, loss, metrics)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cogniedit.focus.weights_file import load_focus_weights
from training.grpo import main
from training.lora import read_lora_file
from training.tiny import save_tiny_editor

REPO = Path(__file__).resolve().parents[2]


FOCUS = ["--focus.enabled=true", "--focus.blocks=all", "--focus.xi=2", "--focus.window=6"]


def _args(model, out, objective="dense"):
    if objective.endswith("+focus"):  # learned Token Focus trained alongside: its module and optimizer state too
        return _args(model, out, objective[: -len("+focus")]) + FOCUS
    return ["--set", f"model.path={model}", "--set", f"output_dir={out}", "--train.steps=4", "--checkpoint.every=2",
            "--rollout.steps=5", "--rollout.group_size=2", "--rollout.cases_per_step=2", "--objective.window=3",
            f"--objective.name={objective}", "--objective.beta=0.05", "--optim.lr=3e-3", "--train.minibatches=2",
            "--data.n_cases=16", "--train.num_threads=1", "--log.progress=false", "--checkpoint.keep_last=2"]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _comparable(m):
    return {k: v for k, v in m.items() if not k.startswith("time_")}


@pytest.mark.parametrize("objective", ["dense", "dense+focus"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, objective):
    model = save_tiny_editor(tmp_path / "editor.safetensors")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(_args(model, straight, objective)) == 0

    # interrupted run in its own process: stops after step 3, i.e. after the step-2 checkpoint and before step 4's
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "training.grpo", *_args(model, broken, objective),
                           "--train.stop_after=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [m["step"] for m in _metrics(broken)] == [1, 2, 3]
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["step-000002"]

    assert main(_args(model, broken, objective) + ["--resume", "latest"]) == 0
    a, b = _metrics(straight), _metrics(broken)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    assert [_comparable(m) for m in a] == [_comparable(m) for m in b]  # losses, rewards, ratios: exact
    assert b[3]["ratio_max"] != 1.0 or b[3]["ratio_min"] != 1.0  # the second minibatch was off-policy
    lora_a, _ = read_lora_file(straight / "lora.safetensors")
    lora_b, _ = read_lora_file(broken / "lora.safetensors")
    assert lora_a.keys() == lora_b.keys()
    assert all(torch.equal(lora_a[k], lora_b[k]) for k in lora_a)
    if objective.endswith("+focus"):
        focus_a, _ = load_focus_weights(straight / "focus.safetensors")
        focus_b, _ = load_focus_weights(broken / "focus.safetensors")
        assert focus_a.keys() == focus_b.keys() and all(torch.equal(focus_a[k], focus_b[k]) for k in focus_a)
    assert any(lora_a[k].abs().sum() > 0 for k in lora_a if k.endswith("lora_B.weight"))
    # checkpoint.every=2 and the final step: step-2 and step-4 exist (keep_last=2)
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
