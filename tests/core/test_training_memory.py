"""Memory modes of the frozen DiT (train.memory): fp8 weights and block-wise CPU offload give the LoRA the same
gradient as bf16 (offload bit for bit, fp8 within FP8_GRADIENT_TOLERANCE), offload really keeps no block weights
on the model between calls, auto picks by free memory and says so, and runs in each mode train."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.fixtures.tiny_models import narrow_qwen_image, tiny_qwen_image_edit_folder
from training.lora import inject_lora
from training.memory import (BlockOffload, apply_memory_mode, choose_mode, estimate_peak_bytes, estimate_table,
                             lora_params, qwen_image_edit_shape)

REPO = Path(__file__).resolve().parents[2]
# e4m3 keeps 3 mantissa bits (weights within 2^-4 relative, ~3.6 % RMS); through the tiny DiT's two blocks the
# LoRA gradient moves by 7.8 % of its norm (cosine 0.997)
FP8_GRADIENT_TOLERANCE = 0.15
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "img_mlp.net.2"]


def config(memory="bf16", checkpointing=False):
    return {"train": {"memory": memory, "gradient_checkpointing": checkpointing},
            "data": {"resolution": 512}, "objective": {"micro_batch": 1},
            "rollout": {"group_size": 4, "cases_per_step": 2}}


def lora_gradients(memory, checkpointing=False):
    """(loss, {name: grad}, policy, plan) of one bf16-compute forward/backward of the tiny DiT in ``memory`` mode."""
    dit = narrow_qwen_image(0)
    layers = inject_lora(dit, 4, 4.0, TARGETS, seed=1)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in layers.values():  # non-zero B so that A gets a gradient too
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=generator) * 0.05)
    policy = SimpleNamespace(transformer=dit, bf16=False)
    plan = apply_memory_mode(policy, config(memory, checkpointing), "cpu")
    if checkpointing:
        dit.enable_gradient_checkpointing()
    dit.train()
    x, ref = torch.randn(2, 4, 64, generator=generator), torch.randn(2, 4, 64, generator=generator)
    text = torch.randn(2, 7, 64, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dit(hidden_states=torch.cat([x, ref], 1), timestep=torch.tensor([0.6, 0.3]), encoder_hidden_states=text,
                  encoder_hidden_states_mask=torch.ones(2, 7), img_shapes=[[(1, 2, 2), (1, 2, 2)]] * 2,
                  return_dict=False)[0]
    loss = (out.float() ** 2).mean()
    loss.backward()
    grads = {n: p.grad.float() for n, p in dit.named_parameters() if p.requires_grad}
    return loss, grads, policy, plan


@pytest.fixture(scope="module")
def bf16():
    return lora_gradients("bf16")


def test_bf16_casts_only_the_frozen_weights(bf16):
    _, grads, policy, plan = bf16
    assert plan.mode == "bf16" and policy.bf16
    dtypes = {p.requires_grad: p.dtype for p in policy.transformer.parameters()}
    assert dtypes == {False: torch.bfloat16, True: torch.float32}  # the LoRA keeps its float32
    assert len(grads) == 2 * 2 * len(TARGETS) and all(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_offload_gives_the_bf16_gradient_exactly_and_keeps_no_block_weights(bf16, checkpointing):
    """Offloaded blocks hold empty tensors between calls; each block's weights are copied in for its forward and
    again for the backward's recompute (its own checkpoint, or diffusers' block checkpointing)."""
    loss, grads, policy, plan = lora_gradients("offload", checkpointing)
    assert isinstance(plan.offload, BlockOffload)
    blocks = policy.transformer.transformer_blocks
    assert plan.offload.transfers == 2 * len(blocks)
    assert all(p.numel() == 0 for b in blocks for p in b.parameters() if not p.requires_grad)
    assert all(p.numel() > 0 for b in blocks for p in b.parameters() if p.requires_grad)  # the LoRA stays
    assert torch.equal(loss, bf16[0])
    assert grads.keys() == bf16[1].keys() and all(torch.equal(grads[k], bf16[1][k]) for k in grads)


def test_fp8_stores_e4m3_weights_and_gives_the_bf16_gradient_within_tolerance(bf16):
    loss, grads, policy, plan = lora_gradients("fp8")
    linears = [m for m in policy.transformer.modules() if isinstance(m, torch.nn.Linear)]
    frozen = [m for m in linears if not m.weight.requires_grad]
    assert plan.fp8_layers == len(frozen) > 0 and all(m.weight.dtype == torch.float8_e4m3fn for m in frozen)
    assert all(m.weight.dtype == torch.float32 for m in linears if m.weight.requires_grad)
    got = torch.cat([grads[k].flatten() for k in sorted(grads)])
    want = torch.cat([bf16[1][k].flatten() for k in sorted(grads)])
    error = float((got - want).norm() / want.norm())
    assert 0 < error < FP8_GRADIENT_TOLERANCE, error
    assert float(torch.nn.functional.cosine_similarity(got, want, dim=0)) > 0.99


def test_auto_picks_the_first_mode_that_fits_and_says_so(monkeypatch, capsys):
    """Qwen-Image-Edit-2509's counts (meta device): bf16 when it fits 90 % of the free memory, then fp8, then
    offload (with a warning when even that does not fit); on CPU nothing changes."""
    shape = qwen_image_edit_shape()
    trainable = lora_params(shape, 4, 3)
    cfg = config("auto", checkpointing=True)
    need = {m: estimate_peak_bytes(m, shape, 512, trainable, True, 1, 8)["total"] for m in ("bf16", "fp8", "offload")}
    assert need["bf16"] > need["fp8"] > need["offload"]
    for free, want in ((2 * need["bf16"], "bf16"), (need["bf16"], "fp8"), (need["fp8"], "offload"),
                       (need["offload"] // 4, "offload")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 4 * free))
        mode, reason = choose_mode(shape, trainable, cfg, torch.device("cuda"))
        assert mode == want and "GiB free" in reason
    assert "even offload may not fit" in reason
    assert choose_mode(shape, trainable, dict(cfg, train=dict(cfg["train"], fsdp=True)), torch.device("cuda"))[0] == "bf16"
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="single-GPU modes"):
        load_config(None, ["train.memory=offload", "train.fsdp=true"])
    with pytest.raises(ConfigError, match="learned focus does not survive"):
        load_config(None, ["train.memory=offload", "focus.enabled=true"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need["offload"], 4 * need["offload"]))
    focus = dict(cfg, focus={"enabled": True})
    assert choose_mode(shape, trainable, focus, torch.device("cuda"))[0] == "fp8"  # never offload with focus
    dit = narrow_qwen_image(0)
    plan = apply_memory_mode(SimpleNamespace(transformer=dit, bf16=False), cfg, "cpu")
    assert plan.mode == "none" and all(p.dtype == torch.float32 for p in dit.parameters())
    assert "train.memory=auto: none (no CUDA device (cpu)" in capsys.readouterr().out


def test_docs_table_is_the_estimate():
    """docs/training.md carries the table estimate_table() computes (Qwen-Image-Edit-2509, meta-device counts)."""
    table = estimate_table()
    assert "\n".join("  " + line for line in table.splitlines()) in (REPO / "docs" / "training.md").read_text()
    gib = [float(x) for x in re.findall(r"\| (\d+\.\d) ", table)]
    assert len(gib) == 12 and all(a > b for a, b in zip(gib[:3], gib[3:6]))  # none > bf16 at every size


@pytest.mark.parametrize("memory, focus", [("fp8", True), ("offload", False)])
def test_runs_in_each_mode_train(tmp_path, memory, focus, capsys):
    from tests.fixtures.edit_records import write_edit_records
    from training.grpo import main
    from training.lora import read_lora_file

    components = tiny_qwen_image_edit_folder()
    records = write_edit_records(tmp_path)
    out = tmp_path / "out"
    args = ["model.kind=diffusers", f"model.path={components}", f"data.records={records}", "data.resolution=32",
            "rewards.shapeedit.enabled=false", "rewards.preservation.enabled=true",
            "rewards.preservation.weights.ssim=1.0", f"output_dir={out}", "train.steps=2", "checkpoint.every=2",
            "rollout.steps=4", "objective.window=2", "rollout.group_size=2", "rollout.cases_per_step=2",
            "optim.lr=3e-2", "train.num_threads=1", "log.progress=false", "advantages.min_group_std=0",
            f"train.memory={memory}"] + (["focus.enabled=true", "focus.blocks=all", "focus.xi=2", "focus.window=4"]
                                          if focus else [])
    assert main([x for a in args for x in ("--set", a)]) == 0
    assert f"train.memory={memory}: {memory}" in capsys.readouterr().out
    lora, _ = read_lora_file(out / "lora.safetensors")
    assert any(v.abs().sum() > 0 for k, v in lora.items() if k.endswith("lora_B.weight"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]


# ------------------------------------------------------------------------------------------------ GPU bench
@pytest.fixture(scope="module")
def gpu_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_trainer_scale", REPO / "bench" / "gpu_trainer_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_skips_without_cuda_and_builds_the_full_size_dit(gpu_bench, monkeypatch, capsys):
    """Without CUDA it says so and exits 0; its block-by-block builder gives diffusers' 60-block Qwen-Image-Edit DiT
    (same parameter names and shapes; built on the meta device here)."""
    from diffusers import QwenImageTransformer2DModel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA device")
    built = gpu_bench.build_dit(gpu_bench.FULL, torch.device("meta"))
    with torch.device("meta"):
        want = QwenImageTransformer2DModel(**gpu_bench.FULL)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in want.state_dict().items()}
    assert sum(p.numel() for p in built.parameters()) == qwen_image_edit_shape().params > 20e9
    assert {p.dtype for p in built.parameters()} == {torch.bfloat16}


def test_gpu_bench_reports_every_mode_against_bf16_at_tiny_size(gpu_bench, capsys):
    assert gpu_bench.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()
            if line.split()[:1] in (["bf16"], ["fp8"], ["offload"]) and len(line.split()) == 6}
    assert set(rows) == {(m, p) for m in ("bf16", "fp8", "offload") for p in ("rollout", "dense", "sparse")}
    assert all(float(rows[("bf16", p)][4]) == 1.0 for p in ("rollout", "dense", "sparse"))
    assert all(float(rows[(m, "dense")][5]) > 0 for m in ("fp8", "offload"))  # memory ratio against bf16
