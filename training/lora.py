"""A small LoRA for the nn.Linear layers of a diffusers transformer, saved in ComfyUI's LoRA key format.

Injection wraps each targeted ``nn.Linear`` in ``LoRALinear`` (frozen base + ``lora_B(lora_A(x)) * alpha/rank``).
The file is ONE safetensors file with keys ``diffusion_model.<module path>.lora_A.weight`` (rank x in),
``.lora_B.weight`` (out x rank) and ``.alpha`` (0-d), where ``<module path>`` is the diffusers module name
(``transformer_blocks.0.attn.to_q``). ComfyUI's Qwen-Image module names equal diffusers' names, so
``comfy.lora.model_lora_keys_unet`` maps every key (tests/host/test_training_lora_keys.py checks that).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cogniedit.safetensors_io import save_safetensors_atomic

from .distributed import full_tensor, shard_like

KEY_PREFIX = "diffusion_model."
FORMAT = "cogniedit.lora"
FORMAT_VERSION = "1"
# The paper's code adapts the image stream's K/V/out; to_q and the text stream (add_*) are opt-in.
DEFAULT_TARGETS = ("to_k", "to_v", "to_out.0")
MASTER_DTYPE = torch.float32  # trainable LoRA weights, their AdamW state and the saved file


class LoRALinear(nn.Module):
    """``base(x) + scale * lora_B(lora_A(x))``; ``enabled=False`` gives the base layer exactly."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, init_std: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        # float32 master weights whatever the base's dtype: an Adam step of ~lr is below half a bf16 ulp of most
        # entries of A (std 1/rank), so bf16 LoRA weights would barely train (AdamW's state follows: float32 too).
        dev = base.weight.device
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=dev, dtype=MASTER_DTYPE)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=dev, dtype=MASTER_DTYPE)
        # Gaussian A (std 1/rank as PEFT's "gaussian" init), zero B: the adapted model starts equal to the base.
        nn.init.normal_(self.lora_A.weight, std=init_std if init_std is not None else 1.0 / rank)
        nn.init.zeros_(self.lora_B.weight)
        self.enabled = True

    def _apply(self, fn, *args, **kwargs):
        """``model.to(bfloat16)`` (or ``.half()``) after injection casts the base only: the LoRA stays float32."""
        super()._apply(fn, *args, **kwargs)
        for linear in (self.lora_A, self.lora_B):
            if linear.weight.dtype != MASTER_DTYPE and linear.weight.is_floating_point():
                linear.weight.data = linear.weight.data.to(MASTER_DTYPE)
        return self

    def forward(self, x):
        out = self.base(x)
        if not self.enabled:
            return out
        # computed in the activations' dtype (the weights are cast, cheap at rank r; under autocast, autocast's)
        a, b = self.lora_A.weight.to(x.dtype), self.lora_B.weight.to(x.dtype)
        return out + F.linear(F.linear(x, a), b).to(out.dtype) * self.scale


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, rank: int = 4, alpha: float = 4.0, targets: Iterable[str] = DEFAULT_TARGETS,
                seed: int | None = None) -> dict[str, LoRALinear]:
    """Wrap every ``nn.Linear`` whose module path ends with one of ``targets``; freeze everything else.
    Returns ``{module path: LoRALinear}`` (paths as in the original model)."""
    targets = tuple(targets)
    if not targets:
        raise ValueError("lora.targets is empty: name module suffixes such as to_q, to_k, to_v, to_out.0, add_q_proj")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]
    if not found:
        raise ValueError(f"no nn.Linear matches lora.targets {list(targets)}; check the module names "
                         f"(e.g. transformer_blocks.0.attn.to_q)")
    for p in model.parameters():
        p.requires_grad_(False)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    layers = {}
    try:
        for name, linear in found:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            wrapped = LoRALinear(linear, rank, alpha)
            setattr(parent, child, wrapped)
            layers[name] = wrapped
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    return layers


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The LoRA layers of an injected model, keyed by their original module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A.weight, layer.lora_B.weight)]


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    """Run the frozen base model (the KL reference) with the same module objects."""
    layers = list(lora_layers(model).values())
    previous = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, was in zip(layers, previous):
            layer.enabled = was


