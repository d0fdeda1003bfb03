"""A live ComfyUI server with this pack and the tiny model files, for the workflow and browser tests.

Uses the suite's ``comfy_server`` fixture when conftest provides one (its ``url`` and ``models_dir``); otherwise
starts one ComfyUI per test process (shared by test_workflows.py and test_browser.py, stopped at exit) in a
temporary --base-directory holding custom_nodes/<pack> -> this repository and the tiny files.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import pytest
from comfy_client import ComfyClient

REPO = Path(__file__).resolve().parents[3]


class Server(ComfyClient):
    """The suite's HTTP client (tests/host/comfy_client.py: run() raises PromptRejected / ExecutionFailed with every
    node error) plus where the server's models and inputs live."""

    def __init__(self, url: str, models_dir: Path, input_dir: Path | None = None):
        super().__init__(url)
        self.models_dir, self.input_dir = Path(models_dir), input_dir
        self.placeholders = False  # True: empty files named like the real models are listed (own server only)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_OWN: dict = {}


def _start_own(comfyui_root: Path, prepare_models) -> Server:
    if "server" in _OWN:
        return _OWN["server"]
    base = Path(tempfile.mkdtemp(prefix="cogniedit-workflows-"))
    (base / "custom_nodes").mkdir()
    # Every model file is in place before start: the front end checks models against the asset list the
    # server scans at start-up, and ComfyUI caches file lists per folder.
    prepare_models(base / "models")
    (base / "user").mkdir()
    os.symlink(REPO, base / "custom_nodes" / "comfyui-cogniedit")
    port = _free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--disable-api-nodes", "--base-directory", str(base)],
        cwd=comfyui_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    server = Server(f"http://127.0.0.1:{port}", base / "models", base / "input")
    server.placeholders = True
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("ComfyUI exited while starting:\n" + (base / "server.log").read_text()[-3000:])
        try:
            server.get("/system_stats")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    else:
        pytest.fail("ComfyUI did not answer in 180 s:\n" + (base / "server.log").read_text()[-3000:])
    _OWN["server"] = server
    return server


def workflow_server(request, comfyui_root: Path) -> Server:
    """The live server with the tiny files written (the example source image comes with the pack)."""
    if "ready" in _OWN:
        return _OWN["ready"]
    from comfy_inprocess import bootstrap
    from workflow_specs import PLACEHOLDERS, SOURCE_IMAGE

    from .tiny_files import write_tiny_files, write_tiny_lora_and_focus

    comfy = bootstrap(comfyui_root)

    def prepare_models(models_dir: Path, placeholders: bool = True) -> None:
        write_tiny_files(comfy.comfy, models_dir)
        write_tiny_lora_and_focus(comfy.comfy, models_dir)
        for folder, names in PLACEHOLDERS.items() if placeholders else ():
            (models_dir / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                # Not empty: the server's asset scan skips empty files, and the front end checks models against it.
                (models_dir / folder / name).write_bytes(b"placeholder: not a model")

    try:
        shared = request.getfixturevalue("comfy_server")
        server = Server(shared.url, shared.models_dir)
        prepare_models(server.models_dir, placeholders=False)  # a shared models folder gets no empty files
    except pytest.FixtureLookupError:
        server = _start_own(comfyui_root, prepare_models)

    # The pack itself copies the examples' source image into the input folder when it loads (nodes/example_input.py).
    listed = server.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"]
    assert SOURCE_IMAGE in json.dumps(listed), f"{SOURCE_IMAGE} is not in the server's input folder: {listed}"
    _OWN["ready"] = server
    return server
