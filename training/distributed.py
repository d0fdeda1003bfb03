"""Data parallel across processes started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK).

Two modes (``train.fsdp``):

* replicated (default): every rank holds the whole model; the trainable gradients are all-reduced (averaged)
  before each optimizer step;
* FSDP (PyTorch's FSDP2, ``torch.distributed.fsdp.fully_shard``): every transformer block, the transformer and
  the learned-focus module are sharded across the ranks, frozen base and LoRA alike; FSDP all-gathers a block's
  weights for its forward and reduce-scatters (averages) the gradients. Parameters and optimizer moments are then
  DTensors: ``full_tensor`` gathers one for saving (a collective: every rank calls it), ``shard_like`` cuts a full
  tensor read from a file back into this rank's shard.

Each rank draws its own cases, so the ranks' forward calls must stay in lockstep under FSDP: every rank runs
every minibatch (a rank with no kept trajectory contributes a zero loss) and decides to stop together.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: str) -> None:
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def is_dtensor(t) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without DTensor has no FSDP2 either
        return False
    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter or state; a collective for a DTensor."""
    return t.full_tensor() if is_dtensor(t) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``like``: this rank's shard of it for a DTensor ``like``, else ``full`` itself."""
    if not is_dtensor(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(device=like.device, dtype=like.dtype), like.device_mesh, like.placements)


def shard_modules(transformer: torch.nn.Module, extra: list[torch.nn.Module]) -> None:
    """FSDP2 on each transformer block, then the transformer and the extra modules (e.g. learned focus)."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer.transformer_blocks:
        fully_shard(block)
    fully_shard(transformer)
    for module in extra:
        fully_shard(module)


def average_gradients(params) -> None:
    """All-reduce and average the gradients of replicated parameters (FSDP's own are already averaged)."""
    size = dist.get_world_size()
    for p in params:
        if p.grad is not None and not is_dtensor(p.grad):
            dist.all_reduce(p.grad)
            p.grad /= size


def any_rank(flag: bool, distributed: bool, device="cpu") -> bool:
    """True when the flag is true on any rank (so that all ranks stop, or save, together)."""
    if not distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
