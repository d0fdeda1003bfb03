"""CogniEdit ShapeEdit Loader in-process against the real ComfyUI: the shipped editor as MODEL + CLIP + VAE samples
to the command-line editor's edit (core KSampler and the CogniEdit Sampler), its codec is exact, bad files are
one line, Token Focus acts on the MODEL, and Instruction Decompose finds the shipped decomposer by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfy_inprocess import pack_module

pytestmark = pytest.mark.host

STEPS = 12  # the command-line editor's default


@pytest.fixture(scope="module")
def shapes(comfy):
    return pack_module("nodes.shapes")


@pytest.fixture(scope="module")
def loaded(shapes):
    """(model, clip, vae, report) of the shipped editor."""
    return shapes.ShapeEditLoader.execute(shapes.SHIPPED_EDITOR).args


@pytest.fixture(scope="module")
def cli_editor():
    from cogniedit.shapes.editor import load_default_editor

    return load_default_editor(steps=STEPS)


@pytest.fixture(scope="module")
def cases():
    """Two held-out cases in open wording (one paraphrase, one reasoning): (source uint8, instruction)."""
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.render import render_scene

    picked = generate_cases(1, 7, phrasing="paraphrase", split="eval") + \
        generate_cases(1, 7, phrasing="reasoning", split="eval")
    return [(render_scene(case.source), case.instruction) for case in picked]


def as_image(source: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(source).float()[None] / 255.0  # what CogniEdit ShapeEdit Scene outputs


def as_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def agree(got: np.ndarray, want: np.ndarray) -> None:
    """Float32 in both, the sampler's arithmetic in another order: at most 1 level on at most 1 % of the values
    (measured: identical)."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (int(diff.max()), float((diff > 0).mean()))


def encode(comfy, clip, vae, source, instruction):
    latent = comfy.nodes.VAEEncode().encode(vae, as_image(source))[0]
    positive = comfy.nodes.CLIPTextEncode().encode(clip, instruction)[0]
    return latent, positive


def test_the_report_names_the_shipped_file_and_the_editors_sampling(loaded):
    report = loaded[3]
    assert "shapeedit_editor.safetensors" in report and "steps 12, cfg 1.0, sampler euler, scheduler simple" in report


def test_vae_encode_decode_is_the_editors_exact_latent(comfy, loaded, cases):
    from cogniedit.shapes.editor.latent import images_to_tokens

    _, _, vae, _ = loaded
    source = cases[0][0]
    latent = comfy.nodes.VAEEncode().encode(vae, as_image(source))[0]
    assert torch.equal(latent["samples"].reshape(1, 36, 192), images_to_tokens(source[None]))
    assert np.array_equal(as_uint8(comfy.nodes.VAEDecode().decode(vae, latent)[0]), source)
    with pytest.raises(ValueError, match="48x48") as error:
        comfy.nodes.VAEEncode().encode(vae, torch.zeros(1, 64, 64, 3))
    assert "\n" not in str(error.value)


def test_ksampler_on_the_model_gives_the_command_line_editors_edit(comfy, loaded, cases, cli_editor):
    model, clip, vae, _ = loaded
    for seed, (source, instruction) in enumerate(cases, start=3):
        latent, positive = encode(comfy, clip, vae, source, instruction)
        positive = comfy.node_helpers.conditioning_set_values(positive, {"reference_latents": [latent["samples"]]},
                                                              append=True)
        negative = [[torch.zeros_like(positive[0][0]), dict(positive[0][1])]]
        out = comfy.nodes.common_ksampler(model, seed, STEPS, 1.0, "euler", "simple", positive, negative, latent)[0]
        got = as_uint8(comfy.nodes.VAEDecode().decode(vae, out)[0])
        want = cli_editor.edit(source[None], [instruction], seed=seed)[0]
        agree(got, want)
        assert (np.abs(want.astype(int) - source.astype(int)) > 0).any(), "the edit changed nothing: no test"


