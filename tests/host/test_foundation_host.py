"""Foundation of the host tier, against the real ComfyUI in a subprocess (tests/host/conftest.py: comfy_server).

Proves: the server starts with this pack (no IMPORT FAILED for it), /object_info lists every node id the pack
registers, ``main.py --quick-test-for-ci`` imports the pack and exits 0, the client turns validation errors into
readable messages, and a Qwen-Image-Edit workflow of core nodes on the tiny full-width DiT (1 block) + tiny Wan 2.1
VAE runs through /prompt to a PNG read back through /view. A Flux Kontext workflow on the diffusers-key Flux file + taef1 proves ComfyUI converts diffusers Flux keys.
Conditioning comes from the test-only pack
(tests/host/testing_pack): core ComfyUI cannot encode text without the 7B Qwen2.5-VL encoder.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from comfy_client import (PACK_NAME, REPO, ComfyServer, ExecutionFailed, MissingRequirement, PromptRejected,
                          missing_requirement, skip_or_fail)

from tests.fixtures import tiny_models
from tests.fixtures.host_models import taef1_files, wan21_vae_file

pytestmark = pytest.mark.host


def _pack_import_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if PACK_NAME in line and "custom_nodes" in line]


def test_server_loads_the_pack(comfy_server):
    log = comfy_server.log_text()
    lines = _pack_import_lines(log)
    assert lines, f"ComfyUI did not report importing {PACK_NAME}:\n{log[-3000:]}"
    assert not any("IMPORT FAILED" in line for line in lines), "\n".join(lines) + "\n" + log[-3000:]


def test_object_info_lists_every_pack_node(comfy_server, comfyui_root):
    from comfy_inprocess import bootstrap, pack_module

    bootstrap(comfyui_root)
    expected = {node.define_schema().node_id for node in pack_module("nodes").all_nodes()}
    assert "CogniEditShapeScene" in expected
    info = comfy_server.object_info()
    missing = sorted(expected - set(info))
    assert not missing, f"/object_info lacks {missing}; server log:\n{comfy_server.log_tail()}"
    assert all(node_id.startswith("CogniEdit") for node_id in expected)
    ours = {k for k, v in info.items() if v.get("python_module", "").endswith(PACK_NAME)}
    assert ours == expected  # nothing registered outside nodes.all_nodes()


def test_quick_test_for_ci_imports_the_pack(comfyui_root, tmp_path):
    base = ComfyServer.make_base({PACK_NAME: REPO}, tmp_path / "base")
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    command = ComfyServer.command(comfyui_root, python, base, 0, "--quick-test-for-ci")
    done = subprocess.run(command, cwd=comfyui_root, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    log = done.stdout + done.stderr
    module = missing_requirement(log, comfyui_root)
    if done.returncode and module:
        skip_or_fail(f"host tier: {MissingRequirement(module, python)}")
    assert done.returncode == 0, log[-3000:]
    lines = _pack_import_lines(log)
    assert lines and not any("IMPORT FAILED" in line for line in lines), log[-3000:]


def test_validation_errors_are_reported_per_node(comfy_server):
    prompt = qwen_image_edit_workflow("no_such_unet.safetensors", "no_such_vae.safetensors", tokens=5)
    with pytest.raises(PromptRejected) as failure:
        comfy_server.run(prompt)
    message = str(failure.value)
    assert "node vae (VAELoader)" in message and "no_such_vae" in message, message
    assert "node unet (UNETLoader)" in message and "no_such_unet" in message, message


def test_execution_errors_name_the_node_and_exception(comfy_server):
    prompt = {"raise": {"class_type": "CogniEditTestingRaise", "inputs": {"message": "expected failure 42"}},
              "preview": {"class_type": "PreviewImage", "inputs": {"images": ["raise", 0]}}}
    with pytest.raises(ExecutionFailed) as failure:
        comfy_server.run(prompt)
    message = str(failure.value)
    assert "node raise (CogniEditTestingRaise) raised ValueError: expected failure 42" in message, message


PROMPT = "make the blue circle red"
SIZE = 64


def qwen_image_edit_workflow(unet: str, vae: str, tokens: int) -> dict:
    """Source scene -> VAEEncode -> ReferenceLatent on the positive, negative zeroed, KSampler 2 steps."""
    return {
        "scene": {"class_type": "CogniEditShapeScene", "inputs": {"seed": 3}},
        "resize": {"class_type": "ImageScale", "inputs": {"image": ["scene", 0], "upscale_method": "bilinear",
                                                          "width": SIZE, "height": SIZE, "crop": "disabled"}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "shift": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["unet", 0], "shift": 3.1}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["resize", 0], "vae": ["vae", 0]}},
        "text": {"class_type": "CogniEditTestingSeededConditioning",
                 "inputs": {"seed": 0, "tokens": tokens, "width": tiny_models.QWEN_TEXT_WIDTH, "pooled_width": 0,
                            "scale": 1.0}},
        "positive": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["text", 0], "latent": ["encode", 0]}},
        "negative": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["text", 0]}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["shift", 0], "positive": ["positive", 0], "negative": ["negative", 0],
            "latent_image": ["empty", 0], "seed": 0, "steps": 2, "cfg": 2.5, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "foundation"}},
    }


@pytest.mark.slow
def test_qwen_image_edit_workflow_runs_to_an_image(comfy_server, comfyui_root):
    unet = comfy_server.install_model("diffusion_models", tiny_models.full_width_qwen_image_file(edit_2511=True))
    vae = comfy_server.install_model("vae", wan21_vae_file(comfyui_root))
    tokens = tiny_models.qwen_token_count(PROMPT)
    entry = comfy_server.run(qwen_image_edit_workflow(unet, vae, tokens))
    images = comfy_server.output_images(entry, "save")
    assert len(images) == 1
    assert images[0].format == "PNG" and images[0].size == (SIZE, SIZE)
    pixels = images[0].convert("RGB").getextrema()
    assert any(low < high for low, high in pixels), "the decoded image is a flat colour"
    assert "ModelSamplingAuraFlow" in {v["class_type"] for v in entry["prompt"][2].values()}


def test_flux_kontext_workflow_runs_on_the_diffusers_key_file(comfy_server, comfyui_root):
    unet = comfy_server.install_model("diffusion_models", tiny_models.flux_kontext_file(text_width=64, pooled_width=32))
    for path in taef1_files(comfyui_root):
        comfy_server.install_model("vae_approx", path)
    prompt = {
        "scene": {"class_type": "CogniEditShapeScene", "inputs": {"seed": 1}},
        "resize": {"class_type": "ImageScale", "inputs": {"image": ["scene", 0], "upscale_method": "bilinear",
                                                          "width": SIZE, "height": SIZE, "crop": "disabled"}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taef1"}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["resize", 0], "vae": ["vae", 0]}},
        "text": {"class_type": "CogniEditTestingSeededConditioning",
                 "inputs": {"seed": 0, "tokens": tiny_models.FLUX_T5_MIN_TOKENS, "width": 64, "pooled_width": 32,
                            "scale": 1.0}},
        "reference": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["text", 0], "latent": ["encode", 0]}},
        "guidance": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["reference", 0], "guidance": 2.5}},
        "negative": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["text", 0]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["guidance", 0], "negative": ["negative", 0],
            "latent_image": ["encode", 0], "seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "flux"}},
    }
    entry = comfy_server.run(prompt)
    (image,) = comfy_server.output_images(entry, "save")
    assert image.format == "PNG" and image.size == (SIZE, SIZE)
    assert "unet missing" not in comfy_server.log_text()  # every diffusers key was mapped onto ComfyUI's Flux
