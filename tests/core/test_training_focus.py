"""Learned Token Focus trained with the LoRA (focus.enabled): gradients reach the predictor and the soft tokens, the
run writes a focus-weights file next to the LoRA, and the CogniEdit editor that loads both edits exactly as the
trainer's policy does."""

import contextlib
import json

import numpy as np
import pytest
import torch

from cogniedit.focus.weights_file import load_focus_weights, read_focus_metadata
from training.checkpoint import CheckpointError
from training.config import load_config
from training.grpo import Trainer, main, render_source
from training.lora import read_lora_file
from training.tiny import save_tiny_editor

ARGS = ["--train.steps=2", "--checkpoint.every=1", "--rollout.steps=4", "--rollout.group_size=2",
        "--rollout.cases_per_step=2", "--objective.window=2", "--optim.lr=3e-2", "--data.n_cases=8",
        "--train.num_threads=1", "--log.progress=false", "--lora.targets=[to_q,to_k,to_v,to_out.0]",
        "--focus.enabled=true", "--focus.blocks=all", "--focus.xi=2", "--focus.window=6", "--focus.strength=2.0",
        "--advantages.min_group_std=0"]


@pytest.fixture(scope="module", params=[None, -2.0], ids=["paper", "gated"])
def run(tmp_path_factory, request):
    """A short run with learned focus: the paper's module, and the warm-start gate (focus.gate_init)."""
    folder = tmp_path_factory.mktemp("focus_run")
    model = save_tiny_editor(folder / "editor.safetensors", layers=2)
    out = folder / "out"
    gate = [] if request.param is None else [f"--focus.gate_init={request.param}"]
    assert main(["--set", f"model.path={model}", "--set", f"output_dir={out}", *ARGS, *gate]) == 0
    return model, out, gate


def test_focus_file_is_written_with_the_lora_and_describes_the_base(run):
    model, out, _ = run
    meta = read_focus_metadata(out / "focus.safetensors")
    assert meta["family"] == "shapeedit" and meta["blocks"] == "0,1" and meta["xi"] == "2"
    _, lora_meta = read_lora_file(out / "lora.safetensors")
    layout = json.loads(lora_meta["focus_layout"])
    assert layout == {"file": "focus.safetensors", "blocks": [0, 1], "xi": 2, "window": 6, "strength": 2.0}
    assert meta["base_hash"] == lora_meta["base_model_hash"]
    # every checkpoint carries both files (resume restores the focus module too)
    for step in ("step-000001", "step-000002"):
        assert (out / "checkpoints" / step / "focus.safetensors").is_file()


def test_training_moves_the_predictor_and_the_soft_tokens(run):
    model, out, gate = run
    config = load_config(None, [f"model.path={model}", f"output_dir={out}", *[a[2:] for a in ARGS + gate]])
    initial = Trainer(config).focus.state_dict()
    trained, _ = load_focus_weights(out / "focus.safetensors")
    assert initial.keys() == trained.keys() and ("gate" in trained) == bool(gate)
    for name in ("soft_tokens", "predictors.0.weight", "predictors.1.weight") + (("gate",) if gate else ()):
        assert not torch.equal(initial[name], trained[name]), f"{name} got no update"


def test_the_cogniedit_editor_with_lora_and_focus_edits_like_the_trainer(run):
    """The files the run wrote, loaded the way evaluation loads them, give the trainer policy's own ODE edit."""
    from cogniedit.shapes.cogniedit_editor import CogniEditEditor
    from cogniedit.shapes.editor import load_editor

    model, out, gate = run
    config = load_config(None, [f"model.path={model}", f"output_dir={out}", *[a[2:] for a in ARGS + gate]])
    trainer = Trainer(config)
    trainer.resume("latest")
    cases = trainer.cases[:3]
    images = np.stack([render_source(c) for c in cases])
    instructions = [c.instruction for c in cases]

    def final_latent(edit, **kwargs):
        seen = []  # the x0 estimate of the last step is the edit's final latent (sigma 0)
        edit(images, instructions, seed=5, steps=4, shift=1.0, callback=lambda i, x, x0: seen.append(x0), **kwargs)
        return seen[-1]

    with contextlib.ExitStack() as stack:  # the trainer policy's learned focus, on the editor's own text mask
        want = final_latent(trainer.policy.editor.edit, focus=lambda editor, ids, mask: stack.enter_context(
            trainer.policy.focus_applied(mask[:, editor.prefix_len:])) or {})
    editor = CogniEditEditor(load_editor(model), focus="learned", focus_weights=out / "focus.safetensors",
                             focus_strength=2.0, lora=out / "lora.safetensors")
    got = final_latent(editor.edit)
    plain = final_latent(CogniEditEditor(load_editor(model), lora=out / "lora.safetensors").edit)
    assert torch.allclose(got, want, atol=1e-5)
    assert (plain - want).abs().max() > (1e-5 if gate else 1e-3)  # the focus module matters (gated: scaled down)


def test_resuming_a_run_without_focus_with_focus_enabled_is_refused(tmp_path, run):
    model, _, _ = run
    out = tmp_path / "plain"
    plain = [a for a in ARGS if not a.startswith("--focus.")]
    assert main(["--set", f"model.path={model}", "--set", f"output_dir={out}", *plain, "--train.steps=1"]) == 0
    config = load_config(None, [f"model.path={model}", f"output_dir={out}", *[a[2:] for a in ARGS]])
    with pytest.raises(CheckpointError, match="has no focus.safetensors, but focus.enabled is true"):
        Trainer(config).resume("latest")
