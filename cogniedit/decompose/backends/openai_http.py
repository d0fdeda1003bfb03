"""An OpenAI-compatible server (/v1/chat/completions): vLLM, llama.cpp, LM Studio, Ollama, hosted APIs.

Standard library only (http.client), so the pack gains no dependency. The image travels as a base64 PNG
data URL. `settings.timeout_s` is a wall-clock deadline for the whole call (connecting, waiting,
reading and every retry), and `cancel` stops it at once (http_transport.py). Transient failures
(connection errors, HTTP 408/425/429/5xx) are retried with exponential backoff while time is left;
other HTTP errors, redirects and replies that are not chat completions raise a BackendError naming the
server, the status and what to check.

The API key goes only to `base_url` and never to a redirect target. Which key goes to which server is
the user's configuration (user_config.ServerProfile, `from_profile`), never the workflow's.
"""

from __future__ import annotations

import json
import socket
import time

from ..prompt import with_image_url
from ..settings import DecomposeSettings
from .base import BackendError, CancelCheck, Cancelled
from .http_transport import DeadlineExceeded, post, sleep_unless_cancelled

_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_MAX_BACKOFF_S = 30.0
MAX_REPLY_BYTES = 1 << 20  # a 65,536-character answer is at most ~400 KB of JSON (\uXXXX escapes)


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
                 sleep=None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        self.url = chat_completions_url(base_url)
        self.model = model
        self._api_key = api_key  # never part of identity() or any message
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep  # tests inject one; None sleeps in steps that honour cancel

    @classmethod
    def from_profile(cls, profile, model: str | None = None) -> "OpenAIHTTPBackend":
        """A server from the user's configuration: its URL, its key (only ever sent there) and its model."""
        return cls(profile.url, model or profile.model, api_key=profile.api_key(), extra_body=profile.extra_body)

    def identity(self) -> dict:
        return {"backend": self.name, "url": self.url, "model": self.model, "extra": self.extra_body}

    @property
    def sends_a_key(self) -> bool:
        return bool(self._api_key)

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

    def generate(self, messages, image, settings, cancel: CancelCheck | None = None) -> str:
        data = json.dumps(self.request_body(messages, image, settings)).encode()
        deadline = time.monotonic() + settings.timeout_s
        tries, last_error = 0, ""
        while tries <= settings.retries:
            if tries:
                delay = min(settings.backoff_s * 2 ** (tries - 1), _MAX_BACKOFF_S)
                if time.monotonic() + delay >= deadline:
                    break  # no time left for another try
                if self._sleep is None:
                    sleep_unless_cancelled(delay, cancel)
                else:
                    self._sleep(delay)
            tries += 1
            try:
                return self._post_once(data, deadline, settings.timeout_s, cancel)
            except _Transient as error:
                last_error = str(error)
        raise BackendError(f"{self.url}: no answer after {tries} {'try' if tries == 1 else 'tries'}; "
                           f"last error: {last_error}")

    def _post_once(self, data: bytes, deadline: float, timeout_s: float, cancel) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            status, payload, location = post(self.url, data, headers, deadline, cancel, MAX_REPLY_BYTES)
        except Cancelled:
            raise
        except (DeadlineExceeded, TimeoutError, socket.timeout):
            raise BackendError(f"{self.url}: timed out after {timeout_s:g} s (timeout_s is the deadline for the "
                               "whole request, retries included; raise it for slow models)") from None
        except (OSError, ConnectionError, ValueError) as error:  # refused, reset, DNS, TLS, bad URL
            raise _Transient(f"connection failed: {error}") from None
        except Exception as error:  # http.client.HTTPException: a broken or cut-off reply
            raise _Transient(f"bad reply: {type(error).__name__}: {error}") from None
        if 300 <= status < 400:
            raise BackendError(f"{self.url}: HTTP {status} redirect to {location[:200]!r} not followed (a key or "
                               "image is never passed on to another address); configure the final URL")
        if status >= 400:
            detail = payload[:500].decode("utf-8", "replace").strip()
            if status in _RETRY_STATUSES:
                raise _Transient(f"HTTP {status} {detail}")
            hint = " (check the API key)" if status in (401, 403) else " (check base_url and model name)" if status == 404 else ""
            raise BackendError(f"{self.url}: HTTP {status}{hint}: {detail[:300]}")
        if len(payload) > MAX_REPLY_BYTES:
            raise BackendError(f"{self.url}: reply larger than {MAX_REPLY_BYTES:,} bytes; not a chat completion")
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
