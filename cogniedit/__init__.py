"""CogniEdit core: host-free building blocks for fine-grained instruction editing.

Nothing in this package imports ComfyUI (`comfy`, `folder_paths`, `nodes`, `comfy_api`);
the adapters in the pack's `nodes/` folder are the only place that talks to the host.
Import submodules explicitly; this module stays light so `import cogniedit` is cheap.
"""

__version__ = "0.1.0"
