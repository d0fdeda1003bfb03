"""Reward plugins: the exact ShapeEdit scorer, preservation, and the VLM HTTP contract against the local
reference server (retries, timeouts, missing-dimension fallback)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.render import render_scene
from training.rewards import build_rewards, score_all
from training.rewards.reference_server import ReferenceRewardServer
from training.rewards.vlm_http import RewardServerError, VLMHTTPReward

CASES = generate_cases(4, seed=5)


def _targets_and_sources():
    targets = np.stack([render_scene(c.target, c.world) for c in CASES])
    sources = np.stack([render_scene(c.source, c.world) for c in CASES])
    return targets, sources


def test_shapeedit_reward_is_one_for_the_target_and_lower_for_the_source():
    plugins, weights = build_rewards({"shapeedit": {"enabled": True, "weights": {"score": 1.0}},
                                      "preservation": {"enabled": True, "weights": {"ssim": 1.0}}})
    targets, sources = _targets_and_sources()
    good = score_all(plugins, targets, CASES)
    bad = score_all(plugins, sources, CASES)
    assert torch.all(good["shapeedit.score"] == 1.0) and torch.all(good["shapeedit.success"] == 1.0)
    assert torch.all(bad["shapeedit.success"] == 0.0) and torch.all(bad["shapeedit.score"] < 1.0)
    assert torch.all(good["preservation.ssim"] == 1.0)
    assert set(weights) == {"shapeedit.score", "preservation.ssim"}


def test_vlm_reward_over_http_with_retries():
    targets, sources = _targets_and_sources()
    with ReferenceRewardServer(fail_first=2) as server:
        reward = VLMHTTPReward(server.url, ("alignment", "consistency", "style"), timeout_s=5, retries=2,
                               backoff_s=0.01)
        good = reward(targets, CASES)
        bad = reward(sources, CASES)
        assert server.requests == 4  # two 503s, then two answers
    assert torch.all(good["alignment"] == 5.0)
    assert torch.all(bad["alignment"] < good["alignment"])
    assert torch.all(good["consistency"] == 5.0)


def test_vlm_reward_gives_up_with_a_clear_error():
    targets, _ = _targets_and_sources()
    with ReferenceRewardServer(fail_first=10) as server:
        reward = VLMHTTPReward(server.url, retries=1, backoff_s=0.01, timeout_s=5)
        with pytest.raises(RewardServerError, match="failed after 2 attempts"):
            reward(targets, CASES)


class _SlowPartial(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scores = [{"alignment": float(i)} if i else {} for i in range(len(body["items"]))]
        data = json.dumps({"scores": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_missing_dimension_takes_the_batch_mean():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPartial)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        targets, _ = _targets_and_sources()
        reward = VLMHTTPReward(f"http://127.0.0.1:{httpd.server_address[1]}/", ("alignment",), timeout_s=5)
        out = reward(targets, CASES)
        assert out["alignment"].tolist() == [2.0, 1.0, 2.0, 3.0]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unknown_weight_dimension_is_rejected():
    with pytest.raises(ValueError, match="has dimensions"):
        build_rewards({"shapeedit": {"enabled": True, "weights": {"colour": 1.0}}})
