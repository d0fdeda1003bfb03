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
        "phrasing": "template",        # generated cases' wording: template | paraphrase | reasoning | mixed, or a
                                       # comma list taken in turn (paraphrase,reasoning); docs/shapeedit.md
        "split": "train",              # wording pool of paraphrase/reasoning cases: train (no held-out verb or frame) | eval
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
        # any OpenAI-compatible vision chat server (vLLM, llama.cpp, Ollama) with the paper's judge prompt
        "vlm_judge": {
            "enabled": False,
            "url": "http://127.0.0.1:8000/v1",      # the server's base URL (or .../v1/chat/completions)
            "model": "Qwen/Qwen2.5-VL-7B-Instruct",  # the model name the server serves
            "api_key_env": None,               # name of YOUR environment variable holding the key (null: none)
            "prompt": None,                    # the judging prompt with {instruction}; null = the paper's
            "prompt_file": None,               # or a UTF-8 file holding it
            "max_tokens": 2048, "temperature": 0.0,
            "timeout_s": 120.0,                # wall-clock limit per request (connect to last byte)
            "retries": 3, "backoff_s": 1.0, "max_backoff_s": 30.0,
            "concurrency": 4,                  # requests in flight (one per edited image)
            "parse_retries": 1,                # ask again when an answer holds no scores
            "max_unparseable_frac": 0.5,       # stop when more answers than this hold no scores (after 16)
            "extra_body": {},                  # extra request fields (e.g. top_k for vLLM)
            "weights": {"alignment": 1.4, "style": 0.7, "consistency": 1.0},  # the authors' (coherence dropped)
        },
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
    "decompose": {
        "enabled": False,              # rollouts condition on the decomposer's enriched instruction, as inference edits
        "backend": "rules",            # rules | mllm (shipped ShapeEdit decomposer) | transformers_vlm | openai_http
        "model": None,                 # transformers_vlm: a model folder; openai_http: the model name the server serves
        "url": None,                   # openai_http: the server's base URL (http://127.0.0.1:8000/v1)
        "api_key_env": None,           # openai_http: name of YOUR environment variable holding the key (null: none)
        "device": "cpu",               # transformers_vlm: where the model runs
        "max_new_tokens": 1024,        # the paper's generation length
        "temperature": 0.0,            # 0 = greedy (reproducible, cacheable)
        "image_max_pixels": 147456,    # the source is shrunk to this area first (384x384, the paper's)
        "timeout_s": 120.0,            # openai_http: deadline per decomposition, retries included
        "retries": 2,                  # openai_http: more tries for transient failures
        "max_fallback_frac": 0.5,      # stop when more decompositions than this fell back to the rules (after 8)
        "grammar_check": True,         # ShapeEdit cases, model backends: the editor's grammar check, as at inference
        "cache_dir": None,             # None = <data.cache_dir or output_dir/cache>/decompose
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
        "attention_cases": 2,          # attention sheet of the first N cases with each sample grid and at the end
        "attention_blocks": "all",     # blocks averaged into it (all, 0-9,12, last:9)
        "attention_steps": [0.0, 0.5],  # the sampling-step range (fractions) averaged into it
    },
}


