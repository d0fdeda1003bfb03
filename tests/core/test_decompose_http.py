"""The OpenAI-compatible HTTP backend against a real local server (http.server on 127.0.0.1)."""

import base64
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from cogniedit.decompose import DecomposeError, DecomposeSettings, OpenAIHTTPBackend, decompose
from cogniedit.decompose.backends.openai_http import chat_completions_url
from tests.fixtures.chat_server import ChatServer

FAST = DecomposeSettings(max_new_tokens=64, timeout_s=2.0, retries=2, backoff_s=0.01)


@pytest.fixture
def server():
    srv = ChatServer()
    yield srv
    srv.close()


@pytest.fixture
def image():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, :30] = (250, 250, 250)
    img[:, 30:] = (20, 40, 220)
    return img


def test_url_forms():
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    with pytest.raises(ValueError, match="http://"):
        OpenAIHTTPBackend("127.0.0.1:8000", "m")


def test_good_reply_sends_the_openai_protocol_with_the_image(server, image):
    backend = OpenAIHTTPBackend(server.url, "pebr-r1-7b", api_key="secret-key")
    result = decompose(image, "make the left cup red", backend, FAST)
    assert result.source == "mllm" and result.enriched_instruction == "Make the white cup on the left red."
    assert result.targets == ["one red cup on the left"]
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret-key"
    body = request["body"]
    assert body["model"] == "pebr-r1-7b" and body["max_tokens"] == 64 and body["stream"] is False
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    part = next(p for p in body["messages"][1]["content"] if p["type"] == "image_url")
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(sent, image)  # lossless, and small images are not resized
    assert "secret-key" not in json.dumps(backend.identity())


def test_large_images_are_shrunk_to_the_condition_area(server):
    big = np.full((800, 1200, 3), 128, dtype=np.uint8)
    decompose(big, "make it red", OpenAIHTTPBackend(server.url, "m"), FAST)
    url = server.requests[0]["body"]["messages"][1]["content"][0]["image_url"]["url"]
    w, h = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size
    assert w * h <= 384 * 384 and abs(w / h - 1.5) < 0.01


def test_timeout_falls_back_with_a_warning(server, image):
    server.script = [("sleep", 1.5)]
    settings = DecomposeSettings(timeout_s=0.2, retries=0)
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m"), settings)
    assert result.source == "fallback" and "timed out after 0.2 s" in result.warnings[-1]
    assert [p.text for p in result.focus] == ["left", "red"]


TRICKLE_BYTES = 60  # 30 s of trickling: a client without a real deadline takes all of it


def test_the_deadline_stops_a_server_that_trickles_its_reply(server, image):
    server.script = [("trickle", TRICKLE_BYTES)]
    settings = DecomposeSettings(timeout_s=1.0, retries=2, backoff_s=0.01)
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m"), settings)
    assert result.source == "fallback" and "timed out after 1 s" in result.warnings[-1]
    assert len(server.requests) == 1  # the deadline covers the retries too
    assert server.trickle_over.wait(30) and server.hung_up.is_set()
    assert server.trickled < TRICKLE_BYTES // 2  # the client hung up long before the server was done


def test_cancel_stops_a_trickling_reply_and_is_not_a_fallback(server, image):
    from cogniedit.decompose import Cancelled

    cancel = threading.Event()
    server.script = [("trickle", TRICKLE_BYTES)]
    server.on_trickle = lambda sent: cancel.set() if sent == 2 else None  # the user presses Cancel mid-reply
    with pytest.raises(Cancelled):
        decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m"),
                  DecomposeSettings(timeout_s=600.0), cancel=cancel)
    assert server.trickle_over.wait(30) and server.hung_up.is_set() and server.trickled < TRICKLE_BYTES // 2


def test_redirects_are_not_followed_so_the_key_stays_with_its_server(server, image):
    elsewhere = ChatServer()
    try:
        server.script = [("redirect", elsewhere.url + "/chat/completions")]
        result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m", api_key="k-1"), FAST)
        assert result.source == "fallback" and "redirect" in result.warnings[-1] and "not followed" in result.warnings[-1]
        assert server.requests[0]["headers"]["Authorization"] == "Bearer k-1"
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_http_500_then_success_is_retried(server, image):
    server.script = [("status", 500), ("status", 503)]
    slept = []
    backend = OpenAIHTTPBackend(server.url, "m", sleep=slept.append)
    result = decompose(image, "make the left cup red", backend, FAST)
    assert result.source == "mllm" and len(server.requests) == 3
    assert slept == [0.01, 0.02]  # exponential backoff


def test_retries_run_out_and_the_error_names_the_last_failure(server, image):
    server.script = [("status", 500)] * 3
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m", sleep=lambda s: None), FAST)
    assert result.source == "fallback" and "after 3 tries" in result.warnings[-1] and "HTTP 500" in result.warnings[-1]


def test_client_errors_are_not_retried_and_hint_at_the_fix(server, image):
    server.script = [("status", 401)]
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m"), FAST)
    assert len(server.requests) == 1 and "check the API key" in result.warnings[-1]


@pytest.mark.parametrize("reply", [
    ("raw", b"<html>not json</html>"), ("raw", b'{"choices": []}'), ("raw", b"\xff\xfe\x00garbage"),
    ("ok", "Sure! Here is a nice image."), ("ok", None), ("ok", "<answer></answer>"),
])
def test_garbage_replies_fall_back_to_rules(server, image, reply):
    server.script = [reply]
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend(server.url, "m"), FAST)
    assert result.source == "fallback" and result.warnings
    assert result.enriched_instruction == "make the left cup red" and [p.text for p in result.focus] == ["left", "red"]


def test_strict_mode_raises_instead(server, image):
    server.script = [("raw", b"garbage")]
    with pytest.raises(DecomposeError, match="not an OpenAI chat completion"):
        decompose(image, "make it red", OpenAIHTTPBackend(server.url, "m"), DecomposeSettings(strict=True))


def test_unreachable_server_falls_back(image):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = DecomposeSettings(timeout_s=0.5, retries=1, backoff_s=0.0)
    result = decompose(image, "make it red", OpenAIHTTPBackend(f"http://127.0.0.1:{port}", "m"), settings)
    assert result.source == "fallback" and "connection failed" in result.warnings[-1]


def test_an_http_proxy_from_the_environment_is_used(server, image, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url.rsplit("/", 1)[0])  # our server plays the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = decompose(image, "make the left cup red", OpenAIHTTPBackend("http://model-host.invalid:9/v1", "m"), FAST)
    assert result.source == "mllm" and server.requests[0]["path"] == "http://model-host.invalid:9/v1/chat/completions"