def test_cogniedit_sampler_with_a_strength_0_focus_is_the_plain_edit(comfy, loaded, cases, cli_editor):
    from cogniedit.decompose import decompose

    sampler, focus = pack_module("nodes.sampler"), pack_module("nodes.focus")
    model, clip, vae, _ = loaded
    source, instruction = cases[1]
    latent, positive = encode(comfy, clip, vae, source, instruction)
    directives = decompose(source, instruction, "rules").to_dict()
    focused = focus.CogniEditTokenFocus.execute(model, directives=directives).args[2]  # node default: strength 0
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    out, report = sampler.CogniEditSampler.execute(model, positive, negative, 5, STEPS, 1.0, 1.0, 0.0, "simple",
                                                   source_latent=latent, directives=focused, clip=clip).args
    assert "re-encoded from the directives' enriched instruction" in report
    got = as_uint8(comfy.nodes.VAEDecode().decode(vae, out)[0])
    agree(got, cli_editor.edit(source[None], [directives["enriched_instruction"]], seed=5)[0])


def test_token_focus_patches_the_model_and_changes_the_edit(comfy, loaded, cases):
    sampler, focus = pack_module("nodes.sampler"), pack_module("nodes.focus")
    model, clip, vae, _ = loaded
    source, instruction = cases[0]
    latent, positive = encode(comfy, clip, vae, source, instruction)
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    outputs = {}
    for strength in (0.0, 8.0):
        directives = focus.CogniEditTokenFocus.execute(
            model, prompt=instruction, phrases=instruction.split()[-1], strength=strength).args[2]
        out, report = sampler.CogniEditSampler.execute(model, positive, negative, 1, STEPS, 1.0, 1.0, 0.0, "simple",
                                                       source_latent=latent, directives=directives).args
        outputs[strength] = out["samples"]
    assert "focus applied" in report and "FOCUS NOT APPLIED" not in report, report
    assert (outputs[8.0] - outputs[0.0]).abs().max() > 1e-3


def test_a_bad_editor_file_is_one_line(comfy, shapes, tmp_path):
    folder = tmp_path / "cogniedit"
    folder.mkdir()
    (folder / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    save_file({"x": torch.zeros(2)}, str(folder / "not_an_editor.safetensors"), metadata={"format": "other/1"})
    comfy.folder_paths.add_model_folder_path(shapes.MODELS_FOLDER, str(folder))
    try:
        for name, problem in (("truncated.safetensors", "not a readable safetensors file"),
                              ("not_an_editor.safetensors", "not a ShapeEdit editor file"),
                              ("absent.safetensors", "was not found")):
            with pytest.raises((ValueError, FileNotFoundError), match=problem) as error:
                shapes.ShapeEditLoader.execute(name)
            message = str(error.value)
            assert "\n" not in message and name in message and ("retrain" in message or "put the file" in message)
    finally:
        comfy.folder_paths.folder_names_and_paths[shapes.MODELS_FOLDER][0].remove(str(folder))


def test_decompose_finds_the_shipped_decomposer_by_name_and_a_copy_in_models_llm_wins(comfy, tmp_path):
    from cogniedit.shapes.decomposer.folder import DEFAULT_FOLDER

    decompose = pack_module("nodes.decompose")
    name = decompose.SHIPPED_DECOMPOSER
    assert decompose.shipped_folder(name, [str(tmp_path)]) == str(DEFAULT_FOLDER)
    assert decompose.shipped_folder("decomposer", [str(tmp_path)]) is None  # only this one name
    assert decompose.shipped_folder("../weights/decomposer", [str(tmp_path)]) is None
    (tmp_path / name).mkdir()
    assert decompose.shipped_folder(name, [str(tmp_path)]) is None  # the user's copy is resolved as any folder

    from cogniedit.shapes.render import render_scene_tensor
    from cogniedit.shapes.scene import random_scene

    image = render_scene_tensor(random_scene(4711))
    _, enriched, report = decompose.InstructionDecompose.execute(
        image, "Make the circle the same colour as the triangle.", "transformers_vlm", model=name).args
    asked = next(line for line in report.splitlines() if line.startswith("asked: "))
    assert asked == f"asked: {DEFAULT_FOLDER}", report
    assert report.startswith(("source: mllm", "source: fallback")) and enriched, report