OPEN_SECTIONS = ("rewards.", "model.transformer_config.")  # free-form tables (plugin options, model kwargs)


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the fix."""


# Keys whose default is null, and what they hold when set (other null-default keys take anything).
NULLABLE = {"model.path": str, "model.components": str, "model.family": str, "data.cases": str,
            "data.kinds": list, "data.records": str, "data.cache_dir": str, "focus.gate_init": (int, float),
            "rewards.vlm_judge.api_key_env": str, "rewards.vlm_judge.prompt": str,
            "rewards.vlm_judge.prompt_file": str, "decompose.model": str, "decompose.url": str,
            "decompose.api_key_env": str, "decompose.cache_dir": str}
ALSO_ALLOWED = {"focus.blocks": int}  # "last:2", or one block index
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _origin(sources: dict | None, where: str) -> str:
    """``"<file>: "`` or ``"--set a.b=c: "`` for the key's (or its section's) origin; ``""`` for a default."""
    if not sources:
        return ""
    parts = where.split(".")
    for n in range(len(parts), 0, -1):
        origin = sources.get(".".join(parts[:n]))
        if origin:
            return f"{origin}: "
    return ""


def _merge(base: dict, update: dict, path: str = "", source: str | None = None, sources: dict | None = None) -> dict:
    for key, value in update.items():
        where = f"{path}{key}"
        if sources is not None and source:
            sources[where] = source
        if key not in base:
            # reward plugin tables and reward weights are open dictionaries
            if where.startswith(OPEN_SECTIONS):
                base[key] = copy.deepcopy(value)
                continue
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean {path}{close[0]}?)" if close else ""
            raise ConfigError(f"{source + ': ' if source else ''}unknown config key {where}{hint}; "
                              f"see docs/training.md for the keys")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, where + ".", source, sources)
        elif isinstance(base[key], dict):
            raise ConfigError(f"{source + ': ' if source else ''}{where} is a section ({', '.join(base[key])}); "
                              f"set one of its keys, e.g. {where}.{next(iter(base[key]), 'key')}=...")
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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None:  # where the unclosed thing began, often the line to fix
        problem += f", {context} at line {start.line + 1}, column {start.column + 1}"
    return f"not valid YAML{where} ({problem})"


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML (numbers, true, [lists])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. objective.window=5)")
    dotted, raw = text.split("=", 1)
    try:
        value = _numbers(yaml.safe_load(raw)) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: the value is {_yaml_problem(exc)}; quote text, close brackets "
                          f"([to_q, to_k])") from None
    out: dict = {}
    node = out
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. objective.window=5)")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_config_file(path) -> dict:
    """The YAML mapping in ``path``; every way it can be wrong is a ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; pass a YAML file (e.g. training/configs/shapeedit_dense.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found; pass an existing YAML file "
                          f"(e.g. training/configs/shapeedit_dense.yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc}); pass a readable UTF-8 YAML file") from None
    try:
        data = _numbers(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}; fix the YAML there (indentation, a closing bracket or "
                          f"quote)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of sections (model:, rollout:, ...)")
    return data


def load_config(path=None, overrides=()) -> dict:
    """Defaults <- YAML file <- overrides (``["a.b=c", ...]``), validated; errors name the file or flag."""
    config = copy.deepcopy(DEFAULTS)
    sources: dict = {}
    if path is not None:
        _merge(config, read_config_file(path), source=str(path), sources=sources)
    apply_overrides(config, overrides, sources)
    validate(config, sources)
    return config


def apply_overrides(config: dict, overrides=(), sources: dict | None = None) -> dict:
    """``["a.b=c", ...]`` merged into ``config`` in place (unknown keys are an error); returns it."""
    for item in overrides:
        _merge(config, parse_override(item), source=f"--set {item}", sources=sources)
    return config


def _kind(expected) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list ([a, b])"}
    if isinstance(expected, tuple):
        return "a number" if set(expected) == {int, float} else " or ".join(names[t] for t in expected)
    return names[expected]


def _type_ok(value, expected) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, tuple(t for t in types if t is not bool))


