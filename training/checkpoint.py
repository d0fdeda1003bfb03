"""Atomic, verifiable training checkpoints (safetensors + JSON, no pickle).

A checkpoint is a folder ``<output_dir>/checkpoints/step-000010/`` holding
``lora.safetensors`` (the ComfyUI-loadable LoRA), optionally ``focus.safetensors``, ``state.safetensors``
(optimizer moments and RNG byte states), ``state.json`` (step, optimizer hyper-parameters, LR scheduler, Python
and NumPy RNG, config) and ``manifest.json`` with the sha256 of every other file. It is written in a temporary
folder, the manifest last, then renamed into place with ``os.replace``: a crash leaves either a complete
checkpoint or a ``.tmp-*`` folder that is never loaded. Loading re-hashes every file and refuses a checkpoint
whose manifest is missing or does not match (``CheckpointError`` naming the folder and the fix).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .distributed import full_tensor, shard_like

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "cogniedit.grpo-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- RNG and optimizer (de)serialisation


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) of the Python, NumPy and torch CPU (and CUDA, if any) generators."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    info = {"python": [py_version, list(py_internal), py_gauss],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, info


def set_rng_state(tensors: dict, info: dict) -> None:
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, state_json = {}, {}
    for pid, entries in sd["state"].items():
        state_json[str(pid)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):  # FSDP: moments are shards; gathered here (every rank calls this)
                tensors[f"optim.{pid}.{name}"] = full_tensor(value.detach()).contiguous().cpu()
            else:
                state_json[str(pid)][name] = value
    return tensors, {"param_groups": sd["param_groups"], "state": state_json}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]  # the state dict's numbering
    state = {}
    for pid, scalars in info["state"].items():
        state[int(pid)] = dict(scalars)
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            param = params[int(pid)]
            # moments shaped like their parameter are cut into this rank's shard under FSDP
            state.setdefault(int(pid), {})[name] = shard_like(value, param) if value.shape == param.shape else value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in info["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- save / find / load


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(output_dir, step: int, write_files, state_tensors: dict, state_json: dict,
                    keep_last: int = 3) -> Path:
    """``write_files(folder)`` writes the model files (LoRA, focus); this adds state, manifest, then renames."""
    from safetensors.torch import save_file

    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_files(tmp)
        save_file({k: v.contiguous() for k, v in state_tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state_json, sort_keys=True))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune(root, keep_last)
    return final


def list_checkpoints(output_dir) -> list[tuple[int, Path]]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def prune(root: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    steps = list_checkpoints(root.parent)
    for _, path in steps[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path) -> dict:
    """The manifest, after checking every listed file's sha256; raises CheckpointError otherwise."""
    path = Path(path)
    fix = "delete this folder and resume from an older checkpoint (--resume <output_dir>/checkpoints/step-N)"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist; pass --resume latest or an existing step-N folder")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} has no {MANIFEST}: it is incomplete (half-written); {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({exc}); {fix}") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {manifest.get('format')!r} is not {FORMAT!r}; {fix}")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing; {fix}")
        if sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 (corrupt); {fix}")
    for required in ("lora.safetensors", "state.safetensors", "state.json"):
        if required not in files:
            raise CheckpointError(f"checkpoint {path}: the manifest does not list {required}; {fix}")
    return manifest


def resolve_resume(resume: str, output_dir) -> Path:
    """``latest`` -> the newest ``step-N`` folder (temporary ``.tmp-*`` folders are ignored; a broken newest
    checkpoint is an error, never skipped silently); anything else is a path."""
    if resume == "latest":
        steps = list_checkpoints(output_dir)
        root = checkpoint_root(output_dir)
        leftovers = [p.name for p in root.glob(".tmp-*")] if root.is_dir() else []
        if leftovers:
            log.warning("ignoring unfinished checkpoint folder(s) %s (a run was interrupted while saving)", leftovers)
        if not steps:
            raise CheckpointError(f"--resume latest: no checkpoint in {checkpoint_root(output_dir)}; "
                                  "start without --resume or check output_dir")
        return steps[-1][1]
    return Path(resume)


def load_checkpoint(path) -> tuple[dict, dict, Path]:
    """Verify, then read ``(state tensors, state json, folder)``."""
    from safetensors.torch import load_file

    path = Path(path)
    verify_checkpoint(path)
    return load_file(str(path / "state.safetensors")), json.loads((path / "state.json").read_text()), path
