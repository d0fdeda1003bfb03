"""A real ComfyUI server in a subprocess, and a small HTTP client for it (API-format prompts as Python dicts).

    server = ComfyServer.start(comfyui_root, custom_nodes={"comfyui-cogniedit": REPO})
    try:
        entry = server.run({"1": {"class_type": ..., "inputs": {...}}})   # history entry; raises on errors
        png = server.view(entry["outputs"]["9"]["images"][0])
    finally:
        server.stop()

Failures read like the server's own words: a prompt refused by validation raises ``PromptRejected`` listing each
node's errors (HTTP 400 ``node_errors``), a failed execution raises ``ExecutionFailed`` with the node, the exception
and its traceback tail (``execution_error``); both append the tail of the server log.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTING_PACK = Path(__file__).resolve().parent / "testing_pack"
PACK_NAME = "comfyui-cogniedit"  # the folder name a user's custom_nodes/ would hold
TESTING_PACK_NAME = "cogniedit-testing"
MODEL_FOLDERS = ("diffusion_models", "vae", "vae_approx", "loras", "text_encoders", "cogniedit", "checkpoints")


class PromptRejected(AssertionError):
    """POST /prompt answered 400: the graph did not validate."""

    def __init__(self, message: str, body: dict):
        super().__init__(message)
        self.body = body


class ExecutionFailed(AssertionError):
    """The prompt was accepted but a node raised while it ran."""

    def __init__(self, message: str, entry: dict):
        super().__init__(message)
        self.entry = entry


class MissingRequirement(RuntimeError):
    def __init__(self, module: str, python: str):
        super().__init__(f"ComfyUI's requirement {module!r} is not installed in {python}; run the host tier with the "
                         "Python that runs ComfyUI (bash scripts/setup_env.sh builds .venv with it when a host is "
                         "found), or set COMFYUI_PYTHON")


def describe_rejection(body: dict) -> str:
    lines = [f"ComfyUI refused the prompt: {body.get('error', {}).get('message', body.get('error'))}"]
    for node_id, node in (body.get("node_errors") or {}).items():
        for error in node.get("errors", []):
            lines.append(f"  node {node_id} ({node.get('class_type')}): {error.get('message')}: {error.get('details')}")
    return "\n".join(lines)


def describe_execution_error(entry: dict) -> str:
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            trace = "".join(data.get("traceback") or [])[-2000:]
            return (f"node {data.get('node_id')} ({data.get('node_type')}) raised {data.get('exception_type')}: "
                    f"{data.get('exception_message')}\n{trace}")
    return f"prompt failed without an execution_error message: {entry.get('status')}"


class ComfyClient:
    """HTTP client of one ComfyUI server (every route of server.py that the tests use)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def log_tail(self, chars: int = 4000) -> str:  # a server we did not start has no log to show
        return ""

    def _with_log(self, message: str) -> str:
        tail = self.log_tail()
        return f"{message}\n--- server log (tail) ---\n{tail}" if tail else message

    def get(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.load(response)

    def post(self, path: str, data: bytes, content_type: str = "application/json"):
        """JSON answer; an HTTP error comes back as ``{"http_error": code, "body": json}`` for tests to inspect."""
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raw = error.read() or b"{}"
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"error": raw.decode(errors="replace")}
            return {"http_error": error.code, "body": body}

    def object_info(self) -> dict:
        return self.get("/object_info")

    def upload_image(self, name: str, png: bytes) -> dict:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + png + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
            f"--{boundary}--\r\n").encode()
        return self.post("/upload/image", body, f"multipart/form-data; boundary={boundary}")

    def queue(self, prompt: dict) -> str:
        """POST /prompt; the prompt id, or PromptRejected naming every node error."""
        answer = self.post("/prompt", json.dumps({"prompt": prompt, "client_id": self.client_id}).encode())
        if "prompt_id" not in answer:
            body = answer.get("body", answer)
            raise PromptRejected(self._with_log(describe_rejection(body)), body)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history until the prompt succeeded or failed (the history entry holds every websocket event)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.2)
        raise TimeoutError(self._with_log(f"prompt {prompt_id} did not finish in {timeout} s"))

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue, wait, and return the history entry; ExecutionFailed when a node raised."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"]["status_str"] != "success":
            raise ExecutionFailed(self._with_log(describe_execution_error(entry)), entry)
        return entry

    def check_alive(self) -> None:
        pass

    def view(self, ref: dict) -> bytes:
        query = urllib.parse.urlencode({k: ref.get(k, "") for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as response:
            return response.read()

    def output_images(self, entry: dict, node_id: str) -> list:
        """The PIL images a node (SaveImage/PreviewImage) produced, read back through /view."""
        from PIL import Image

        refs = entry.get("outputs", {}).get(str(node_id), {}).get("images", [])
        return [Image.open(io.BytesIO(self.view(ref))) for ref in refs]


def missing_requirement(log: str, comfyui_root: Path) -> str | None:
    """The module a failed start could not import when it is a requirement of ComfyUI (not ComfyUI's own code):
    the interpreter is not ComfyUI's, which is a set-up matter, not a test failure."""
    match = re.search(r"ModuleNotFoundError: No module named '([^']+)'", log)
    if not match:
        return None
    top = match.group(1).split(".")[0]
    root = Path(comfyui_root)
    return None if (root / top).exists() or (root / f"{top}.py").exists() else match.group(1)


def skip_or_fail(reason: str) -> None:
    """Skip a host test for a set-up reason, except under CI (CI=true), where the host tier must really run."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the host tier may not skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer(ComfyClient):
    """``main.py --cpu`` in a throw-away --base-directory: custom_nodes/ holds links to the given packs,
    models/ the usual folders (empty until a test links files in with ``install_model``)."""

    def __init__(self, url: str, process: subprocess.Popen, base: Path, log_path: Path, keep_base: bool):
        super().__init__(url)
        self.process, self.base, self.log_path, self._keep_base = process, base, log_path, keep_base
        self.models_dir = base / "models"
        self.input_dir = base / "input"
        self.output_dir = base / "output"

    @classmethod
    def command(cls, comfyui_root: Path, python: str, base: Path, port: int, *extra: str) -> list[str]:
        return [python, str(Path(comfyui_root) / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                "--base-directory", str(base), "--disable-auto-launch", "--disable-api-nodes",
                "--database-url", "sqlite:///:memory:", *extra]

    @classmethod
    def make_base(cls, custom_nodes: dict[str, Path], base: Path | None = None) -> Path:
        base = Path(base or tempfile.mkdtemp(prefix="cogniedit-comfy-"))
        for folder in ("custom_nodes", "input", "output", "temp", "user"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS:
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name, target in custom_nodes.items():
            os.symlink(Path(target).resolve(), base / "custom_nodes" / name)
        return base

    @classmethod
    def start(cls, comfyui_root: Path, custom_nodes: dict[str, Path], python: str | None = None,
              base: Path | None = None, startup_timeout: float = 240.0) -> "ComfyServer":
        python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
        keep = base is not None
        base = cls.make_base(custom_nodes, base)
        port = free_port()
        log_path = base / "server.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(cls.command(comfyui_root, python, base, port), cwd=comfyui_root,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        server = cls(f"http://127.0.0.1:{port}", process, base, log_path, keep)
        try:
            server._wait_ready(startup_timeout)
        except BaseException:
            module = missing_requirement(server.log_text(), comfyui_root)
            server.stop()
            if module:
                raise MissingRequirement(module, python) from None
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self.get("/system_stats", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise TimeoutError(self._with_log(f"ComfyUI did not answer /system_stats within {timeout} s"))

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(self._with_log(f"ComfyUI exited with code {code}"))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def install_model(self, folder: str, source: Path, name: str | None = None) -> str:
        """Link a model file into models/<folder>/ and return the name the loaders list it under."""
        target = self.models_dir / folder / (name or Path(source).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(Path(source).resolve(), target)
        return target.name

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 20 s; remove the base directory we made."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
            except ProcessLookupError:
                pass
        if not self._keep_base:
            shutil.rmtree(self.base, ignore_errors=True)
