"""Host tier fixtures: ComfyUI imported in this process (``comfy``), and one live ComfyUI server per test session
with this pack and the test-only pack loaded (``comfy_server``).

``comfy`` (session scope): ``comfy_inprocess.bootstrap`` (CPU), torch at one thread (the tiny models run fastest
that way and the tests stay reproducible).

``comfy_server`` (session scope) is a ``comfy_client.ComfyServer``: ``run(prompt)``, ``object_info()``,
``view(ref)``, ``output_images(entry, node)``, ``upload_image(name, png)``, ``install_model(folder, path)``,
``log_text()``, ``url``, ``models_dir``, ``input_dir``. The server runs ``main.py --cpu`` of the discovered ComfyUI
with the Python in ``COMFYUI_PYTHON`` or else this interpreter, on 127.0.0.1 and a free port, in a temporary
--base-directory whose custom_nodes/ links ``comfyui-cogniedit`` -> this repository and ``cogniedit-testing``
-> tests/host/testing_pack. It is stopped (SIGTERM, then SIGKILL) at the end of the session, even after errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # comfy_client, comfy_inprocess, ... importable by the host tests

from comfy_client import (  # noqa: E402
    PACK_NAME, REPO, TESTING_PACK, TESTING_PACK_NAME, ComfyServer, MissingRequirement, skip_or_fail)


@pytest.fixture(scope="session")
def comfy(comfyui_root):
    import torch
    from comfy_inprocess import bootstrap

    torch.set_num_threads(1)
    return bootstrap(comfyui_root)


@pytest.fixture(scope="session")
def comfy_server(comfyui_root):
    try:
        server = ComfyServer.start(comfyui_root, {PACK_NAME: REPO, TESTING_PACK_NAME: TESTING_PACK})
    except MissingRequirement as error:  # an interpreter without ComfyUI's requirements: skip, saying how to fix
        skip_or_fail(f"host tier: {error}")
    try:
        yield server
    finally:
        server.stop()
