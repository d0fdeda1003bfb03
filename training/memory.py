"""Memory modes for the frozen DiT on one GPU (``train.memory``), and the estimate ``auto`` chooses by.

* ``none`` (default): weights stay as ``model.dtype`` loaded them, compute as ``train.bf16`` says.
* ``bf16``: frozen weights in bfloat16, compute in bfloat16 (autocast); trainable tensors keep their dtype.
* ``fp8``: the frozen ``nn.Linear`` weights of the DiT stored as float8 e4m3 with a per-tensor scale (1 byte per
  weight), widened to bfloat16 for each matmul; the other frozen tensors bf16; compute bf16.
* ``offload``: the frozen weights of every transformer block live in CPU memory (pinned on CUDA) in bfloat16 and
  are copied to the device for that block's call only; each block is checkpointed, so its backward recomputes it
  with a fresh copy and no block's weights stay on the device between calls. Compute bf16.
* ``auto``: on CUDA the first of bf16, fp8, offload whose estimate (``estimate_peak_bytes``) fits the device's free
  memory with a 10 % margin; on CPU ``none``. The choice is printed.

Gradient checkpointing (``train.gradient_checkpointing``) stays a separate switch; offload checkpoints its blocks
itself when it is off. Trainable tensors (LoRA, focus) are never cast, quantised or offloaded.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

MODES = ("none", "auto", "bf16", "fp8", "offload")
FP8_MAX = 448.0  # float8_e4m3fn's largest finite value
AUTO_MARGIN = 0.9  # auto uses at most 90 % of the free memory
GIB = 1024 ** 3


# ------------------------------------------------------------------------------------------------ modes
def _frozen(module: nn.Module):
    return [(n, p) for n, p in module.named_parameters() if not p.requires_grad]


def cast_frozen(module: nn.Module, dtype: torch.dtype) -> None:
    """Frozen floating tensors to ``dtype`` (parameters and buffers); trainable ones untouched."""
    with torch.no_grad():
        for _, p in _frozen(module):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
        for b in module.buffers():
            if b.is_floating_point() and b.dtype != dtype:
                b.data = b.data.to(dtype)


def _fp8_forward(self, x):
    weight = self.weight.to(torch.bfloat16) * self.weight_scale.to(torch.bfloat16)
    bias = self.bias.to(torch.bfloat16) if self.bias is not None else None
    return nn.functional.linear(x.to(torch.bfloat16), weight, bias)


def quantize_linear_fp8(linear: nn.Linear) -> None:
    """Per-tensor float8 e4m3 weight (scale = amax / 448), widened to bf16 at each call."""
    with torch.no_grad():
        w = linear.weight.data.float()
        scale = (w.abs().max() / FP8_MAX).clamp(min=1e-12)
        linear.weight.data = (w / scale).to(torch.float8_e4m3fn)
        linear.register_buffer("weight_scale", scale.reshape(()), persistent=False)
    linear.forward = _fp8_forward.__get__(linear)


def quantize_frozen_fp8(module: nn.Module) -> int:
    """Every frozen ``nn.Linear`` (LoRA bases included, LoRA matrices not) to fp8; returns how many."""
    count = 0
    for _, m in module.named_modules():
        if isinstance(m, nn.Linear) and not m.weight.requires_grad:
            quantize_linear_fp8(m)
            count += 1
    return count


class BlockOffload:
    """The frozen weights of ``blocks`` kept off the device; each call copies them in for that call only."""

    def __init__(self, transformer: nn.Module, blocks, device: torch.device):
        self.transformer, self.device = transformer, torch.device(device)
        self.transfers = 0  # block weight copies to the device (counted: the tests check the mechanism)
        self.stores = []
        pin = self.device.type == "cuda"
        for block in blocks:
            store = {}
            for name, p in _frozen(block):
                cpu = p.data.to("cpu", torch.bfloat16 if p.is_floating_point() else p.dtype)
                store[name] = cpu.pin_memory() if pin else cpu
                p.data = torch.empty(0, dtype=store[name].dtype)  # the module keeps no copy: .to(device) is free
            self.stores.append(store)
            block.forward = functools.partial(self._forward, block, block.forward, store)

    def _loaded(self, store):
        self.transfers += 1
        return {name: t.to(self.device, non_blocking=True) for name, t in store.items()}

    def _forward(self, block, forward, store, *args, **kwargs):
        from torch.nn.utils.stateless import _reparametrize_module

        def run(*a, **k):
            with _reparametrize_module(block, self._loaded(store), strict=False):
                return forward(*a, **k)

        if not torch.is_grad_enabled() or getattr(self.transformer, "gradient_checkpointing", False):
            return run(*args, **kwargs)  # no graph, or diffusers' own block checkpointing recomputes this call
        return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)


@dataclass
class MemoryPlan:
    mode: str
    reason: str
    offload: BlockOffload | None = None
    fp8_layers: int = 0


def apply_memory_mode(policy, config: dict, device) -> MemoryPlan:
    """Set the frozen DiT of ``policy`` up for ``train.memory`` (after the LoRA is injected, before the
    transformer goes to the device); bf16 compute for every mode but ``none``. Prints the plan (but for ``none``)."""
    mode = config["train"].get("memory", "none")
    transformer = policy.transformer
    reason = "as configured" if mode != "none" else "as configured: model.dtype weights"
    if mode == "auto":
        trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
        mode, reason = choose_mode(DitShape.of(transformer), trainable, config, torch.device(device))
    plan = MemoryPlan(mode, reason)
    if mode != "none":
        policy.bf16 = True
        cast_frozen(transformer, torch.bfloat16)
    if mode == "fp8":
        plan.fp8_layers = quantize_frozen_fp8(transformer)
    if mode == "offload":
        plan.offload = BlockOffload(transformer, transformer.transformer_blocks, device)
    if config["train"].get("memory", "none") != "none":  # the default changes nothing: nothing to announce
        message = f"train.memory={config['train']['memory']}: {mode} ({reason})"
        log.info(message)
        print(message, flush=True)  # what auto chose, or what was asked, on the console too
    return plan


# ------------------------------------------------------------------------------------------------ estimate
@dataclass(frozen=True)
class DitShape:
    """What the estimate needs of a Qwen-Image DiT (counted from a model, or Qwen-Image-Edit-2509's numbers)."""
    params: int  # all DiT parameters
    block_params: int  # in the transformer blocks (offloaded by ``offload``)
    linear_params: int  # in nn.Linear weights (fp8 under ``fp8``)
    blocks: int
    hidden: int

    @classmethod
    def of(cls, transformer: nn.Module) -> "DitShape":
        params = sum(p.numel() for p in transformer.parameters() if not p.requires_grad)
        block_params = sum(p.numel() for b in transformer.transformer_blocks for p in b.parameters()
                           if not p.requires_grad)
        linear = sum(m.weight.numel() for m in transformer.modules()
                     if isinstance(m, nn.Linear) and not m.weight.requires_grad)
        return cls(params, block_params, linear, len(transformer.transformer_blocks),
                   int(transformer.config.num_attention_heads * transformer.config.attention_head_dim))


# Korthikanti et al. 2022: a transformer layer keeps ~34 * tokens * hidden bytes of bf16 activations for its
# backward (attention scores excluded: SDPA / flash attention does not store them); a no-grad forward holds
# ~10 * tokens * hidden bytes at its widest point (the 4x MLP hidden state plus its input and output, bf16).
TRAIN_BYTES_PER_TOKEN_HIDDEN = 34
FORWARD_BYTES_PER_TOKEN_HIDDEN = 10


def tokens_at(resolution: int, text_tokens: int = 300) -> int:
    """Sequence length of one Qwen-Image-Edit call: noisy + reference image tokens (16 px each) and the text."""
    return 2 * (resolution // 16) ** 2 + text_tokens


def estimate_peak_bytes(mode: str, dit: DitShape, resolution: int, trainable_params: int, checkpointing: bool = True,
                        micro_batch: int = 1, rollout_batch: int = 8, vae_bytes: int = 254 * 2 ** 20) -> dict:
    """Peak device memory of one training step by parts (bytes): frozen weights, trainables (fp32 value, grad and
    two AdamW moments: 16 bytes each), activations (the larger of a no-grad rollout forward of ``rollout_batch``
    trajectories and a training forward/backward of ``micro_batch``), the VAE (bf16) and its decode of one image."""
    weights = {"none": 4 * dit.params, "bf16": 2 * dit.params,
               "fp8": dit.linear_params + 2 * (dit.params - dit.linear_params),
               "offload": 2 * (dit.params - dit.block_params) + 2 * 2 * dit.block_params // dit.blocks}[mode]
    tokens = tokens_at(resolution)
    per_layer = TRAIN_BYTES_PER_TOKEN_HIDDEN * tokens * dit.hidden * micro_batch
    saved_inputs = 2 * tokens * dit.hidden * micro_batch * dit.blocks  # one bf16 hidden state per block
    train = (saved_inputs + per_layer) if (checkpointing or mode == "offload") else per_layer * dit.blocks
    rollout = FORWARD_BYTES_PER_TOKEN_HIDDEN * tokens * dit.hidden * rollout_batch
    # ComfyUI's own planning figure for a Wan 2.1 VAE decode: 2200 * latent pixels * 64 * dtype bytes
    decode = 2200 * (resolution // 8) ** 2 * 64 * 2
    parts = {"weights": weights, "trainables": 16 * trainable_params, "activations": max(train, rollout),
             "vae": vae_bytes + decode}
    parts["total"] = sum(parts.values())
    return parts


def lora_params(dit: DitShape, rank: int, targets_per_block: int) -> int:
    """LoRA size on ``targets_per_block`` square hidden x hidden linears per block (to_k, to_v, to_out.0)."""
    return dit.blocks * targets_per_block * rank * 2 * dit.hidden


def choose_mode(dit: DitShape, trainable: int, config: dict, device: torch.device) -> tuple[str, str]:
    """(mode, why) for ``auto``: the first of bf16, fp8, offload whose estimate fits 90 % of the free memory."""
    if device.type != "cuda":
        return "none", f"no CUDA device ({device.type}): weights as model.dtype"
    if config["train"].get("fsdp"):
        return "bf16", "train.fsdp shards the bf16 weights across the GPUs"
    import gc

    gc.collect()
    torch.cuda.empty_cache()  # the text encoder just dropped after caching the conditioning is free memory too
    free, _ = torch.cuda.mem_get_info(device)
    resolution = int(config["data"].get("resolution", 512))
    micro = int(config["objective"].get("micro_batch") or 1)
    rollout = int(config["rollout"]["group_size"]) * int(config["rollout"]["cases_per_step"])
    tried = []
    # offload checkpoints every block, and the learned focus's block state does not survive the recompute yet
    candidates = ("bf16", "fp8") if config.get("focus", {}).get("enabled") else ("bf16", "fp8", "offload")
    for mode in candidates:
        need = estimate_peak_bytes(mode, dit, resolution, trainable, bool(config["train"]["gradient_checkpointing"]),
                                   micro, rollout)["total"]
        tried.append(f"{mode} {need / GIB:.1f} GiB")
        if need <= AUTO_MARGIN * free:
            return mode, f"{free / GIB:.1f} GiB free; estimates {', '.join(tried)}"
    return candidates[-1], (f"{free / GIB:.1f} GiB free; estimates {', '.join(tried)}: even {candidates[-1]} may "
                            "not fit, lower data.resolution, objective.micro_batch or rollout.group_size")


# Qwen-Image-Edit-2509's DiT (60 blocks, hidden 3072): parameter counts of diffusers' QwenImageTransformer2DModel at
# its default config, counted on the meta device by ``qwen_image_edit_shape``.
def qwen_image_edit_shape() -> DitShape:
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        model = QwenImageTransformer2DModel(num_layers=60, in_channels=64, out_channels=16, joint_attention_dim=3584)
    model.requires_grad_(False)
    return DitShape.of(model)


def estimate_table(resolutions=(512, 768, 1024), rank: int = 4, targets_per_block: int = 3) -> str:
    """The docs' table: peak GiB per mode and resolution for Qwen-Image-Edit-2509 (see estimate_peak_bytes)."""
    dit = qwen_image_edit_shape()
    trainable = lora_params(dit, rank, targets_per_block)
    rows = ["| mode | " + " | ".join(f"{r} px" for r in resolutions) + " |",
            "| --- | " + " | ".join("---" for _ in resolutions) + " |"]
    for mode in ("none", "bf16", "fp8", "offload"):
        cells = [f"{estimate_peak_bytes(mode, dit, r, trainable)['total'] / GIB:.1f}" for r in resolutions]
        rows.append(f"| `{mode}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(estimate_table())
