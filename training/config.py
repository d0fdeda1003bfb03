"""Trainer configuration: documented defaults, a YAML file on top, then ``--set a.b=value`` overrides.

Every key has a default here (docs/training.md lists them with their meaning). Unknown keys are an error
that names the closest known key, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "seed": 2233,                      # the authors' seed
    "output_dir": "runs/shapeedit_dense",
    "model": {
        "kind": "shapeedit",           # shapeedit | diffusers | single_file
        "path": None,                  # shapeedit: weights file (None = shipped); diffusers: folder; single_file: .safetensors
        "variant": "edit_plus",        # real models: edit_plus (Qwen-Image-Edit-2509/2511) | edit (the first Qwen-Image-Edit)
        "components": None,            # single_file: a Qwen-Image-Edit diffusers folder (vae/, text_encoder/, processor/)
        "vae": None,                   # real models: ComfyUI's VAE file (models/vae/qwen_image_vae.safetensors) or a folder; None = components' vae/
        "text_encoder": None,          # real models: ComfyUI's Qwen2.5-VL file (models/text_encoders/qwen_2.5_vl_7b[_fp8_scaled].safetensors) or a folder
        "family": None,                # recorded in the LoRA metadata; None = shapeedit / qwen_image_edit by model.kind
        "dtype": "float32",            # weights dtype: float32 | bfloat16 | float16
        "device": "cpu",
        "transformer_config": {},      # single_file: QwenImageTransformer2DModel kwargs the weights cannot tell (axes_dims_rope)
    },
    "data": {
        "cases": None,                 # JSONL of ShapeEdit cases; None = generate data.n_cases with data.seed
        "n_cases": 256,
        "seed": 0,
        "kinds": None,                 # restrict generated case kinds (list) or None for all
        "records": None,               # real models: JSONL of {"image", "instruction", "mask"?} (training/image_records.py)
        "resolution": 512,             # real models: images get about resolution**2 pixels (their aspect bucket, or a square)
        "buckets": True,               # real models: aspect buckets 1:2..2:1, one bucket per batch (False: centre-crop squares)
        "vlm_image_size": 384,         # real models: the source image the text encoder sees (384x384, as ComfyUI and the authors)
        "cache_dir": None,             # real models: where the cached conditioning goes (None = <output_dir>/cache)
    },
    "rollout": {
        "steps": 12,                   # T denoising steps of the rollout
        "shift": 1.0,                  # flow_sigmas shift
        "eta": 0.7,                    # SDE noise level (Flow-GRPO std_t = eta*sqrt(sigma/(1-sigma)))
        "group_size": 4,               # G trajectories per case
        "cases_per_step": 4,           # B cases per optimizer step
        "shared_noise": False,         # same initial noise within a group (DanceGRPO)
    },
    "objective": {
        "name": "dense",               # dense | sparse
        "window": 5,                   # k consecutive steps (dense) / steps sampled per trajectory (sparse)
        "clip_eps": 1.0e-4,            # PPO epsilon
        "clip_space": None,            # log (clip the log-ratio to +-log(1+eps)) | ratio ([1-eps, 1+eps]); None = dense: log, sparse: ratio
        "beta": 0.0,                   # KL weight (closed form, to the frozen base = LoRA disabled)
        "logprob_reduction": "mean",   # mean (per element, Flow-GRPO / authors' scale) | sum (exact log density)
        "detach_inputs": "first",      # dense: first (sg on the window's first input only) | all (paper's sg(x_t) at every network input)
        "dense_backward": "sweep",     # dense: sweep (one step's graph at a time, last first: time and memory ~ sparse) | graph | checkpoint
        "micro_batch": 0,              # trajectories per forward/backward (0 = all at once)
    },
    "advantages": {
        "mode": "group",               # group (per case over its G samples) | batch (all B*G rewards)
        "clip_max": 5.0,               # clamp to +-clip_max
        "min_group_std": 0.0,          # skip groups whose reward std is below this (0 = keep all)
        "combine": "reward",           # reward (weighted sum, then normalise) | advantage (normalise each dim, then weighted sum)
    },
    "rewards": {
        # plugin name -> {weight per dimension, options}; see training/rewards/
        "shapeedit": {"enabled": True, "weights": {"score": 1.0}},
        "preservation": {"enabled": False, "weights": {"ssim": 0.0, "psnr": 0.0}},
        "vlm_http": {"enabled": False, "url": "http://127.0.0.1:8080/score", "timeout_s": 60.0, "retries": 3,
                     "backoff_s": 1.0, "weights": {"alignment": 1.4, "style": 0.7, "consistency": 1.0}},
    },
    "lora": {
        "rank": 4,
        "alpha": 4.0,
        "targets": ["to_k", "to_v", "to_out.0"],
    },
    "focus": {
        "enabled": False,              # train the learned Token Focus module too (cogniedit.focus.learned)
        "blocks": "last:2",
        "xi": 8,
        "window": 16,
        "strength": 1.0,               # attention forcing on the predicted window: logits + log(1 + strength * w)
        "gate_init": None,             # warm start: gate logit a = sigmoid(gate) scaling the relocation (e.g. -4: near identity); None = paper (a = 1)
        "lr": 0.0,                     # learning rate of the focus parameters (0 = optim.lr)
    },
    "optim": {
        "lr": 1.0e-4,
        "betas": [0.9, 0.95],
        "weight_decay": 0.01,
        "eps": 1.0e-8,
        "grad_clip": 1.0,
        "warmup_frac": 0.1,            # linear warm-up over this fraction of train.steps, then cosine to 0
    },
    "train": {
        "steps": 100,
        "gradient_checkpointing": False,
        "memory": "none",              # frozen DiT: none (model.dtype) | bf16 | fp8 (e4m3 weights, bf16 compute) | offload (blocks on CPU) | auto (by free GPU memory)
        "bf16": False,                 # autocast the transformer forward to bfloat16
        "num_threads": 0,              # torch.set_num_threads (0 = leave as is)
        "max_minutes": 0.0,            # stop (with a checkpoint) after this wall time; 0 = no limit
        "minibatches": 1,              # optimizer steps per rollout (>1: later minibatches are off-policy)
        "fsdp": False,                 # under torchrun: shard model + LoRA with FSDP2 (False: replicate, all-reduce)
        "stop_after": 0,               # stop after this many steps of THIS run, without saving (tests; like a kill)
    },
    "checkpoint": {
        "every": 10,                   # steps between checkpoints (0 = only at the end)
        "keep_last": 3,
    },
    "log": {
        "every": 1,
        "progress": True,              # tqdm bar if installed
        "tensorboard": False,          # needs the tensorboard package; imported only when true
        "sample_every": 0,             # PNG grid of fixed cases every N steps (0 = off)
        "sample_cases": 8,
    },
}


OPEN_SECTIONS = ("rewards.", "model.transformer_config.")  # free-form tables (plugin options, model kwargs)


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the fix."""


