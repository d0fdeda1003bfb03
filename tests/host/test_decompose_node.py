"""The Instruction Decompose node inside the real ComfyUI (in-process, CPU): rules, an OpenAI-compatible
server on 127.0.0.1, and a tiny transformers Qwen2.5-VL folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfy_inprocess import bootstrap, pack_module, random_image

from tests.fixtures.chat_server import ChatServer
from tests.fixtures.tiny_models import tiny_qwen25_vl_backend  # at import: ComfyUI's own tests/ shadows ours later

pytestmark = pytest.mark.host

ANSWER = ("<info>two cups</info><think>the left cup</think><answer>Make the white cup on the left red.</answer>"
          "<object>one red cup on the left</object>")


@pytest.fixture(scope="module")
def node(comfyui_root):
    try:
        bootstrap(comfyui_root)
    except ModuleNotFoundError as error:
        top = (error.name or "").split(".")[0]
        if (Path(comfyui_root) / top).exists() or (Path(comfyui_root) / f"{top}.py").exists():
            raise  # part of ComfyUI itself is missing: a real failure
        pytest.skip(f"ComfyUI's requirement {error.name!r} is not installed in this Python; run the host tier "
                    "with the Python that runs ComfyUI (.venv/bin/python after scripts/setup_env.sh)")
    return pack_module("nodes.decompose").InstructionDecompose


@pytest.fixture
def server():
    listener = ChatServer(ANSWER)
    yield listener.url, listener.requests
    listener.close()


def trickling(on_byte=lambda sent: None) -> ChatServer:
    slow = ChatServer(ANSWER)
    slow.script, slow.on_trickle = [("trickle", TRICKLE)], on_byte
    return slow


@pytest.fixture
def user_dir(node, tmp_path, monkeypatch):
    """ComfyUI's user directory moved to tmp_path; returns where the pack reads its configuration."""
    import folder_paths

    monkeypatch.delenv("COGNIEDIT_CONFIG", raising=False)
    monkeypatch.setattr(folder_paths, "user_directory", str(tmp_path / "user"))
    registered = {name: (list(paths), exts) for name, (paths, exts) in folder_paths.folder_names_and_paths.items()}
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", registered)  # LLM folders a test adds go away after
    return Path(folder_paths.get_system_user_directory("cogniedit")) / "config.json"


