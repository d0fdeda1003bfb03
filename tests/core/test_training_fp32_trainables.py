"""Trainable state is float32 whatever the frozen base's dtype: under a bfloat16 Qwen-Image-Edit (tiny random real
classes) and the example config's learning rate (1e-5), every LoRA matrix moves in nearly all of its entries.

With LoRA weights in bf16 (the base's dtype) an Adam step of ~lr is below half a bf16 ulp for most entries of
lora_A (std 1/rank), so they never change; that is what this test catches."""

import pytest
import torch

from tests.fixtures.edit_records import write_edit_records
from tests.fixtures.tiny_models import tiny_qwen_image_edit_folder
from training.config import load_config
from training.grpo import Trainer
from training.lora import lora_layers, read_lora_file

RES = 32


@pytest.fixture(scope="module")
def components():
    return tiny_qwen_image_edit_folder()


def test_bf16_base_trains_every_lora_matrix_at_a_realistic_lr(components, tmp_path):
    records = write_edit_records(tmp_path)
    out = tmp_path / "out"
    args = ["model.kind=diffusers", f"model.path={components}", "model.dtype=bfloat16", "train.bf16=true",
            f"data.records={records}", f"data.resolution={RES}", "rewards.shapeedit.enabled=false",
            "rewards.preservation.enabled=true", "rewards.preservation.weights.ssim=1.0",
            "rewards.preservation.weights.psnr=0.5", f"output_dir={out}", "train.steps=3", "checkpoint.every=0",
            "rollout.steps=4", "objective.window=2", "rollout.group_size=2", "rollout.cases_per_step=2",
            "optim.lr=1e-5", "optim.warmup_frac=0", "train.num_threads=1", "log.progress=false",
            "advantages.min_group_std=0", "focus.enabled=true", "focus.blocks=last:1", "focus.xi=2",
            "focus.window=4"]
    trainer = Trainer(load_config(None, args))
    transformer = trainer.policy.transformer
    assert next(p for n, p in transformer.named_parameters() if "lora" not in n).dtype == torch.bfloat16
    layers = lora_layers(transformer)
    before = {n: (l.lora_A.weight.detach().clone(), l.lora_B.weight.detach().clone()) for n, l in layers.items()}
    focus_before = {n: p.detach().clone() for n, p in trainer.focus.named_parameters()}
    trainer.train()

    for name, layer in layers.items():
        for which, old, new in (("A", before[name][0], layer.lora_A.weight), ("B", before[name][1], layer.lora_B.weight)):
            assert new.dtype == torch.float32, (name, which)
            moved = (new.detach() != old).float().mean().item()
            assert moved > 0.9, f"{name} lora_{which}: only {moved:.1%} of the entries moved"
    for name, param in trainer.focus.named_parameters():
        assert param.dtype == torch.float32, name
        assert not torch.equal(param.detach(), focus_before[name]), name
    for state in trainer.optimizer.state.values():
        assert all(v.dtype == torch.float32 for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")), state.keys()

    saved, _ = read_lora_file(out / "lora.safetensors")  # what ComfyUI loads: the float32 master weights
    for name, layer in layers.items():
        key = f"diffusion_model.{name}"
        assert saved[key + ".lora_A.weight"].dtype == torch.float32
        assert torch.equal(saved[key + ".lora_A.weight"], layer.lora_A.weight.detach().cpu())
        assert torch.equal(saved[key + ".lora_B.weight"], layer.lora_B.weight.detach().cpu())