def _check_types(config: dict, defaults: dict, sources, path: str = "") -> None:
    """Every value has its default's type (ints for ints, numbers for floats, true/false for flags, ...)."""
    for key, value in config.items():
        where = f"{path}{key}"
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if where.endswith(".weights") and isinstance(value, dict):
            for dim, w in value.items():
                if not _type_ok(w, (int, float)):
                    raise ConfigError(f"{_origin(sources, f'{where}.{dim}')}{where}.{dim}={w!r} must be a number "
                                      f"(a reward weight)")
            continue
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{_origin(sources, where)}{where} must be a section of keys, got {value!r}")
            _check_types(value, default, sources, where + ".")
            continue
        if key not in (defaults or {}) or where.startswith("model.transformer_config."):
            continue  # open tables: plugin options and model kwargs are the plugin's / model's to check
        if default is None:
            expected = NULLABLE.get(where)
            if value is None or expected is None:
                continue
        elif isinstance(default, bool):
            expected = bool
        elif isinstance(default, int):
            expected = int
        elif isinstance(default, float):
            expected = (int, float)
        else:
            expected = type(default)
        if where in ALSO_ALLOWED:
            expected = (expected, ALSO_ALLOWED[where])
        if not _type_ok(value, expected):
            example = default if default is not None else "..."
            shown = str(example).lower() if isinstance(example, bool) else example
            raise ConfigError(f"{_origin(sources, where)}{where}={value!r} must be {_kind(expected)}; "
                              f"e.g. --set {where}={shown}")


