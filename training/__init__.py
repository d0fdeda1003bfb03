"""The standalone Dense GRPO trainer (host-free; never imports ComfyUI). Entry point: ``python -m training.grpo``.

config.py      defaults, YAML + --set overrides           objectives.py  Dense GRPO and sparse (Flow-GRPO) losses
advantages.py  group / batch normalisation, filter        rewards/       reward plugins + reference HTTP server
lora.py        LoRA injection + ComfyUI-format file       checkpoint.py  atomic checkpoints with sha256 manifest
rollout.py     cached conditioning, SDE rollouts          models.py      base model loading (ShapeEdit, diffusers, single file)
tracking.py    metrics.jsonl, progress bar, tensorboard   grpo.py        the training loop and CLI
evaluate_lora.py  exact-scorer evaluation of a LoRA       tiny.py        tiny random editors for tests and benches
See docs/training.md.
"""
