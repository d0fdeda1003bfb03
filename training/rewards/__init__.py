"""Reward plugins (one interface, see base.py) and the config-driven registry."""

from __future__ import annotations

import torch

from ..config import ConfigError
from .base import Reward, source_image
from .preservation import PreservationReward
from .shapeedit import ShapeEditReward
from .vlm_http import RewardServerError, VLMHTTPReward
from .vlm_judge import VLMJudgeReward

PLUGINS = ("shapeedit", "preservation", "vlm_http", "vlm_judge")


def build_rewards(config: dict) -> tuple[list, dict]:
    """Enabled plugins and the flat weights ``{"plugin.dimension": weight}`` from the ``rewards`` section."""
    plugins, weights = [], {}
    for name, section in config.items():
        if not isinstance(section, dict) or not section.get("enabled", False):
            continue
        if name == "shapeedit":
            plugin = ShapeEditReward()
        elif name == "preservation":
            plugin = PreservationReward()
        elif name == "vlm_http":
            dims = tuple(section.get("dimensions") or section.get("weights", {}).keys())
            plugin = VLMHTTPReward(section["url"], dims, section.get("timeout_s", 60.0), section.get("retries", 3),
                                   section.get("backoff_s", 1.0))
        elif name == "vlm_judge":
            dims = tuple(section.get("dimensions") or section.get("weights", {}).keys())
            plugin = VLMJudgeReward.from_config(section, dims)
        else:
            raise ConfigError(f"unknown reward plugin rewards.{name}; known: {', '.join(PLUGINS)}")
        for dim, w in (section.get("weights") or {}).items():
            if dim not in plugin.dimensions:
                raise ConfigError(f"rewards.{name}.weights.{dim}: {name} has dimensions {list(plugin.dimensions)}")
            weights[f"{name}.{dim}"] = float(w)
        plugins.append(plugin)
    if not plugins:
        raise ConfigError("no reward plugin is enabled; set rewards.shapeedit.enabled=true (or another plugin)")
    return plugins, weights


def score_all(plugins, edited_images, cases) -> dict[str, torch.Tensor]:
    out = {}
    for plugin in plugins:
        for dim, values in plugin(edited_images, cases).items():
            out[f"{plugin.name}.{dim}"] = values
    return out


__all__ = ["Reward", "ShapeEditReward", "PreservationReward", "VLMHTTPReward", "VLMJudgeReward", "RewardServerError",
           "build_rewards",
           "score_all", "source_image", "PLUGINS"]