def validate(config: dict, sources: dict | None = None) -> None:
    """Types first (so the range checks can compare), then ranges and choices; the first problem is raised."""
    config.setdefault("decompose", copy.deepcopy(DEFAULTS["decompose"]))  # runs saved before the section existed
    _check_types(config, DEFAULTS, sources)
    m, d, o, r, a = config["model"], config["data"], config["objective"], config["rollout"], config["advantages"]
    opt, t, ck, lg, lo = config["optim"], config["train"], config["checkpoint"], config["log"], config["lora"]
    checks = [
        ("objective.name", o["name"] in ("dense", "sparse"), "must be dense or sparse"),
        ("objective.window", o["window"] >= 1, "must be >= 1"),
        ("objective.window", o["window"] <= r["steps"], "must be <= rollout.steps"),
        ("objective.clip_space", o["clip_space"] in (None, "log", "ratio"), "must be log, ratio or null"),
        ("objective.logprob_reduction", o["logprob_reduction"] in ("mean", "sum"), "must be mean or sum"),
        ("objective.detach_inputs", o["detach_inputs"] in ("first", "all"), "must be first or all"),
        ("objective.dense_backward", o["dense_backward"] in ("sweep", "graph", "checkpoint"),
         "must be sweep, graph or checkpoint"),
        ("objective.clip_eps", o["clip_eps"] > 0, "must be > 0 (the paper: 1e-4)"),
        ("objective.beta", o["beta"] >= 0, "must be >= 0"),
        ("objective.micro_batch", o["micro_batch"] >= 0, "must be >= 0 (0 = all trajectories at once)"),
        ("rollout.steps", r["steps"] >= 1, "must be >= 1"),
        ("rollout.eta", r["eta"] > 0, "must be > 0: GRPO needs a stochastic (SDE) policy"),
        ("rollout.group_size", r["group_size"] >= 1, "must be >= 1"),
        ("rollout.cases_per_step", r["cases_per_step"] >= 1, "must be >= 1"),
        ("advantages.mode", a["mode"] in ("group", "batch"), "must be group or batch"),
        ("advantages.combine", a["combine"] in ("reward", "advantage"), "must be reward or advantage"),
        ("advantages.clip_max", a["clip_max"] > 0, "must be > 0"),
        ("advantages.min_group_std", a["min_group_std"] >= 0, "must be >= 0"),
        ("rollout.group_size", not (a["mode"] == "group" and r["group_size"] < 2),
         "is too small: advantages.mode=group needs rollout.group_size >= 2 (or use advantages.mode=batch)"),
        ("model.kind", m["kind"] in ("shapeedit", "diffusers", "single_file"),
         "must be shapeedit, diffusers or single_file"),
        ("model.variant", m["variant"] in ("edit_plus", "edit"),
         "must be edit_plus (Qwen-Image-Edit-2509/2511) or edit (the first Qwen-Image-Edit)"),
        ("model.dtype", m["dtype"] in DTYPE_NAMES, f"must be one of {', '.join(DTYPE_NAMES)}"),
        ("data.n_cases", d["n_cases"] >= 1, "must be >= 1"),
        ("data.phrasing", _phrasings_ok(d["phrasing"]),
         f"must be one of {', '.join(CASE_PHRASINGS)}, or a comma list of them (e.g. paraphrase,reasoning)"),
        ("data.split", d["split"] in CASE_SPLITS, f"must be one of {', '.join(CASE_SPLITS)}"),
        ("data.resolution", d["resolution"] >= 1, "must be >= 1 (pixels per side, e.g. 512)"),
        ("lora.rank", lo["rank"] >= 1, "must be >= 1"),
        ("lora.alpha", lo["alpha"] > 0, "must be > 0 (the paper: alpha = rank)"),
        ("lora.targets", bool(lo["targets"]), "must name module suffixes such as [to_k, to_v, to_out.0]"),
        ("focus.lr", config["focus"]["lr"] >= 0, "must be >= 0 (0 = optim.lr)"),
        *decompose_checks(config["decompose"]),
        ("optim.lr", opt["lr"] > 0, "must be > 0 (the paper: 1e-5)"),
        ("optim.betas", len(opt["betas"]) == 2 and all(_type_ok(b, (int, float)) and 0 <= b < 1 for b in opt["betas"]),
         "must be two numbers in [0, 1), e.g. [0.9, 0.95]"),
        ("optim.weight_decay", opt["weight_decay"] >= 0, "must be >= 0"),
        ("optim.eps", opt["eps"] > 0, "must be > 0"),
        ("optim.grad_clip", opt["grad_clip"] > 0, "must be > 0"),
        ("optim.warmup_frac", 0 <= opt["warmup_frac"] <= 1, "must be in [0, 1]"),
        ("train.steps", t["steps"] >= 1, "must be >= 1 (the optimizer steps to run), e.g. --set train.steps=100"),
        ("train.num_threads", t["num_threads"] >= 0, "must be >= 0 (0 = leave torch's default)"),
        ("train.max_minutes", t["max_minutes"] >= 0, "must be >= 0 (0 = no limit)"),
        ("train.minibatches", t["minibatches"] >= 1, "must be >= 1"),
        ("train.stop_after", t["stop_after"] >= 0, "must be >= 0 (0 = off)"),
        ("checkpoint.every", ck["every"] >= 0, "must be >= 0 (0 = only at the end)"),
        ("checkpoint.keep_last", ck["keep_last"] >= 1, "must be >= 1"),
        ("log.every", lg["every"] >= 1, "must be >= 1"),
        ("log.sample_every", lg["sample_every"] >= 0, "must be >= 0 (0 = off)"),
        ("log.attention_cases", lg["attention_cases"] >= 0, "must be >= 0 (0 = no attention sheet)"),
        ("log.attention_steps", len(lg["attention_steps"]) == 2
         and 0 <= lg["attention_steps"][0] < lg["attention_steps"][1] <= 1, "must be [start, end] with 0 <= start < end <= 1"),
        ("log.sample_cases", lg["sample_cases"] >= 1, "must be >= 1"),
        ("train.memory", t["memory"] in ("none", "auto", "bf16", "fp8", "offload"),
         "must be none, auto, bf16, fp8 or offload"),
        ("train.memory", not (t["memory"] in ("fp8", "offload") and t["fsdp"]),
         "with train.fsdp: fp8 / offload are single-GPU modes; use bf16 (FSDP shards the weights)"),
        ("train.memory", not (t["memory"] == "offload" and config["focus"]["enabled"]),
         "recomputes each block, which the learned focus does not survive yet: use fp8"),
    ]
    real = m["kind"] != "shapeedit"
    if real:
        checks += [
            ("data.records", bool(d["records"]),
             f"is not set: model.kind={m['kind']} trains on your images: set data.records to a JSONL file of "
             '{"image", "instruction", "mask"?} lines (docs/training.md)'),
            ("rewards.shapeedit.enabled", not config["rewards"].get("shapeedit", {}).get("enabled", False),
             "must be false: rewards.shapeedit scores ShapeEdit cases only: set rewards.shapeedit.enabled=false and "
             "enable rewards.preservation and/or rewards.vlm_judge (or rewards.vlm_http)"),
        ]
    for key, ok, problem in checks:
        if not ok:
            value = _lookup(config, key)
            shown = f"{key}={value!r}" if not isinstance(value, (dict, type(None))) else key
            raise ConfigError(f"{_origin(sources, key)}{shown} {problem}")
    _check_output_dir(config["output_dir"], sources)
    if m["family"] is None:
        m["family"] = "qwen_image_edit" if real else "shapeedit"


