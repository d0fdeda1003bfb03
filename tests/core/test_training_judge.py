"""The vlm_judge reward against the local reference server on 127.0.0.1 speaking OpenAI chat completions: realistic
answers are scored, malformed ones are counted and left out (not scored 0), a trickling or silent server is cut
off by the wall-clock deadline, retries are bounded, and the key comes from the user's environment only."""

import json
import logging
import socket

import numpy as np
import pytest
import torch

from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.render import render_scene
from training.config import ConfigError, load_config
from training.rewards import build_rewards
from training.rewards.judge_prompt import PAPER_PROMPT, parse_judge_answer, render_prompt
from training.rewards.reference_server import ReferenceRewardServer
from training.rewards.vlm_http import RewardServerError
from training.rewards.vlm_judge import VLMJudgeReward

CASES = generate_cases(4, seed=5)
SOURCES = np.stack([render_scene(c.source, c.world) for c in CASES])
TARGETS = np.stack([render_scene(c.target, c.world) for c in CASES])


def judge(url, **kw):
    kw = {"timeout_s": 10, "retries": 0, "backoff_s": 0.01, "concurrency": 1, "parse_retries": 0, **kw}
    return VLMJudgeReward(url, "judge-model", ("alignment", "style", "consistency"), **kw)


@pytest.mark.parametrize("text, expected", [
    ('Word-wise Scores: [["red", 1], ["[No_mistakes]", 4]]\nAlignment Score (1-5): 4\nCoherence Score (1-5): 3\n'
     "Style Score (1-5): 4.5\nConsistency Score (1-5): 5\nReasons: ...",
     {"alignment": 4, "coherence": 3, "style": 4.5, "consistency": 5, "no_mistakes": 4}),
    ("<think>Alignment Score (1-5): 2?</think>\n**Alignment Score (1-5):** 4/5\n**Style Score (1-5)**: 3.",
     {"alignment": 4, "style": 3}),
    ('{"alignment": 4, "style": 3.5, "consistency": 2}', {"alignment": 4, "style": 3.5, "consistency": 2}),
    ("Consistency: 10 out of 10", {}),  # out of the 1-5 scale: not read as 1
    ("Alignment Score (1-5): X\nI cannot rate these images.", {}),
])
def test_the_reader_takes_the_scores_in_the_forms_models_write(text, expected):
    got = parse_judge_answer(text)
    got.pop("words")
    assert got == expected


def test_the_default_prompt_is_the_papers_with_the_instruction_in_place():
    text = render_prompt(PAPER_PROMPT, "make the   left cup red")
    assert text.endswith("Text Caption: [make the left cup red]")
    assert "Word-wise Scores" in text and "Consistency Score (1-5): W" in text


def test_realistic_answers_are_scored():
    with ReferenceRewardServer() as server:
        reward = judge(server.chat_url, concurrency=4)
        same = reward(SOURCES, CASES)      # the edit equals the source: fully consistent
        edited = reward(TARGETS, CASES)
        assert server.requests == 2 * len(CASES)
    assert torch.all(same["consistency"] == 5.0) and torch.all(same["alignment"] == 3.0)
    assert torch.all(edited["consistency"] < 5.0)
    assert torch.all(same["parsed"] == 1.0) and torch.all(edited["parsed"] == 1.0)
    assert reward.counts["unparseable"] == 0 and reward.counts["answers"] == 8


