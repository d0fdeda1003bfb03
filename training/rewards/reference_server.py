"""A local reference reward server that speaks the vlm_http contract, for tests and dry runs.

It is deterministic: with a ShapeEdit ``case`` in the item (image records send their own ``case``) it judges with the exact scorer
(``alignment`` = 1 + 4 x fraction of requested changes right, ``consistency`` = 1 + 4 x SSIM outside the edit,
``style`` = 1 + 4 x fraction of pixels equal to a palette/background colour); without one it scores
``consistency`` by pixel agreement with the source and the rest as 3. ``fail_first`` answers the first n
requests with HTTP 503 (to exercise retries).

    python -m training.rewards.reference_server --port 8080
"""

from __future__ import annotations

import argparse
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .vlm_http import decode_png_base64


def judge(item: dict) -> dict:
    edited = decode_png_base64(item["image"])
    source = decode_png_base64(item["source_image"])
    if isinstance(item.get("case"), dict) and "source" in item["case"]:  # a ShapeEdit case (image records differ)
        from cogniedit.shapes.cases import EditCase
        from cogniedit.shapes.scorer import score_edit

        case = EditCase.from_dict(item["case"])
        s = score_edit(edited, case)
        checks = [v for v in (s.colour_ok, s.position_ok, s.count_ok) if v is not None]
        requested = float(np.mean(checks)) if checks else float(s.success)
        ssim = 1.0 if math.isnan(s.ssim) else max(0.0, min(1.0, s.ssim))
        palette = np.array([case.world.background] + list(case.world.colour_map.values()), np.int16)
        near = np.abs(edited[:, :, None, :].astype(np.int16) - palette[None, None]).max(-1).min(-1) <= 8
        return {"alignment": 1 + 4 * requested, "consistency": 1 + 4 * ssim, "style": 1 + 4 * float(near.mean()),
                "coherence": 3.0}
    agree = float((np.abs(edited.astype(np.int16) - source.astype(np.int16)).max(-1) <= 8).mean())
    return {"alignment": 3.0, "consistency": 1 + 4 * agree, "style": 3.0, "coherence": 3.0}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        server = self.server
        with server.lock:
            server.requests += 1
            failing = server.requests <= server.fail_first
        if failing:
            self.send_response(503)
            self.end_headers()
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            scores = [judge(item) for item in body["items"]]
            dims = body.get("dimensions")
            if dims:
                scores = [{d: s[d] for d in dims if d in s} for s in scores]
            data, code = json.dumps({"scores": scores}).encode(), 200
        except Exception as exc:  # a malformed request gets a 400 with the reason
            data, code = json.dumps({"error": str(exc)}).encode(), 400
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ReferenceRewardServer:
    """``with ReferenceRewardServer() as server: server.url`` (127.0.0.1, free port, background thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fail_first: int = 0):
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.requests, self.httpd.fail_first, self.httpd.lock = 0, int(fail_first), threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/score"

    @property
    def requests(self) -> int:
        return self.httpd.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = ReferenceRewardServer(args.host, args.port)
    print(f"reference reward server on {server.url}", flush=True)
    server.httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