DECOMPOSE_BACKENDS = ("rules", "mllm", "transformers_vlm", "openai_http")
CASE_PHRASINGS = ("template", "paraphrase", "reasoning", "mixed")  # cogniedit.shapes.cases.generate_cases
CASE_SPLITS = ("train", "eval")


def phrasing_list(value: str) -> list[str]:
    """``data.phrasing`` as the phrasings taken in turn: "paraphrase, reasoning" -> [paraphrase, reasoning]."""
    return [name.strip() for name in str(value).split(",")]


def _phrasings_ok(value) -> bool:
    return isinstance(value, str) and all(name in CASE_PHRASINGS for name in phrasing_list(value))


def decompose_checks(dc: dict) -> list:
    """Ranges of the decompose section; what the chosen backend needs only when decomposition is on."""
    checks = [
        ("decompose.backend", dc["backend"] in DECOMPOSE_BACKENDS, f"must be one of {', '.join(DECOMPOSE_BACKENDS)}"),
        ("decompose.max_new_tokens", dc["max_new_tokens"] >= 1, "must be >= 1"),
        ("decompose.temperature", dc["temperature"] >= 0, "must be >= 0 (0 = greedy)"),
        ("decompose.image_max_pixels", dc["image_max_pixels"] >= 0, "must be >= 0 (0 = full size)"),
        ("decompose.timeout_s", dc["timeout_s"] > 0, "must be > 0"),
        ("decompose.retries", dc["retries"] >= 0, "must be >= 0"),
        ("decompose.max_fallback_frac", 0 <= dc["max_fallback_frac"] <= 1, "must be in [0, 1] (1 = never stop)"),
    ]
    if dc["enabled"] and dc["backend"] == "openai_http":
        checks += [("decompose.url", bool(dc["url"]) and str(dc["url"]).startswith(("http://", "https://")),
                    "must be the server's http:// or https:// base URL for decompose.backend=openai_http, "
                    "e.g. --set decompose.url=http://127.0.0.1:8000/v1"),
                   ("decompose.model", bool(dc["model"]), "is not set: name the model the server serves "
                    "(decompose.backend=openai_http), e.g. --set decompose.model=Qwen/Qwen2.5-VL-7B-Instruct")]
    if dc["enabled"] and dc["backend"] == "transformers_vlm":
        checks += [("decompose.model", bool(dc["model"]), "is not set: point it at a transformers VLM folder "
                    "(decompose.backend=transformers_vlm), e.g. --set decompose.model=/models/Qwen2.5-VL-3B-Instruct")]
    return checks


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_output_dir(output_dir: str, sources) -> None:
    """The run writes into output_dir: it must be a folder, or a path whose nearest existing parent is one."""
    path = Path(output_dir)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"is under {candidate}, which is a file"
                raise ConfigError(f"{_origin(sources, 'output_dir')}output_dir={output_dir} {what}; set output_dir "
                                  f"to a folder (it is created if missing)")
            return


def clip_space(objective: dict) -> str:
    return objective["clip_space"] or ("log" if objective["name"] == "dense" else "ratio")


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)
