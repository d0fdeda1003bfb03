"""ComfyUI adapters of the CogniEdit core (V3 schema). Only this folder imports ComfyUI."""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger("cogniedit")

# Each adapter module exposes NODES: list[type[io.ComfyNode]]. Stable ids start with "CogniEdit".
NODE_MODULES = [
    "shapes",
    "sampler",
    "loader",
    "decompose",
    "focus",
]


def all_nodes() -> list[type[io.ComfyNode]]:
    found = []
    for name in NODE_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        found.extend(module.NODES)
    return found


class CogniEditExtension(ComfyExtension):
    async def on_load(self) -> None:
        import folder_paths

        from .example_input import install_example_image

        install_example_image(folder_paths.get_input_directory())

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()
