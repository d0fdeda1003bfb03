"""Dense GRPO trainer: ``python -m training.grpo --config training/configs/shapeedit_dense.yaml [--set a.b=c]``.

One step = sample B cases, roll out G SDE trajectories per case with the current policy, score the final images
with the reward plugins, compute advantages, then one optimizer step per minibatch with the selected objective
(Dense GRPO or sparse per-step GRPO). See docs/training.md for every key and choice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cogniedit.focus.weights_file import base_model_hash

from . import checkpoint as ckpt
from . import cli, distributed
from .advantages import compute_advantages
from .config import ConfigError, config_json, load_config, phrasing_list
from .decomposition import build_decomposer
from .image_records import group_by_size, sheet_tile
from .lora import inject_lora, lora_parameters, load_lora_state_dict, lora_state_dict, read_lora_file, save_lora_file
from .memory import apply_memory_mode
from .objectives import ObjectiveSettings, compute_objective, draw_steps
from .rewards import build_rewards, score_all
from .rollout import ShapeEditPolicy, derived_seed, rollout
from .tracking import MetricsLog

log = logging.getLogger("training.grpo")


def warmup_cosine(total_steps: int, warmup_frac: float):
    warmup = int(round(total_steps * warmup_frac))

    def factor(step: int) -> float:  # LambdaLR calls this with the number of scheduler steps taken
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def load_cases(data: dict):
    """ShapeEdit cases (a JSONL file or generated), or, with ``data.records``, image edit records."""
    from cogniedit.shapes.cases import read_jsonl

    if data.get("records"):
        from .image_records import RecordError, read_records

        try:
            return read_records(data["records"], int(data["resolution"]), buckets=bool(data["buckets"]))
        except RecordError as exc:
            raise ConfigError(str(exc)) from exc
    if data.get("cases"):
        if not Path(data["cases"]).is_file():
            raise ConfigError(f"data.cases: {data['cases']} not found; point it at a JSONL file of ShapeEdit cases "
                              f"or set data.cases=null to generate data.n_cases of them")
        try:
            cases = read_jsonl(data["cases"])
        except ValueError as exc:  # names the file and line
            raise ConfigError(f"data.cases: {exc}") from None
    else:
        cases = generated_cases(data)
    if not cases:
        raise ConfigError("no training cases: check data.cases / data.n_cases")
    return cases


def generated_cases(data: dict):
    """``data.n_cases`` generated cases; a comma list in ``data.phrasing`` takes its phrasings in turn, case by case
    (each phrasing's own stream of ``generate_cases``, so every case is the one that phrasing alone would give)."""
    from cogniedit.shapes.cases import generate_cases

    n, phrasings = int(data["n_cases"]), phrasing_list(data.get("phrasing") or "template")
    per_phrasing = [generate_cases(-(-n // len(phrasings)), seed=int(data["seed"]), kinds=data.get("kinds"),
                                   phrasing=name, split=data.get("split") or "train") for name in phrasings]
    return [case for turn in zip(*per_phrasing) for case in turn][:n]


class Trainer:
    def __init__(self, config: dict):
        self.config = config
        self.out = Path(config["output_dir"])
        train = config["train"]
        if int(train["num_threads"]) > 0:
            torch.set_num_threads(int(train["num_threads"]))
        self.rank, self.world = distributed.world()
        self.fsdp = bool(train["fsdp"]) and self.world > 1
        if self.world > 1:
            distributed.init(config["model"]["device"])
        seed = int(config["seed"])
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.device = torch.device(config["model"]["device"])
        if self.device.type == "cuda" and self.world > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cases = load_cases(config["data"])
        self.buckets = group_by_size(self.cases) if config["data"]["records"] else None
        self.decomposer = build_decomposer(config, self.out)  # None: the policy encodes the instructions as given
        self.policy = self._build_policy()
        if self.decomposer is not None:
            self.policy.instruction_of = self.decomposer.instruction
        self.base_hash = base_model_hash(self.policy.transformer)  # of the base, before the LoRA goes in
        lora_cfg = config["lora"]
        try:
            self.lora_layers = inject_lora(self.policy.transformer, int(lora_cfg["rank"]), float(lora_cfg["alpha"]),
                                           lora_cfg["targets"], seed=derived_seed(seed, "lora-init"))
        except ValueError as exc:  # the targets name no layer of this model
            raise ConfigError(f"lora.targets: {exc}") from None
        self.memory = apply_memory_mode(self.policy, config, self.device)  # train.memory (training/memory.py)
        self.policy.transformer.to(self.device)
        if train["gradient_checkpointing"]:
            self.policy.transformer.enable_gradient_checkpointing()
        self.focus = self._build_focus(config["focus"], seed)
        if self.fsdp:  # before the optimizer sees the parameters: they become this rank's shards
            distributed.shard_modules(self.policy.transformer, [self.focus] if self.focus is not None else [])
        self.params = lora_parameters(self.policy.transformer)
        if self.fsdp:
            sharded = sum(distributed.is_dtensor(p) for p in self.policy.transformer.parameters())
            log.info("FSDP: %d transformer parameters sharded across %d ranks", sharded, self.world)
        o = config["optim"]
        groups = [{"params": self.params}]
        if self.focus is not None:
            focus_params = list(self.focus.parameters())
            groups.append({"params": focus_params, "lr": float(config["focus"]["lr"] or o["lr"])})
            self.params = self.params + focus_params
        self.optimizer = torch.optim.AdamW(groups, lr=float(o["lr"]), betas=tuple(o["betas"]),
                                           weight_decay=float(o["weight_decay"]), eps=float(o["eps"]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(int(train["steps"]), float(o["warmup_frac"])))
        self.rewards, self.reward_weights = build_rewards(config["rewards"])
        self.settings = ObjectiveSettings.from_config(config["objective"])
        self.step = 0

    # ------------------------------------------------------------------------------------------- model
    def _build_policy(self):
        m, bf16 = self.config["model"], bool(self.config["train"]["bf16"])
        if m["kind"] != "shapeedit":
            return self._build_qwen_edit_policy(m, bf16)
        from cogniedit.shapes.editor import load_editor

        editor = load_editor(m["path"], device=str(self.device) if self.device.type != "cuda" else "cpu")
        editor.to(self.device)
        editor.eval()  # no dropout; the policy's randomness is the SDE noise only
        for p in editor.parameters():
            p.requires_grad_(False)
        return ShapeEditPolicy(editor, bf16=bf16)

    def _build_qwen_edit_policy(self, m: dict, bf16: bool):
        """Qwen-Image-Edit from a diffusers folder or a single file: conditioning cached, then the text encoder
        dropped (training.qwen_edit)."""
        from .models import DTYPES, ModelLoadError
        from .qwen_edit import QwenEditPolicy, load_qwen_edit, load_text_encoder

        try:
            transformer, vae, _, processor, folder = load_qwen_edit(m, with_text_encoder=False)
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from exc
        vae.to(self.device)
        transformer.eval()  # it goes to the device with its LoRA, after the text encoder has been dropped
        data, dtype = self.config["data"], DTYPES[m["dtype"]]
        policy = QwenEditPolicy(transformer, vae, None, processor, folder, bf16=bf16,
                                vlm_image_size=int(data["vlm_image_size"]), variant=m["variant"],
                                text_encoder_loader=lambda: load_text_encoder(folder, dtype).to(self.device))
        cache, records = data["cache_dir"], self.cases
        if self.decomposer is not None:  # every record decomposed once, before the text encoder and DiT train
            records = [dataclasses.replace(r, instruction=self.decomposer.instruction(r)) for r in self.cases]
            log.info(self.decomposer.summary())
            self.decomposer.release()
        policy.precompute(records, Path(cache) if cache else self.out / "cache")  # loads the encoder on a miss
        return policy

    def _build_focus(self, focus_cfg: dict, seed: int):
        """The learned Token Focus module (predictor + soft tokens) trained with the LoRA, or None."""
        if not focus_cfg["enabled"]:
            return None
        from cogniedit.focus.learned import LearnedFocus

        with torch.random.fork_rng(devices=[]):  # its own seed: enabling focus leaves every other draw unchanged
            torch.manual_seed(derived_seed(seed, "focus-init"))
            gate = focus_cfg["gate_init"]
            module = LearnedFocus.for_model(self.policy.transformer, blocks=str(focus_cfg["blocks"]),
                                            xi=int(focus_cfg["xi"]), window=int(focus_cfg["window"]),
                                            gate_init=None if gate is None else float(gate))
        module.to(self.device)
        self.policy.enable_learned_focus(module, float(focus_cfg["strength"]))
        return module

    def focus_metadata(self) -> dict:
        return {"family": self.config["model"]["family"], "base_hash": self.base_hash,
                "training_config": config_json(self.config), "step": str(self.step)}

    def model_tensors(self) -> tuple[dict, dict | None]:
        """(LoRA tensors, focus tensors or None), whole: under FSDP a collective that every rank must call."""
        focus = None
        if self.focus is not None:
            focus = {k: distributed.full_tensor(v.detach()).cpu() for k, v in self.focus.state_dict().items()}
        return lora_state_dict(self.policy.transformer), focus

    def write_model_files(self, folder: Path, tensors: tuple | None = None) -> None:
        """The LoRA and (with focus) the focus-weights file the CogniEdit nodes and editor load."""
        from cogniedit.focus.weights_file import save_focus_weights

        lora, focus = tensors or self.model_tensors()
        save_lora_file(folder / "lora.safetensors", self.policy.transformer, self.lora_metadata(), tensors=lora)
        if self.focus is not None:
            save_focus_weights(folder / "focus.safetensors", self.focus, self.focus_metadata(), tensors=focus)

    def lora_metadata(self) -> dict:
        lora = self.config["lora"]
        return {"base_model_family": self.config["model"]["family"], "base_model_hash": self.base_hash,
                "base_model_path": str(self.config["model"]["path"] or "shipped ShapeEdit editor"),
                "rank": lora["rank"], "alpha": lora["alpha"], "target_modules": lora["targets"],
                "focus_layout": self.focus_layout(), "training_config": config_json(self.config), "step": self.step,
                "objective": self.config["objective"]["name"]}

    def focus_layout(self):
        if self.focus is None:
            return None
        return {"file": "focus.safetensors", "blocks": self.focus.block_indices, "xi": self.focus.xi,
                "window": self.focus.window, "strength": float(self.config["focus"]["strength"])}

    # ------------------------------------------------------------------------------------------- state
    def save(self) -> Path | None:
        """Checkpoint + model files. Every rank calls it (FSDP gathers the shards); rank 0 writes."""
        tensors = self.model_tensors()
        opt_tensors, opt_json = ckpt.optimizer_state(self.optimizer)
        if self.rank != 0:
            return None
        rng_tensors, rng_json = ckpt.rng_state()
        state_json = {"step": self.step, "optimizer": opt_json, "scheduler": self.scheduler.state_dict(),
                      "rng": rng_json, "config": self.config, "base_model_hash": self.base_hash}
        path = ckpt.save_checkpoint(self.out, self.step, lambda folder: self.write_model_files(folder, tensors),
                                    {**opt_tensors, **rng_tensors}, state_json, int(self.config["checkpoint"]["keep_last"]))
        self.write_model_files(self.out, tensors)
        return path

    def resume(self, resume: str) -> Path:
        path = ckpt.resolve_resume(resume, self.out)
        tensors, state, path = ckpt.load_checkpoint(path)
        if state.get("base_model_hash") != self.base_hash:
            raise ckpt.CheckpointError(f"checkpoint {path} was trained on base model {state.get('base_model_hash')}, "
                                       f"but model.path gives {self.base_hash}; resume with the same base model")
        for key in ("objective", "lora", "rollout", "advantages", "focus", "decompose"):
            if state["config"].get(key) != self.config.get(key):
                log.warning("resuming with a different %s section than the checkpoint's", key)
        lora_tensors, _ = read_lora_file(path / "lora.safetensors")
        load_lora_state_dict(self.policy.transformer, lora_tensors)
        if self.focus is not None:
            from cogniedit.focus.weights_file import load_focus_weights

            if not (path / "focus.safetensors").is_file():
                raise ckpt.CheckpointError(f"checkpoint {path} has no focus.safetensors, but focus.enabled is true; "
                                           "resume with focus.enabled=false or from a run that trained focus")
            focus_tensors, _ = load_focus_weights(path / "focus.safetensors", expect_hash=self.base_hash)
            params = dict(self.focus.named_parameters())
            if focus_tensors.keys() != params.keys():
                raise ckpt.CheckpointError(f"{path / 'focus.safetensors'} holds {sorted(focus_tensors)}, the focus "
                                           f"module has {sorted(params)}: resume with the run's focus settings")
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(distributed.shard_like(focus_tensors[name], param))
        ckpt.load_optimizer_state(self.optimizer, tensors, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(tensors, state["rng"])
        self.step = int(state["step"])
        return path

    # ------------------------------------------------------------------------------------------- one step
    def step_cases(self, step: int):
        """B cases for this step (a function of seed, step and rank). Image records come from one size bucket,
        drawn with probability proportional to its number of records."""
        b = int(self.config["rollout"]["cases_per_step"])
        rng = np.random.default_rng(derived_seed(self.config["seed"], step, "cases", self.rank))
        pool = np.arange(len(self.cases))
        if self.buckets is not None and len(self.buckets) > 1:
            sizes = np.array([len(v) for v in self.buckets.values()], dtype=float)
            pool = np.array(list(self.buckets.values())[rng.choice(len(sizes), p=sizes / sizes.sum())])
        return [self.cases[i] for i in rng.choice(pool, size=min(b, len(pool)), replace=False)]

    def train_step(self, step: int) -> dict:
        cfg = self.config
        seed = int(cfg["seed"])
        t0 = time.perf_counter()
        cases = self.step_cases(step)
        g = int(cfg["rollout"]["group_size"])
        cond = self.policy.encode_cases(cases).to(self.device)
        rollouts, images = rollout(self.policy, cond, cfg["rollout"], derived_seed(seed, self.rank), step)
        t_rollout = time.perf_counter() - t0
        expanded = [c for c in cases for _ in range(g)]
        rewards = score_all(self.rewards, images, expanded)
        a = cfg["advantages"]
        adv = compute_advantages(rewards, self.reward_weights, g, a["mode"], float(a["clip_max"]),
                                 float(a["min_group_std"]), a["combine"])
        o = cfg["objective"]
        n = rollouts.num_trajectories
        steps = draw_steps(o["name"], n, rollouts.num_steps, int(o["window"]),
                           torch.Generator().manual_seed(derived_seed(seed, step, "steps", self.rank)))
        full_cond = cond.repeat(g)
        micro = int(o["micro_batch"]) or n
        minibatches = int(cfg["train"].get("minibatches", 1))
        chunks = [c for c in torch.arange(n).chunk(minibatches) if len(c)]
        losses, stats_all = [], []
        stepped = False  # no optimizer step since the rollout yet: the policy is the rollout's (on-policy)
        for chunk in chunks:
            self.optimizer.zero_grad(set_to_none=True)
            kept = int(adv.mask[chunk].sum())
            if kept == 0 and self.world == 1:
                continue  # with several ranks every rank runs every minibatch (collectives in lockstep): loss 0
            loss_total = 0.0
            for sub in chunk.split(micro):
                sub_cond = full_cond.subset(sub.to(self.device))
                ref_fn = self.policy.reference_velocity_fn(sub_cond) if self.settings.beta > 0 else None
                result = compute_objective(
                    o["name"], self.policy.velocity_fn(sub_cond), rollouts.subset(sub), adv.values[sub], steps[sub],
                    int(o["window"]), self.settings, ref_velocity_fn=ref_fn, mask=adv.mask[sub],
                    normaliser=float(max(kept, 1)), backward=True, on_policy=not stepped)
                loss_total += float(result.loss)
                stats_all.append(result.stats)
            if self.world > 1:
                distributed.average_gradients(self.params)
            grad_norm = distributed.full_tensor(
                torch.nn.utils.clip_grad_norm_(self.params, float(cfg["optim"]["grad_clip"])))
            self.optimizer.step()
            stepped = True
            losses.append(loss_total)
        lr_used = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        combined = adv.reward
        metrics = {
            "step": step, "loss": float(np.mean(losses)) if losses else 0.0,
            "reward_mean": float(combined.mean()), "reward_std": float(combined.std(unbiased=False)),
            "kept_frac": float(adv.mask.double().mean()), "lr": lr_used,
            "grad_norm": float(grad_norm) if losses else 0.0,
            "time_rollout_s": t_rollout, "time_step_s": time.perf_counter() - t0,
        }
        for key, values in rewards.items():
            metrics[f"r/{key}"] = float(values.mean())
        if self.decomposer is not None:  # of this step's cases: decompositions used / fallen back to the rules
            metrics.update(self.decomposer.step_metrics(cases))
        for key in ("ratio_mean", "clip_frac", "kl"):
            metrics[key] = float(np.mean([s[key] for s in stats_all])) if stats_all else 0.0
        if stats_all:
            metrics["ratio_min"] = min(s["ratio_min"] for s in stats_all)
            metrics["ratio_max"] = max(s["ratio_max"] for s in stats_all)
        return metrics

    def save_samples(self, step: int) -> Path:
        """A PNG sheet of the first ``log.sample_cases`` cases edited by the current policy (seed 0, ODE)."""
        n = int(self.config["log"]["sample_cases"])
        cases = self.cases[:n]
        path = self.out / "samples" / f"step-{step:06d}.png"
        if isinstance(self.policy, ShapeEditPolicy):
            self._save_shapeedit_samples(path, cases)
        else:
            self._save_record_samples(path, cases)
        return path

    def save_attention_sheet(self, step: int) -> Path | None:
        """``samples/attention-step-N.png``: per focus phrase of the first ``log.attention_cases`` cases, where the
        policy's image tokens attend to it without and with focus (training.attention_sheet); None when off or no
        case has a focus phrase. Under FSDP every rank runs the forward, rank 0 writes."""
        from cogniedit.focus.bias import FocusSchedule, parse_blocks
        from cogniedit.image_grid import save_png

        from .attention_sheet import attention_sheet, focus_phrases

        lg = self.config["log"]
        cases = self.cases[:int(lg["attention_cases"])]
        if not cases:
            return None
        parse_blocks(str(lg["attention_blocks"]))
        texts = [self.policy.instruction_of(c) for c in cases]
        phrases = [focus_phrases(c, t, self.decomposer) for c, t in zip(cases, texts)]
        sources = [c.source_image if self.config["data"]["records"] else render_source(c) for c in cases]
        sheet = attention_sheet(self.policy, cases, texts, phrases, sources, self.config["rollout"],
                                str(lg["attention_blocks"]), FocusSchedule(*map(float, lg["attention_steps"])))
        if sheet is None or self.rank != 0:
            return None
        path = self.out / "samples" / f"attention-step-{step:06d}.png"
        save_png(path, sheet)
        return path

    def _save_shapeedit_samples(self, path: Path, cases) -> None:
        from cogniedit.shapes.evaluate import save_grid
        from cogniedit.shapes.scorer import score_edit

        r = self.config["rollout"]
        images = np.stack([render_source(c) for c in cases])
        with contextlib.ExitStack() as stack:
            def with_focus(editor, ids, mask):  # the editor's own text mask: learned focus on for this edit
                stack.enter_context(self.policy.focus_applied(mask[:, editor.prefix_len:]))
                return {}

            texts = [self.policy.instruction_of(c) for c in cases]  # what the rollouts were conditioned on
            out = self.policy.editor.edit(images, texts, seed=0, steps=int(r["steps"]), shift=float(r["shift"]),
                                          focus=with_focus)
        if self.rank == 0:
            save_grid(path, cases, out, [score_edit(o, c) for o, c in zip(out, cases)], rows=len(cases))

    def _save_record_samples(self, path: Path, cases) -> None:
        """One ODE edit per record (records may differ in size), source | edited per row."""
        from cogniedit.image_grid import BLACK, save_image_grid

        rows = [((case.source_image, self.edit_record(case, i)), case.instruction, BLACK) for i, case in enumerate(cases)]
        if self.rank == 0:
            save_image_grid(path, ("source", "edited"), rows, sheet_tile(cases))

    def edit_record(self, case, seed: int, base: bool = False) -> np.ndarray:
        """A deterministic ODE edit (rollout.steps, rollout.shift) of one image record, uint8 ``[H, W, 3]``, by the
        current policy or, ``base``, the frozen base (LoRA disabled, no focus)."""
        from cogniedit.sampling import flow_sigmas, initial_noise, sample_trajectory

        r = self.config["rollout"]
        cond = self.policy.encode_cases([case]).to(self.device)
        velocity = self.policy.reference_velocity_fn(cond) if base else self.policy.velocity_fn(cond)
        x = initial_noise(self.policy.latent_shape(1, cond), seed).to(self.device)
        with torch.no_grad():
            traj = sample_trajectory(velocity, x, flow_sigmas(int(r["steps"]), float(r["shift"])), eta=0.0)
        return self.policy.decode(traj.final, cond)[0]

    # ------------------------------------------------------------------------------------------- loop
    def train(self, resume: str | None = None) -> dict:
        cfg = self.config
        if resume:
            path = self.resume(resume)
            log.info("resumed from %s at step %d", path, self.step)
            if self.step >= int(cfg["train"]["steps"]):
                log.warning("the checkpoint is at step %d and train.steps is %s: nothing to train; raise "
                            "train.steps to continue", self.step, cfg["train"]["steps"])
        main_process = self.rank == 0
        metrics_log = MetricsLog(self.out, cfg["log"], enabled=main_process, truncate_after=self.step)
        total = int(cfg["train"]["steps"])
        stop_after = int(cfg["train"].get("stop_after", 0))
        max_s = float(cfg["train"]["max_minutes"]) * 60
        t_start = time.perf_counter()
        bar = metrics_log.progress(total, self.step)
        last = {}
        ran = 0
        try:
            while self.step < total:
                step = self.step + 1
                for p in self.params:
                    p.requires_grad_(True)
                last = self.train_step(step)
                self.step = step
                ran += 1
                metrics_log.write(last)
                bar.update(last)
                every = int(cfg["checkpoint"]["every"])
                if (every and step % every == 0) or step == total:
                    self.save()
                s_every = int(cfg["log"]["sample_every"])
                if (main_process or self.fsdp) and s_every and step % s_every == 0:
                    self.save_samples(step)  # under FSDP every rank runs the forward (all-gathers), rank 0 writes
                if (main_process or self.fsdp) and (s_every and step % s_every == 0 or step == total):
                    self.save_attention_sheet(step)  # with each sample grid, and once at the end of the run
                if stop_after and ran >= stop_after:
                    break  # like a kill: no checkpoint beyond the periodic ones
                if max_s and distributed.any_rank(time.perf_counter() - t_start > max_s, self.world > 1,
                                                  self.device):
                    self.save()
                    break
        finally:
            bar.close()
            metrics_log.close()
            if self.decomposer is not None and main_process:
                log.info(self.decomposer.summary())
        return last


def render_source(case):
    from cogniedit.shapes.render import render_scene

    return render_scene(case.source, case.world)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m training.grpo", description="Dense GRPO LoRA trainer (docs/training.md).",
        epilog="Any key can also be given as a dotted flag: --objective.window 5 or --objective.window=5.")
    parser.add_argument("--config", help="YAML config (training/configs/shapeedit_dense.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a config key")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (<output_dir>/checkpoints/step-N)")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    return parser


def parse_args(argv):
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = list(args.set)
    i = 0
    while i < len(rest):  # dotted flags: --a.b=c or --a.b c
        item = rest[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            parser.error(f"unrecognised argument {item!r}; config keys look like --objective.window=5")
        if "=" in item:
            overrides.append(item[2:])
        elif i + 1 < len(rest):
            overrides.append(f"{item[2:]}={rest[i + 1]}")
            i += 1
        else:
            parser.error(f"{item} needs a value")
        i += 1
    return args, overrides


def main(argv=None) -> int:
    """The trainer command; a mistake in its input is one line on stderr (training.cli)."""
    argv = sys.argv[1:] if argv is None else argv
    return cli.run(lambda: _main(argv), argv)


def _main(argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args, overrides = parse_args(argv)
    config = load_config(args.config, overrides)
    if args.print_config:
        print(json.dumps(config, indent=2))
        return 0
    trainer = Trainer(config)
    try:
        last = trainer.train(resume=args.resume)
    finally:
        if trainer.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if last and trainer.rank == 0:
        print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