def lora_state_dict(model: nn.Module, prefix: str = KEY_PREFIX) -> dict[str, torch.Tensor]:
    """ComfyUI-format tensors: ``<prefix><path>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha``."""
    out = {}
    for name, layer in lora_layers(model).items():
        key = prefix + name
        # full_tensor: under FSDP the weights are shards (gathering is a collective: every rank calls this)
        out[key + ".lora_A.weight"] = full_tensor(layer.lora_A.weight.detach()).contiguous().cpu()
        out[key + ".lora_B.weight"] = full_tensor(layer.lora_B.weight.detach()).contiguous().cpu()
        out[key + ".alpha"] = torch.tensor(layer.alpha, dtype=torch.float32)
    if not out:
        raise ValueError("the model has no LoRA layers; call inject_lora first")
    return out


def load_lora_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str = KEY_PREFIX) -> None:
    """Copy saved LoRA tensors into an injected model; every layer must be present and every key used."""
    layers = lora_layers(model)
    used = set()
    for name, layer in layers.items():
        a, b = prefix + name + ".lora_A.weight", prefix + name + ".lora_B.weight"
        if a not in tensors or b not in tensors:
            raise ValueError(f"LoRA file lacks {a} / {b}; it was made for other target modules or another model")
        if tensors[a].shape != layer.lora_A.weight.shape or tensors[b].shape != layer.lora_B.weight.shape:
            raise ValueError(f"LoRA tensor shapes for {name} do not match (rank or model width differ)")
        with torch.no_grad():
            layer.lora_A.weight.copy_(shard_like(tensors[a], layer.lora_A.weight))
            layer.lora_B.weight.copy_(shard_like(tensors[b], layer.lora_B.weight))
        used.update((a, b, prefix + name + ".alpha"))
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"LoRA file has {len(unused)} keys this model has no layer for, e.g. {unused[0]}")


def _as_meta_string(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def save_lora_file(path, model: nn.Module, metadata: dict | None = None, tensors: dict | None = None) -> Path:
    """Write the ComfyUI-loadable LoRA file atomically. ``metadata`` values become JSON strings; ``tensors``: the
    model's ``lora_state_dict`` when already gathered."""
    layers = lora_layers(model)
    first = next(iter(layers.values()))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "key_prefix": KEY_PREFIX,
            "rank": str(first.rank), "alpha": str(first.alpha), "modules": str(len(layers))}
    meta.update({k: _as_meta_string(v) for k, v in (metadata or {}).items()})
    return save_safetensors_atomic(path, lora_state_dict(model) if tensors is None else tensors, meta)


class LoRAFileError(ValueError):
    """A LoRA file that is missing or not a safetensors file; the message names the file and the fix."""


def read_lora_file(path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise LoRAFileError(f"LoRA file {path} not found; pass the lora.safetensors a training run wrote")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except SafetensorError as exc:
        raise LoRAFileError(f"{path} is not a readable safetensors LoRA ({exc}); the file is damaged or of "
                            f"another kind: pass a lora.safetensors a training run wrote") from None


def merged_weight_delta(layer: LoRALinear) -> torch.Tensor:
    """``scale * B @ A``: what ComfyUI adds to the base weight (for checks)."""
    return layer.lora_B.weight @ layer.lora_A.weight * layer.scale


__all__ = ["LoRALinear", "inject_lora", "lora_layers", "lora_parameters", "lora_disabled", "lora_state_dict",
           "load_lora_state_dict", "save_lora_file", "read_lora_file", "LoRAFileError", "merged_weight_delta", "DEFAULT_TARGETS",
           "KEY_PREFIX", "FORMAT"]