def _merge(base: dict, update: dict, path: str = "") -> dict:
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            # reward plugin tables and reward weights are open dictionaries
            if where.startswith(OPEN_SECTIONS):
                base[key] = copy.deepcopy(value)
                continue
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean {path}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {where}{hint}; see docs/training.md for the keys")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, where + ".")
        else:
            base[key] = copy.deepcopy(value)
    return base


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _numbers(value):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; every config number is meant as a number."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML (numbers, true, [lists])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. objective.window=5)")
    dotted, raw = text.split("=", 1)
    value = _numbers(yaml.safe_load(raw)) if raw.strip() else None
    out: dict = {}
    node = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path=None, overrides=()) -> dict:
    """Defaults <- YAML file <- overrides (``["a.b=c", ...]``), validated."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        text = Path(path).read_text()
        data = _numbers(yaml.safe_load(text) or {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a YAML mapping of sections (model:, rollout:, ...)")
        _merge(config, data)
    apply_overrides(config, overrides)
    validate(config)
    return config


def apply_overrides(config: dict, overrides=()) -> dict:
    """``["a.b=c", ...]`` merged into ``config`` in place (unknown keys are an error); returns it."""
    for item in overrides:
        _merge(config, parse_override(item))
    return config


def validate(config: dict) -> None:
    o, r, a = config["objective"], config["rollout"], config["advantages"]
    checks = [
        (o["name"] in ("dense", "sparse"), "objective.name must be dense or sparse"),
        (int(o["window"]) >= 1, "objective.window must be >= 1"),
        (int(o["window"]) <= int(r["steps"]), "objective.window must be <= rollout.steps"),
        (o["clip_space"] in (None, "log", "ratio"), "objective.clip_space must be log, ratio or null"),
        (o["logprob_reduction"] in ("mean", "sum"), "objective.logprob_reduction must be mean or sum"),
        (o["detach_inputs"] in ("first", "all"), "objective.detach_inputs must be first or all"),
        (o["dense_backward"] in ("sweep", "graph", "checkpoint"),
         "objective.dense_backward must be sweep, graph or checkpoint"),
        (float(r["eta"]) > 0, "rollout.eta must be > 0: GRPO needs a stochastic (SDE) policy"),
        (int(r["group_size"]) >= 1 and int(r["cases_per_step"]) >= 1, "rollout.group_size/cases_per_step >= 1"),
        (a["mode"] in ("group", "batch"), "advantages.mode must be group or batch"),
        (a["combine"] in ("reward", "advantage"), "advantages.combine must be reward or advantage"),
        (not (a["mode"] == "group" and int(r["group_size"]) < 2),
         "advantages.mode=group needs rollout.group_size >= 2 (or use advantages.mode=batch)"),
        (config["model"]["kind"] in ("shapeedit", "diffusers", "single_file"),
         "model.kind must be shapeedit, diffusers or single_file"),
        (config["train"]["memory"] in ("none", "auto", "bf16", "fp8", "offload"),
         "train.memory must be none, auto, bf16, fp8 or offload"),
        (not (config["train"]["memory"] in ("fp8", "offload") and config["train"]["fsdp"]),
         "train.memory=fp8 / offload are single-GPU modes; with train.fsdp use bf16 (FSDP shards the weights)"),
        (not (config["train"]["memory"] == "offload" and config["focus"]["enabled"]),
         "train.memory=offload recomputes each block, which the learned focus does not survive yet: use fp8"),
        (config["model"]["variant"] in ("edit_plus", "edit"),
         "model.variant must be edit_plus (Qwen-Image-Edit-2509/2511) or edit (the first Qwen-Image-Edit)"),
    ]
    real = config["model"]["kind"] != "shapeedit"
    if real:
        checks += [
            (bool(config["data"]["records"]),
             f"model.kind={config['model']['kind']} trains on your images: set data.records to a JSONL file of "
             '{"image", "instruction", "mask"?} lines (docs/training.md)'),
            (not config["rewards"].get("shapeedit", {}).get("enabled", False),
             "rewards.shapeedit scores ShapeEdit cases only: set rewards.shapeedit.enabled=false and enable "
             "rewards.preservation and/or rewards.vlm_http"),
        ]
    if config["model"]["family"] is None:
        config["model"]["family"] = "qwen_image_edit" if real else "shapeedit"
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def clip_space(objective: dict) -> str:
    return objective["clip_space"] or ("log" if objective["name"] == "dense" else "ratio")


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)
