"""The user's configuration: server profiles pair a key with the profile's own URL only, a workflow-given
URL gets no key, and a malformed file is one line naming the file and the fix."""

import json

import numpy as np
import pytest

from cogniedit.decompose import DecomposeSettings, OpenAIHTTPBackend, decompose
from cogniedit.decompose.user_config import ENV_CONFIG, config_path, load_user_config
from tests.fixtures.chat_server import ChatServer

ANSWER = "<answer>Make the left cup red.</answer><object>one red cup on the left</object>"


@pytest.fixture
def listeners():
    made = [ChatServer(ANSWER), ChatServer(ANSWER)]
    yield made
    for listener in made:
        listener.close()


def write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_a_profile_sends_its_key_only_to_its_own_url(tmp_path, listeners, monkeypatch):
    profile_server, other = listeners
    monkeypatch.setenv("COGNIEDIT_TEST_SECRET", "s-42")
    config = load_user_config(write(tmp_path, {"servers": {
        "mine": {"url": profile_server.url, "model": "pinned", "api_key_env": "COGNIEDIT_TEST_SECRET"}}}))
    profile = config.server("mine")
    result = decompose(np.zeros((8, 8, 3), np.uint8), "make the left cup red", OpenAIHTTPBackend.from_profile(profile))
    assert result.source == "mllm" and profile_server.requests[0]["headers"]["Authorization"] == "Bearer s-42"
    assert "s-42" not in repr(profile) and "s-42" not in json.dumps(OpenAIHTTPBackend.from_profile(profile).identity())
    # the same secret, named by a workflow next to an address of its choosing: no key goes there
    decompose(None, "make the left cup red", OpenAIHTTPBackend(other.url, "m"))
    assert len(other.requests) == 1 and "Authorization" not in other.requests[0]["headers"]


def test_a_literal_key_and_a_missing_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("COGNIEDIT_UNSET_VAR", raising=False)
    config = load_user_config(write(tmp_path, {"servers": {
        "a": {"url": "https://example.invalid/v1", "api_key": "lit"},
        "b": {"url": "http://127.0.0.1:1/v1", "api_key_env": "COGNIEDIT_UNSET_VAR"}}}))
    assert config.server("a").api_key() == "lit" and config.server("a").key_note() is None
    assert config.server("b").api_key() is None and "COGNIEDIT_UNSET_VAR is not set" in config.server("b").key_note()


def test_a_missing_file_is_an_empty_configuration(tmp_path):
    config = load_user_config(tmp_path / "absent.json")
    assert config.servers == {} and config.model_folders == ()
    with pytest.raises(ValueError, match=r"absent.json: no server profile 'x' \(defined: none\)"):
        config.server("x")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ({"server": {}}, r"unknown keys \['server'\]"),
    ({"servers": {"a": {"url": "ftp://x"}}}, "servers.a.url must be an http"),
    ({"servers": {"a": {"url": "http://x", "key": "k"}}}, r"unknown keys \['key'\]"),
    ({"servers": {"bad name": {"url": "http://x"}}}, "profile name 'bad name'"),
    ({"model_folders": "/data"}, "must be a list"),
    ({"workflow_server_urls": "all"}, "must be one of"),
])
def test_a_malformed_file_is_one_line_naming_the_file_and_the_fix(tmp_path, content, problem):
    with pytest.raises(ValueError, match=problem) as error:
        load_user_config(write(tmp_path, content))
    message = str(error.value)
    assert message.startswith(str(tmp_path / "config.json")) and "docs/security.md" in message and "\n" not in message


def test_model_folders_resolve_against_the_file_and_the_environment_overrides_the_path(tmp_path, monkeypatch):
    config = load_user_config(write(tmp_path, {"model_folders": ["/abs/models", "relative/models"]}))
    assert [str(p) for p in config.model_folders] == ["/abs/models", str(tmp_path / "relative/models")]
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    assert config_path(tmp_path / "default.json") == tmp_path / "default.json"
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "chosen.json"))
    assert config_path(tmp_path / "default.json") == tmp_path / "chosen.json"


def test_the_profile_settings_reach_the_server(tmp_path):
    config = load_user_config(write(tmp_path, {"servers": {"p": {"url": "http://h:1/v1", "model": "m1",
                                                                  "extra_body": {"top_k": 5}}}}))
    backend = OpenAIHTTPBackend.from_profile(config.server("p"))
    assert backend.url == "http://h:1/v1/chat/completions" and backend.model == "m1" and not backend.sends_a_key
    assert backend.request_body([], None, DecomposeSettings())["top_k"] == 5
    assert OpenAIHTTPBackend.from_profile(config.server("p"), model="other").model == "other"


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:8000/v1", True), ("http://127.9.9.9/v1", True), ("http://[::1]:8000/v1", True),
    ("http://localhost:11434", True), ("http://0.0.0.0:8000", True), ("http://10.0.0.5:8000/v1", False),
    ("https://api.example.com/v1", False), ("http://127.0.0.1.example.com/v1", False), ("http://[::ffff:8.8.8.8]/", False),
])
def test_workflow_urls_are_local_only_unless_the_user_says_otherwise(tmp_path, url, local):
    default = load_user_config(tmp_path / "absent.json")
    if local:
        default.check_workflow_url(url)
    else:
        with pytest.raises(ValueError, match="not on this machine.*add a server profile"):
            default.check_workflow_url(url)
    load_user_config(write(tmp_path, {"workflow_server_urls": "any"})).check_workflow_url(url)
    with pytest.raises(ValueError, match="any server_url"):
        load_user_config(write(tmp_path, {"workflow_server_urls": "none"})).check_workflow_url(url)