def write_config(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_schema_has_a_stable_id_and_the_directives_socket(node):
    schema = node.define_schema()
    assert schema.node_id == "CogniEditInstructionDecompose"
    assert [o.io_type for o in schema.outputs] == ["COGNIEDIT_DIRECTIVES", "STRING", "STRING"]
    assert node in pack_module("nodes.decompose").NODES


def test_rules_backend(node):
    out = node.execute(image=random_image(32, 48), instruction="make the left cup red", backend="rules")
    directives, enriched, report = out.result
    assert directives["format"] == "cogniedit.directives" and directives["source"] == "rules"
    assert [(p["text"], p["kind"]) for p in directives["focus"]] == [("left", "position"), ("red", "colour")]
    assert enriched == "make the left cup red" and "left (position)" in report
    assert out.ui.as_dict()["text"] == (report,)


def test_a_workflow_url_gets_no_key_even_when_it_names_an_environment_variable(node, server, user_dir, monkeypatch):
    url, seen = server
    monkeypatch.setenv("COGNIEDIT_TEST_KEY", "k-123")
    out = node.execute(image=random_image(40, 40, batch=2), instruction="make the left cup red", backend="openai_http",
                       server_url=url, model="pebr", api_key_env="COGNIEDIT_TEST_KEY")
    directives, enriched, report = out.result
    assert directives["source"] == "mllm" and enriched == "Make the white cup on the left red."
    assert "Authorization" not in seen[0]["headers"] and seen[0]["body"]["model"] == "pebr"
    assert "api_key_env is no longer used" in report and str(user_dir) in report
    assert f"asked: pebr at {url}/chat/completions, no key" in report
    assert "k-123" not in report and "the first was used" in report


def test_a_server_profile_sends_its_key_only_to_its_own_url(node, user_dir, monkeypatch):
    mine, workflows = ChatServer(ANSWER), ChatServer(ANSWER)
    try:
        monkeypatch.setenv("COGNIEDIT_TEST_KEY", "k-456")
        write_config(user_dir, {"servers": {"mine": {"url": mine.url, "model": "served-model",
                                                      "api_key_env": "COGNIEDIT_TEST_KEY"}}})
        out = node.execute(image=random_image(16, 16), instruction="make the left cup red", backend="openai_http",
                           server_url=workflows.url, model="", api_key_env="COGNIEDIT_TEST_KEY",
                           server_profile="mine")
        assert out.result[0]["source"] == "mllm"
        assert mine.requests[0]["headers"]["Authorization"] == "Bearer k-456"
        assert mine.requests[0]["body"]["model"] == "served-model" and workflows.requests == []
        assert "server_url is not used" in out.result[2]
        assert f"asked: served-model at {mine.url}/chat/completions, with the profile's key" in out.result[2]
        with pytest.raises(ValueError, match="no server profile 'theirs'"):
            node.execute(image=random_image(8, 8), instruction="make it red", backend="openai_http",
                         server_profile="theirs")
    finally:
        mine.close()
        workflows.close()


def test_a_workflow_url_off_this_machine_is_refused_unless_the_user_allows_it(node, user_dir):
    with pytest.raises(ValueError, match="not on this machine.*add a server profile"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="openai_http",
                     server_url="https://collector.example/v1", model="m")
    write_config(user_dir, {"workflow_server_urls": "none"})
    with pytest.raises(ValueError, match="may not choose any server_url"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="openai_http", model="m")


TRICKLE = 60  # bytes, one per 0.5 s: 30 s for a client without a real deadline


def test_timeout_s_stops_a_trickling_server(node, user_dir):
    slow = trickling()
    try:
        out = node.execute(image=random_image(16, 16), instruction="make the left cup red", backend="openai_http",
                           server_url=slow.url, model="m", timeout_s=1.0)
        assert out.result[0]["source"] == "fallback" and "timed out after 1 s" in out.result[2]
        assert slow.trickle_over.wait(30) and slow.hung_up.is_set() and slow.trickled < TRICKLE // 2
    finally:
        slow.close()


def test_comfyui_interrupt_stops_the_wait(node, user_dir):
    import comfy.model_management as mm

    slow = trickling(on_byte=lambda sent: mm.interrupt_current_processing(True) if sent == 2 else None)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            node.execute(image=random_image(16, 16), instruction="make the left cup red", backend="openai_http",
                         server_url=slow.url, model="m", timeout_s=600.0)
        assert not mm.processing_interrupted()  # handled the way ComfyUI's own nodes do: the flag is reset
        assert slow.trickle_over.wait(30) and slow.hung_up.is_set() and slow.trickled < TRICKLE // 2
    finally:
        mm.interrupt_current_processing(False)
        slow.close()


def test_a_long_instruction_gives_a_bounded_report(node):
    words = "make the left red circle three small blue squares on the top right and ".split()
    instruction = " ".join(words[i % len(words)] for i in range(2000))[:10_000]
    out = node.execute(image=random_image(8, 8), instruction=instruction, backend="rules")
    directives, enriched, report = out.result
    assert len(instruction) >= 9_900 and len(directives["focus"]) > 500
    assert len(report) < 4_000 and f"focus: {len(directives['focus'])} phrases" in report


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extra-llm") / "tiny-qwen"
    tiny = tiny_qwen25_vl_backend(max_pixels=112 * 112)  # a random Qwen2.5-VL saved as a transformers folder
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return folder


def test_transformers_folder_by_name_from_a_registered_llm_folder(node, tiny_folder, user_dir):
    import folder_paths

    folder_paths.add_model_folder_path("LLM", str(tiny_folder.parent))  # what extra_model_paths.yaml "LLM:" does
    out = node.execute(image=random_image(48, 64), instruction="add three birds on the right",
                       backend="transformers_vlm", model="tiny-qwen", max_new_tokens=16)
    directives = out.result[0]
    assert directives["source"] == "fallback" and directives["raw"].strip()  # random weights: no usable answer
    assert [p["text"] for p in directives["focus"]] == ["three", "on the right"]
    assert os.path.join(folder_paths.models_dir, "LLM") in folder_paths.get_folder_paths("LLM")


@pytest.mark.parametrize("name", ["../../..", "/etc", "~", "LLM/../../.."])
def test_transformers_folders_outside_the_model_folders_are_refused(node, user_dir, name):
    with pytest.raises(ValueError, match="outside the allowed model folders|no model folder"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="transformers_vlm", model=name)


def test_an_outside_folder_loads_only_when_the_user_allows_it(node, tiny_folder, tmp_path, user_dir):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(tiny_folder, outside / "tiny-link")
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="transformers_vlm",
                     model=str(outside / "tiny-link"))
    write_config(user_dir, {"model_folders": [str(tiny_folder.parent)]})
    out = node.execute(image=random_image(48, 64), instruction="make it red", backend="transformers_vlm",
                       model=str(tiny_folder), max_new_tokens=8)
    assert out.result[0]["raw"].strip()


def test_configuration_errors_name_the_fix(node):
    with pytest.raises(ValueError, match="needs a CLIP input"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="text_encoder")
    with pytest.raises(ValueError, match="needs 'model'"):
        node.execute(image=random_image(8, 8), instruction="make it red", backend="openai_http")
    with pytest.raises(ValueError, match="IMAGE must be"):
        node.execute(image=random_image(8, 8)[0], instruction="make it red", backend="rules")
