"""A local reference reward server, for tests and dry runs: the vlm_http contract (``POST /score``) and an
OpenAI-compatible vision chat judge (``POST /v1/chat/completions``, what vlm_judge talks to).

It is deterministic: with a ShapeEdit ``case`` in the item (image records send their own ``case``) it judges with the exact scorer
(``alignment`` = 1 + 4 x fraction of requested changes right, ``consistency`` = 1 + 4 x SSIM outside the edit,
``style`` = 1 + 4 x fraction of pixels equal to a palette/background colour); without one (always, in chat) it scores
``consistency`` by pixel agreement with the source and the rest as 3. ``fail_first`` answers the first n
requests with HTTP 503 (to exercise retries).

The chat judge answers as ``chat_modes`` says, request after request (cycling): ``paper`` writes what a real
judge model writes for the paper's prompt (word-wise scores, bold markdown scores, reasons), ``malformed`` an
answer without scores, ``trickle`` the paper answer one byte every ``trickle_s`` seconds, ``silent`` nothing
(it holds the connection until the server stops). ``authorizations`` records the Authorization headers seen,
``trickled`` how many bytes each trickled answer sent.

    python -m training.rewards.reference_server --port 8080
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .judge_prompt import AXES
from .vlm_http import decode_png_base64

CHAT_MODES = ("paper", "malformed", "trickle", "silent")


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


def paper_answer(scores: dict, instruction: str) -> str:
    """What a judge model writes for the paper's prompt: word-wise scores, bold scores, reasons."""
    words = sorted(set(re.findall(r"[A-Za-z]{3,}", instruction)), key=len, reverse=True)[:3] or ["edit"]
    wordwise = ", ".join(f'["{w}", {round(5 - scores["alignment"], 1)}]' for w in words)
    lines = [f'Word-wise Scores: [{wordwise}, ["[No_mistakes]", {round(scores["alignment"], 1)}]]', ""]
    lines += [f"**{axis.capitalize()} Score (1-5):** {round(scores[axis], 2)}" for axis in AXES]
    lines += ["", "Reasons: the edited image follows the caption to the degree scored above, and keeps "
                  f"{round(100 * (scores['consistency'] - 1) / 4)} % of the original's pixels."]
    return "\n".join(lines)


def chat_judge(body: dict, mode: str) -> str:
    """The assistant's text for a chat request holding two data-URI images (edited, source) and the prompt."""
    content = body["messages"][-1]["content"]
    urls = [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]
    text = " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    if len(urls) != 2:
        raise ValueError(f"the judge takes 2 images (edited, source), got {len(urls)}")
    caption = re.search(r"Text Caption: \[(.*)\]", text, re.S)
    instruction = caption.group(1) if caption else text[-200:]
    if mode == "malformed":
        return "I am sorry, but I cannot rate these images. Alignment Score (1-5): X"
    edited, source = (u.split(",", 1)[1] for u in urls)
    return paper_answer(judge({"image": edited, "source_image": source}), instruction)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        server = self.server
        with server.lock:
            server.requests += 1
            n = server.requests
            failing = n <= server.fail_first
            server.authorizations.append(self.headers.get("Authorization"))
        if failing:
            self.send_response(503)
            self.end_headers()
            return
        chat = self.path.rstrip("/").endswith("/chat/completions")
        mode = server.chat_modes[(n - server.fail_first - 1) % len(server.chat_modes)] if chat else None
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if chat:
                if mode == "silent":
                    server.stopping.wait(300)
                    return
                answer = {"id": f"ref-{n}", "object": "chat.completion", "model": body.get("model"),
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": chat_judge(body, mode)}}]}
            else:
                scores = [judge(item) for item in body["items"]]
                dims = body.get("dimensions")
                if dims:
                    scores = [{d: s[d] for d in dims if d in s} for s in scores]
                answer = {"scores": scores}
            data, code = json.dumps(answer).encode(), 200
        except Exception as exc:  # a malformed request gets a 400 with the reason
            data, code = json.dumps({"error": str(exc)}).encode(), 400
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "trickle":
            self._trickle(data)
        else:
            self.wfile.write(data)

    def _trickle(self, data: bytes):
        sent = self.server.trickled
        with self.server.lock:
            slot = len(sent)
            sent.append(0)
        for i in range(len(data)):
            if self.server.stopping.wait(self.server.trickle_s):
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            sent[slot] = i + 1


class ReferenceRewardServer:
    """``with ReferenceRewardServer() as server: server.url`` (127.0.0.1, free port, background thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fail_first: int = 0, chat_modes=("paper",),
                 trickle_s: float = 0.05):
        unknown = [m for m in chat_modes if m not in CHAT_MODES]
        if unknown or not chat_modes:
            raise ValueError(f"chat_modes {list(chat_modes)}: each must be one of {CHAT_MODES}")
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.requests, self.httpd.fail_first, self.httpd.lock = 0, int(fail_first), threading.Lock()
        self.httpd.chat_modes, self.httpd.trickle_s = tuple(chat_modes), float(trickle_s)
        self.httpd.authorizations, self.httpd.stopping, self.httpd.trickled = [], threading.Event(), []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/score"

    @property
    def chat_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> int:
        return self.httpd.requests

    @property
    def authorizations(self) -> list:
        return list(self.httpd.authorizations)

    @property
    def trickled(self) -> list:
        """Bytes each trickled answer got out before the client gave up (or the server stopped)."""
        return list(self.httpd.trickled)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.stopping.set()  # silent and trickling handlers return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--chat-mode", choices=CHAT_MODES, default="paper", help="how the chat judge answers")
    args = parser.parse_args(argv)
    server = ReferenceRewardServer(args.host, args.port, chat_modes=(args.chat_mode,))
    print(f"reference reward server on {server.url} (vlm_http) and {server.chat_url} (vlm_judge)", flush=True)
    server.httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
