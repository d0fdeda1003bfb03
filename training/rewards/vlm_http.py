"""A VLM judge behind an HTTP JSON contract, and the HTTP machinery every judge plugin shares (stdlib only):
``post_with_deadline`` (one request under a wall-clock limit, through the pack's deadline transport) and
``post_json`` (retries with bounded back-off).

Request (POST, ``Content-Type: application/json``)::

    {"dimensions": ["alignment", "style", "consistency"],
     "items": [{"id": "case-0#1", "instruction": "...", "image": "<base64 PNG, edited>",
                "source_image": "<base64 PNG>", "case": {...ShapeEdit case JSON, optional...}}, ...]}

Response: ``{"scores": [{"alignment": 4.0, "style": 3.5, "consistency": 5.0}, ...]}`` (one entry per item, same
order; any numbers, higher = better; the authors' judge answers 1-5). A missing dimension in one entry takes that
dimension's mean over the batch (the authors' fallback) and is logged; missing everywhere is an error.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import time
import urllib.parse

import numpy as np
import torch

from cogniedit.decompose.backends import http_transport

from .base import check_batch, source_image

log = logging.getLogger(__name__)

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}  # worth another try; other HTTP errors are the request's fault
MAX_REPLY_BYTES = 8 * 1024 * 1024


class RewardServerError(RuntimeError):
    """The reward server did not answer usefully; the message names the fix."""


class RewardServerUnreachable(RewardServerError):
    """No usable answer after every retry (down, too slow, or failing): a judge may skip the item."""


def png_base64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png_base64(text: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def with_batch_mean(values) -> torch.Tensor | None:
    """float64 scores where a missing one (None) takes the mean of the others (the authors' fallback); None when
    every one is missing."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    fill = float(np.mean(present))
    return torch.tensor([fill if v is None else float(v) for v in values], dtype=torch.float64)


def post_with_deadline(url: str, body: bytes, headers: dict, deadline_s: float,
                       max_bytes: int = MAX_REPLY_BYTES) -> tuple[int, bytes]:
    """POST ``body``; ``(status, reply bytes)``. ``deadline_s`` bounds the whole request (connect, send, headers,
    body): a server that trickles bytes or never answers is given up on then (TimeoutError). The pack's one
    deadline transport does the exchange (redirects are not followed)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RewardServerError(f"{url!r} is not an http:// or https:// URL; set the reward plugin's url")
    try:
        status, reply, _ = http_transport.post(url, body, headers, time.monotonic() + deadline_s, max_bytes=max_bytes)
    except TimeoutError:  # the deadline, or the socket timing out at it
        raise TimeoutError(f"no complete answer within {deadline_s:g} s") from None
    if len(reply) > max_bytes:
        raise RewardServerError(f"{url}: reply larger than {max_bytes} bytes; not a judge's answer")
    return status, reply


def post_json(url: str, payload: dict, timeout_s: float, retries: int, backoff_s: float, fix: str,
              headers: dict | None = None, max_backoff_s: float = 30.0, sleep=time.sleep) -> dict:
    """The JSON reply to ``payload``. Connection errors, deadlines, HTTP 408/429/5xx and non-JSON replies are
    retried ``retries`` times with exponential back-off from ``backoff_s`` (at most ``max_backoff_s`` between
    tries), then ``RewardServerUnreachable``; other HTTP errors raise ``RewardServerError`` at once. ``fix`` ends
    the messages (what the user should do); ``headers`` never appear in them."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))
        try:
            status, data = post_with_deadline(url, body, headers, timeout_s)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            last = str(exc) or type(exc).__name__
            continue
        if status in RETRY_STATUSES:
            last = f"HTTP {status}"
            continue
        if status >= 400:
            hint = {401: " (check the API key)", 403: " (check the API key)", 404: " (check the url and model)"}
            detail = " ".join(data[:300].decode("utf-8", "replace").split())
            raise RewardServerError(f"reward server {url}: HTTP {status}{hint.get(status, '')}: {detail}; {fix}")
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            last = f"not JSON: {data[:80]!r}"
    raise RewardServerUnreachable(f"reward server {url} failed after {retries + 1} attempts ({last}); {fix}")


class VLMHTTPReward:
    name = "vlm_http"

    def __init__(self, url: str, dimensions=("alignment", "style", "consistency"), timeout_s: float = 60.0,
                 retries: int = 3, backoff_s: float = 1.0, send_case: bool = True):
        self.url = url
        self.dimensions = tuple(dimensions)
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.send_case = send_case

    def _payload(self, images, cases) -> dict:
        items = []
        for i, (img, case) in enumerate(zip(images, cases)):
            item = {"id": f"{getattr(case, 'case_id', i)}#{i}", "instruction": case.instruction,
                    "image": png_base64(img), "source_image": png_base64(source_image(case))}
            if self.send_case and hasattr(case, "to_dict"):
                item["case"] = case.to_dict()
            items.append(item)
        return {"dimensions": list(self.dimensions), "items": items}

    def _post(self, body: dict) -> dict:
        return post_json(self.url, body, self.timeout_s, self.retries, self.backoff_s,
                         "start it or set rewards.vlm_http.enabled=false")

    def __call__(self, edited_images, cases):
        images = check_batch(edited_images, cases)
        answer = self._post(self._payload(images, cases))
        scores = answer.get("scores") if isinstance(answer, dict) else None
        if not isinstance(scores, list) or len(scores) != len(cases):
            raise RewardServerError(f"reward server {self.url} must answer {{\"scores\": [...]}} with {len(cases)} "
                                    f"entries; got {str(answer)[:200]}")
        out = {}
        for dim in self.dimensions:
            values = [s.get(dim) if isinstance(s, dict) else None for s in scores]
            values = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values]
            out[dim] = with_batch_mean(values)
            if out[dim] is None:
                raise RewardServerError(f"reward server {self.url} returned no {dim!r} score for any item")
            if None in values:
                log.warning("vlm_http: %d of %d items lack %r; using the batch mean", values.count(None),
                            len(values), dim)
        return out
