"""A VLM judge behind an HTTP JSON contract (stdlib urllib; retries with back-off, per-request timeout).

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
import io
import json
import logging
import time
import urllib.error
import urllib.request

import numpy as np
import torch

from .base import check_batch, source_image

log = logging.getLogger(__name__)


class RewardServerError(RuntimeError):
    """The reward server did not answer usefully after all retries."""


def png_base64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png_base64(text: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


class VLMHTTPReward:
    name = "vlm_http"

    def __init__(self, url: str, dimensions=("alignment", "style", "consistency"), timeout_s: float = 60.0,
                 retries: int = 3, backoff_s: float = 1.0, send_case: bool = True):
        self.url = url
        self.dimensions = tuple(dimensions)
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.send_case = send_case

    def _payload(self, images, cases) -> bytes:
        items = []
        for i, (img, case) in enumerate(zip(images, cases)):
            item = {"id": f"{getattr(case, 'case_id', i)}#{i}", "instruction": case.instruction,
                    "image": png_base64(img), "source_image": png_base64(source_image(case))}
            if self.send_case and hasattr(case, "to_dict"):
                item["case"] = case.to_dict()
            items.append(item)
        return json.dumps({"dimensions": list(self.dimensions), "items": items}).encode()

    def _post(self, body: bytes) -> dict:
        last = None
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode())
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, OSError) as exc:
                last = exc
                if attempt < self.retries:
                    time.sleep(self.backoff_s * (2**attempt))
        raise RewardServerError(f"reward server {self.url} failed after {self.retries + 1} attempts ({last}); "
                                f"start it or set rewards.vlm_http.enabled=false")

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
            present = [float(v) for v in values if isinstance(v, (int, float))]
            if not present:
                raise RewardServerError(f"reward server {self.url} returned no {dim!r} score for any item")
            if len(present) < len(values):
                log.warning("vlm_http: %d of %d items lack %r; using the batch mean", len(values) - len(present),
                            len(values), dim)
            fill = float(np.mean(present))
            out[dim] = torch.tensor([float(v) if isinstance(v, (int, float)) else fill for v in values],
                                    dtype=torch.float64)
        return out