def test_unparseable_answers_are_counted_and_left_out_not_scored_zero(caplog):
    with ReferenceRewardServer(chat_modes=("paper", "malformed")) as server:
        reward = judge(server.chat_url)
        with caplog.at_level(logging.WARNING, logger="training.rewards.vlm_judge"):
            out = reward(TARGETS, CASES)
    assert out["parsed"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert reward.counts["unparseable"] == 2
    for dim in ("alignment", "style", "consistency"):  # the malformed ones take the mean of the answered ones
        answered = out[dim][[0, 2]]
        assert torch.all(out[dim][[1, 3]] == answered.mean()) and torch.all(out[dim] > 0)
    assert "2 of 4 answers without every score" in caplog.text and "cannot rate" in caplog.text


def test_an_unparseable_answer_is_asked_again():
    with ReferenceRewardServer(chat_modes=("malformed", "paper")) as server:
        out = judge(server.chat_url, parse_retries=1)(TARGETS[:2], CASES[:2])
        assert server.requests == 4
    assert out["parsed"].tolist() == [1.0, 1.0]


def test_a_judge_that_never_gives_scores_stops_the_run():
    with ReferenceRewardServer(chat_modes=("malformed",)) as server:
        reward = judge(server.chat_url, concurrency=4)
        for _ in range(3):
            out = reward(TARGETS, CASES)  # 4, 8, 12 answers: below the guard's minimum, scored with no signal
            assert torch.all(out["parsed"] == 0) and torch.all(out["alignment"] == out["alignment"][0])
        with pytest.raises(RewardServerError, match="16 of 16 answers .* held no scores.*check rewards.vlm_judge"):
            reward(TARGETS, CASES)


def test_a_trickling_server_is_cut_off_by_the_deadline():
    """The answer arrives one byte per 0.05 s (about 40 s in all): socket timeouts never fire, the deadline does."""
    with ReferenceRewardServer(chat_modes=("paper", "trickle")) as server:
        out = judge(server.chat_url, timeout_s=1.0)(TARGETS[:2], CASES[:2])
        assert server.requests == 2
    assert out["parsed"].tolist() == [1.0, 0.0]
    # the client stopped reading near the deadline, long before the answer was out (about 20 of 800+ bytes)
    assert len(server.trickled) == 1 and server.trickled[0] < 200
    with ReferenceRewardServer(chat_modes=("trickle",)) as server:
        with pytest.raises(RewardServerError, match="no answer .* for any of 1 images .*no complete answer within 1 s"):
            judge(server.chat_url, timeout_s=1.0, retries=1)(TARGETS[:1], CASES[:1])
        assert server.requests == 2  # one retry, then it gives up


def test_a_silent_server_and_no_server_give_up_after_bounded_retries():
    with ReferenceRewardServer(chat_modes=("silent",)) as server:
        with pytest.raises(RewardServerError, match="failed after 3 attempts .*within 0.5 s"):
            judge(server.chat_url, timeout_s=0.5, retries=2)(TARGETS[:1], CASES[:1])
        assert server.requests == 3
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RewardServerError, match="failed after 2 attempts.*start the judge server"):
        judge(f"http://127.0.0.1:{port}", retries=1)(TARGETS[:1], CASES[:1])


def test_server_errors_are_retried_with_backoff():
    with ReferenceRewardServer(fail_first=2) as server:
        out = judge(server.chat_url, retries=2)(TARGETS[:1], CASES[:1])
        assert server.requests == 3
    assert out["parsed"].tolist() == [1.0]


def _config(**section):
    return load_config(None, ["rewards.vlm_judge.enabled=true"] + [f"rewards.vlm_judge.{k}={v}"
                                                                       for k, v in section.items()])["rewards"]


def test_the_key_comes_from_the_environment_the_config_names(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_JUDGE_KEY", "sekrit-123")
    with ReferenceRewardServer() as server:
        plugins, weights = build_rewards(_config(url=server.chat_url, api_key_env="MY_JUDGE_KEY"))
        judge_plugin = plugins[-1]
        judge_plugin(TARGETS[:1], CASES[:1])
        plugins, _ = build_rewards(_config(url=server.chat_url))
        plugins[-1](TARGETS[:1], CASES[:1])
        assert server.authorizations == ["Bearer sekrit-123", None]
    assert weights["vlm_judge.alignment"] == 1.4 and "sekrit" not in repr(vars(judge_plugin).get("url"))
    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(ConfigError, match="MY_JUDGE_KEY, which is not set in your environment"):
        build_rewards(_config(api_key_env="MY_JUDGE_KEY"))


def test_the_prompt_is_config(tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Rate the edit for: {instruction}\nAlignment Score (1-5): X")
    with ReferenceRewardServer() as server:
        plugins, _ = build_rewards(_config(url=server.chat_url, prompt_file=str(prompt)))
        assert plugins[-1]._request(TARGETS[0], SOURCES[0], "make it red")["messages"][0]["content"][2]["text"] \
            == "Rate the edit for: make it red\nAlignment Score (1-5): X"
    with pytest.raises(ConfigError, match="must start with http"):
        build_rewards(_config(url="127.0.0.1:8000"))
    with pytest.raises(ConfigError, match="must contain {instruction}"):
        build_rewards(_config(prompt="Rate this edit"))
    with pytest.raises(ConfigError, match="prompt_file .* cannot read it"):
        build_rewards(_config(prompt_file=str(tmp_path / "missing.txt")))


def test_a_training_step_with_the_judge(tmp_path):
    from training.grpo import main
    from training.tiny import save_tiny_editor

    model = save_tiny_editor(tmp_path / "editor.safetensors")
    with ReferenceRewardServer(chat_modes=("paper", "paper", "paper", "malformed")) as server:
        args = [f"model.path={model}", f"output_dir={tmp_path / 'run'}", "train.steps=1", "rollout.steps=3",
                "objective.window=2", "rollout.group_size=2", "rollout.cases_per_step=2", "data.n_cases=8",
                "train.num_threads=1", "log.progress=false", "rewards.shapeedit.weights.score=0",
                "rewards.vlm_judge.enabled=true", f"rewards.vlm_judge.url={server.chat_url}",
                "rewards.vlm_judge.concurrency=1", "rewards.vlm_judge.parse_retries=0"]
        assert main([x for a in args for x in ("--set", a)]) == 0
        assert server.requests == 4
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["r/vlm_judge.parsed"] == 0.75 and 1 <= metrics["r/vlm_judge.consistency"] <= 5
