"""The user's own configuration: which servers the decomposer may call (with which keys), and which
folders outside ComfyUI's model folders transformers models may be loaded from.

A workflow is shared content: it may name a server profile, never pair a key with an address of its
choosing, and it may name a model folder, never widen where models are read from. Both belong here, in
a JSON file the user writes (the ComfyUI node reads `<ComfyUI user dir>/__cogniedit/config.json`, or
the file named by the environment variable COGNIEDIT_CONFIG; docs/security.md):

    {
      "servers": {
        "local-vllm": {"url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-7B-Instruct"},
        "openai": {"url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}
      },
      "model_folders": ["/data/vlm-models"],
      "workflow_server_urls": "local"
    }

`workflow_server_urls` says where a workflow's own server_url may point (it never gets a key): "local"
(the default: this machine only, so a shared workflow cannot send the user's image elsewhere), "any",
or "none" (profiles only).

A missing file is an empty configuration. A malformed one raises ValueError: one line naming the file,
the problem and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ENV_CONFIG = "COGNIEDIT_CONFIG"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = ("servers", "model_folders", "workflow_server_urls")
WORKFLOW_URL_POLICIES = ("local", "any", "none")
_SERVER_KEYS = ("url", "model", "api_key", "api_key_env", "extra_body")


@dataclass(frozen=True)
class ServerProfile:
    """One server the user allows: its URL, optionally the model it serves and where its key comes from."""

    name: str
    url: str
    model: str = ""
    api_key_env: str = ""  # an environment variable the user named in their own file
    extra_body: dict = field(default_factory=dict)
    literal_key: str = field(default="", repr=False)  # a key written into the file itself

    def api_key(self) -> str | None:
        if self.literal_key:
            return self.literal_key
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None

    def key_note(self) -> str | None:
        """Why no key is sent although the profile asks for one (for the report), else None."""
        if self.api_key_env and not self.literal_key and not os.environ.get(self.api_key_env):
            return f"server profile {self.name!r}: the environment variable {self.api_key_env} is not set; no key sent"
        return None


@dataclass(frozen=True)
class UserConfig:
    path: Path | None = None
    servers: dict = field(default_factory=dict)
    model_folders: tuple = ()
    workflow_server_urls: str = "local"

    def check_workflow_url(self, url: str) -> None:
        """ValueError (naming the fix) unless a workflow may send a request, without a key, to `url`."""
        policy = self.workflow_server_urls
        if policy == "any" or (policy == "local" and is_local_url(url)):
            return
        where = "any server_url" if policy == "none" else f"server_url {url!r}, which is not on this machine"
        raise ValueError(f"a workflow may not choose {where} (\"workflow_server_urls\": \"{policy}\" in {self.path}): "
                         "add a server profile for it there and set server_profile (docs/security.md)")

    def server(self, name: str) -> ServerProfile:
        if name in self.servers:
            return self.servers[name]
        known = ", ".join(sorted(self.servers)) or "none"
        raise ValueError(f"{self.path}: no server profile {name!r} (defined: {known}); add it under \"servers\" "
                         "(docs/security.md) or pick another server_profile")


def _problem(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message} (format: docs/security.md)")


def _server(path: Path, name: str, data) -> ServerProfile:
    if not _NAME.match(name):
        raise _problem(path, f"server profile name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(data, dict):
        raise _problem(path, f"servers.{name} must be an object like {{\"url\": \"http://127.0.0.1:8000/v1\"}}")
    unknown = sorted(set(data) - set(_SERVER_KEYS))
    if unknown:
        raise _problem(path, f"servers.{name} has unknown keys {unknown}; allowed: {list(_SERVER_KEYS)}")
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _problem(path, f"servers.{name}.url must be an http:// or https:// URL, got {url!r}")
    strings = {key: data.get(key, "") for key in ("model", "api_key", "api_key_env")}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise _problem(path, f"servers.{name}.{key} must be a string")
    extra = data.get("extra_body", {})
    if not isinstance(extra, dict):
        raise _problem(path, f"servers.{name}.extra_body must be an object")
    return ServerProfile(name=name, url=url, model=strings["model"], api_key_env=strings["api_key_env"],
                         extra_body=extra, literal_key=strings["api_key"])


def _folder(path: Path, entry) -> Path:
    if not isinstance(entry, str) or not entry.strip():
        raise _problem(path, f"model_folders entries must be folder paths, got {entry!r}")
    folder = Path(os.path.expanduser(entry))
    return folder if folder.is_absolute() else path.parent / folder


def load_user_config(path: str | os.PathLike | None) -> UserConfig:
    """The configuration in `path` (JSON); an empty one when the file does not exist."""
    if path is None:
        return UserConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserConfig(path=path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the CogniEdit configuration ({error.strerror}); check its permissions")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise _problem(path, f"not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise _problem(path, "the configuration must be a JSON object")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise _problem(path, f"unknown keys {unknown}; allowed: {list(_TOP_KEYS)}")
    servers, folders = data.get("servers", {}), data.get("model_folders", [])
    policy = data.get("workflow_server_urls", "local")
    if policy not in WORKFLOW_URL_POLICIES:
        raise _problem(path, f"\"workflow_server_urls\" must be one of {list(WORKFLOW_URL_POLICIES)}, got {policy!r}")
    if not isinstance(servers, dict):
        raise _problem(path, "\"servers\" must be an object of named profiles")
    if not isinstance(folders, list):
        raise _problem(path, "\"model_folders\" must be a list of folder paths")
    return UserConfig(path=path, servers={name: _server(path, name, value) for name, value in servers.items()},
                      model_folders=tuple(_folder(path, entry) for entry in folders), workflow_server_urls=policy)


def is_local_url(url: str) -> bool:
    """The URL's host is this machine: localhost or a literal loopback/unspecified address (no DNS lookup,
    so a name cannot be re-pointed between the check and the connection)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def config_path(default: str | os.PathLike | None) -> Path | None:
    """COGNIEDIT_CONFIG when the user set it, else `default`."""
    chosen = os.environ.get(ENV_CONFIG) or default
    return Path(chosen) if chosen else None
