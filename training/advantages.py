"""Advantages from per-dimension rewards: group or batch normalisation, clipping, low-variance group filter.

Rewards arrive as ``{dimension: tensor [B*G]}`` ordered case-major (the G samples of case 0 first). With
``combine="reward"`` the weighted sum is normalised; with ``combine="advantage"`` each dimension is normalised
first and the advantages are summed with the weights (what the authors' script does: 1.4 A_align + 0.7 A_style
+ 1.0 A_consistency). ``mode="group"``: statistics per case over its G samples (GRPO); ``mode="batch"``: over all
B*G rewards (paper section 4.2, Flow-GRPO global_std). Groups whose combined-reward std is below
``min_group_std`` get advantage 0 and are masked out of the loss (Edit-R1's ``ban_std_thres``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_EPS = 1e-8  # as the authors' script and Flow-GRPO


@dataclass
class Advantages:
    values: torch.Tensor     # [B*G] float64
    mask: torch.Tensor       # [B*G] bool: trajectories that enter the loss
    reward: torch.Tensor     # [B*G] combined (weighted) reward, for logging
    group_std: torch.Tensor  # [B] std of the combined reward per case


def weighted_reward(rewards: dict, weights: dict) -> torch.Tensor:
    missing = [k for k, w in weights.items() if w and k not in rewards]
    if missing:
        raise ValueError(f"reward weights name dimension(s) {missing} that no enabled reward plugin returned "
                         f"(got {sorted(rewards)})")
    terms = [float(w) * rewards[k].to(torch.float64) for k, w in weights.items() if w]
    if not terms:
        raise ValueError("all reward weights are 0: give at least one dimension a weight")
    return torch.stack(terms).sum(0)


def _normalise(r: torch.Tensor, group_size: int, mode: str) -> torch.Tensor:
    if mode == "batch":
        return (r - r.mean()) / (r.std(unbiased=False) + STD_EPS)
    g = r.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, unbiased=False, keepdim=True) + STD_EPS)).reshape(-1)


def compute_advantages(rewards: dict, weights: dict, group_size: int, mode: str = "group", clip_max: float = 5.0,
                       min_group_std: float = 0.0, combine: str = "reward") -> Advantages:
    reward = weighted_reward(rewards, weights)
    if reward.numel() % group_size:
        raise ValueError(f"{reward.numel()} rewards do not split into groups of {group_size}")
    if mode not in ("group", "batch"):
        raise ValueError(f"advantages.mode must be group or batch, got {mode!r}")
    if combine == "reward":
        adv = _normalise(reward, group_size, mode)
    elif combine == "advantage":
        adv = torch.stack([float(w) * _normalise(rewards[k].to(torch.float64), group_size, mode)
                           for k, w in weights.items() if w]).sum(0)
    else:
        raise ValueError(f"advantages.combine must be reward or advantage, got {combine!r}")
    adv = adv.clamp(-clip_max, clip_max)
    group_std = reward.view(-1, group_size).std(1, unbiased=False) if group_size > 1 \
        else torch.full((reward.numel(),), float("inf"), dtype=torch.float64)
    keep_group = group_std >= min_group_std if min_group_std > 0 else torch.ones_like(group_std, dtype=torch.bool)
    mask = keep_group.repeat_interleave(group_size)
    adv = torch.where(mask, adv, torch.zeros_like(adv))
    return Advantages(adv, mask, reward, group_std)
