"""An OpenAI-compatible server (/v1/chat/completions): vLLM, llama.cpp, LM Studio, Ollama, hosted APIs.

Standard library only (urllib), so the pack gains no dependency. The image travels as a base64 PNG
data URL. Transient failures (connection errors, timeouts, HTTP 408/429/5xx) are retried with
exponential backoff; other HTTP errors and replies that are not chat completions raise a
BackendError naming the server, the status and what to check.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

from ..prompt import with_image_url
from ..settings import DecomposeSettings
from .base import BackendError

_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_MAX_BACKOFF_S = 30.0
_MAX_REPLY_BYTES = 8 * 1024 * 1024


def chat_completions_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class _Transient(Exception):
    pass


class OpenAIHTTPBackend:
    name = "openai_http"
    uses_model = True

    def __init__(self, base_url: str, model: str, api_key: str | None = None, extra_body: dict | None = None,
                 sleep=time.sleep):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        self.url = chat_completions_url(base_url)
        self.model = model
        self._api_key = api_key  # never part of identity() or any message
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep

    def identity(self) -> dict:
        return {"backend": self.name, "url": self.url, "model": self.model, "extra": self.extra_body}

    def request_body(self, messages, image, settings: DecomposeSettings) -> dict:
        body = {
            "model": self.model,
            "messages": with_image_url(messages, image),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "stream": False,
        }
        if settings.temperature > 0:
            body.update(top_p=settings.top_p, seed=settings.seed)
        body.update(self.extra_body)
        return body

    def generate(self, messages, image, settings) -> str:
        data = json.dumps(self.request_body(messages, image, settings)).encode()
        attempts = settings.retries + 1
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                self._sleep(min(settings.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))
            try:
                return self._post_once(data, settings.timeout_s)
            except _Transient as error:
                last_error = str(error)
        raise BackendError(f"{self.url}: no answer after {attempts} tries; last error: {last_error}")

    def _post_once(self, data: bytes, timeout_s: float) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                payload = response.read(_MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as error:
            detail = error.read(500).decode("utf-8", "replace").strip()
            if error.code in _RETRY_STATUSES:
                raise _Transient(f"HTTP {error.code} {detail}") from None
            hint = " (check the API key)" if error.code in (401, 403) else " (check base_url and model name)" if error.code == 404 else ""
            raise BackendError(f"{self.url}: HTTP {error.code}{hint}: {detail[:300]}") from None
        except (TimeoutError, socket.timeout):
            raise _Transient(f"timed out after {timeout_s:g} s") from None
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            raise _Transient(f"connection failed: {getattr(error, 'reason', error)}") from None
        if len(payload) > _MAX_REPLY_BYTES:
            raise BackendError(f"{self.url}: reply larger than {_MAX_REPLY_BYTES} bytes; not a chat completion")
        return _completion_text(payload, self.url)


def _completion_text(payload: bytes, url: str) -> str:
    try:
        reply = json.loads(payload.decode("utf-8"))
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        snippet = payload[:200].decode("utf-8", "replace")
        raise BackendError(f"{url}: the reply is not an OpenAI chat completion: {snippet!r}") from None
    if content is None:
        return ""
    if isinstance(content, list):  # some servers return content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)
