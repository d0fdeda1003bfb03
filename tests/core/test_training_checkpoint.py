"""Checkpoints: exact round trip of optimizer / RNG state, corrupt and half-written checkpoints are refused."""

import json
import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from training import checkpoint as ckpt
from training.lora import inject_lora, lora_parameters, save_lora_file


def _model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("attn", nn.Module())
    model.attn.add_module("to_k", nn.Linear(8, 8))
    inject_lora(model, rank=2, alpha=2.0, targets=["to_k"], seed=1)
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(2):
        opt.zero_grad()
        model.attn.to_k(torch.randn(3, 8)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _save(tmp_path, step, model, opt):
    opt_t, opt_j = ckpt.optimizer_state(opt)
    rng_t, rng_j = ckpt.rng_state()
    return ckpt.save_checkpoint(tmp_path, step, lambda d: save_lora_file(d / "lora.safetensors", model),
                                {**opt_t, **rng_t}, {"step": step, "optimizer": opt_j, "rng": rng_j}, keep_last=2)


def test_round_trip_restores_optimizer_and_rng_exactly(tmp_path):
    model, opt = _model_and_optimizer()
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    path = _save(tmp_path, 7, model, opt)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    model2, opt2 = _model_and_optimizer()
    tensors, state, _ = ckpt.load_checkpoint(ckpt.resolve_resume("latest", tmp_path))
    ckpt.load_optimizer_state(opt2, tensors, state["optimizer"])
    ckpt.set_rng_state(tensors, state["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)
    assert path.name == "step-000007"


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model, opt = _model_and_optimizer()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, opt)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]


def test_corrupt_file_is_detected(tmp_path):
    model, opt = _model_and_optimizer()
    path = _save(tmp_path, 1, model, opt)
    data = bytearray((path / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="sha256"):
        ckpt.load_checkpoint(path)


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    model, opt = _model_and_optimizer()
    good = _save(tmp_path, 1, model, opt)
    # a crash while saving step 2 leaves a temporary folder: `latest` ignores it and takes step 1
    shutil.copytree(good, good.parent / ".tmp-step-000002-999")
    (good.parent / ".tmp-step-000002-999" / "manifest.json").unlink()
    assert ckpt.resolve_resume("latest", tmp_path) == good
    # a step folder without manifest (e.g. copied by hand mid-write) is refused with the reason
    broken = good.parent / "step-000003"
    shutil.copytree(good, broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.load_checkpoint(ckpt.resolve_resume("latest", tmp_path))
    # a file missing from a listed manifest
    (good / "lora.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_checkpoint(good)


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    model, opt = _model_and_optimizer()
    path = _save(tmp_path, 1, model, opt)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"lora.safetensors", "state.safetensors", "state.json"}
    assert manifest["files"]["lora.safetensors"] == ckpt.sha256_file(path / "lora.safetensors")


def test_resume_latest_without_checkpoints_names_the_fix(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="start without --resume"):
        ckpt.resolve_resume("latest", tmp_path)
