"""The example workflows (example_workflows/*.json) against a live ComfyUI with this pack.

Proves: every file is current with the node schemas (regenerated from tests/host/workflow_specs.py), has a
same-name .jpg thumbnail, is served as a template, uses only core nodes and ours, converts to API format with
every node type and input known and every link type-correct, and its tiny-model variant runs through /prompt
to an output image (tiny files and substitutions: tests/host/tiny_workflows/).
"""

from __future__ import annotations

import copy
import io
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workflow_specs as specs  # noqa: E402
from tiny_workflows.server import workflow_server  # noqa: E402
from tiny_workflows.substitute import tiny_variant  # noqa: E402
from ui_to_api import FRONTEND_ONLY, WorkflowError, convert  # noqa: E402

pytestmark = pytest.mark.host

NAMES = sorted(specs.WORKFLOWS)
DEFAULT_FILES = frozenset(specs.COMFY_ORG_FILES) | {specs.SOURCE_IMAGE}
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".png", ".jpg", ".jpeg", ".webp")
CORE_MODULES = ("nodes", "comfy_extras.")
# Examples whose tiny variant loads a tiny DiT of their own family: (model class, Token Focus layout) it must show.
FAMILY_RUNS = {"cogniedit_flux2_klein": ("Flux2", "flux2_klein"), "cogniedit_longcat_image_edit": ("LongCatImage", "longcat"),
               "cogniedit_flux_kontext": ("Flux", "flux")}
TOKENS_HIT = re.compile(r"^focus applied: (\d+) of (\d+) attention calls .*, (\d+) of (\d+) tokens hit$", re.M)


def load(name: str) -> dict:
    return json.loads(specs.example_path(name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server(request, comfyui_root):
    return workflow_server(request, comfyui_root)


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def test_every_pack_node_follows_one_naming_style(object_info):
    """Display names "CogniEdit <Name>" (no suffix, no parentheses), categories "CogniEdit/<lower-case group>";
    the node ids never change (saved workflows name them)."""
    ours = {node_id: info for node_id, info in object_info.items() if info["python_module"].startswith("custom_nodes.comfyui-cogniedit")}
    assert set(ours) == {"CogniEditInstructionDecompose", "CogniEditTokenFocus", "CogniEditSampler", "CogniEditGuider",
                         "CogniEditSDESampler", "CogniEditLoader", "CogniEditShapeScene",
                         "CogniEditShapeEditLoader"}, sorted(ours)
    for node_id, info in ours.items():
        name, category = info["display_name"], info["category"]
        assert name.startswith("CogniEdit ") and "(" not in name, f"{node_id}: display name {name!r}"
        group = category.partition("/")[2]
        assert category.startswith("CogniEdit/") and group and group == group.lower(), f"{node_id}: category {category!r}"


def test_sampler_description_says_the_output_is_32_px_aligned(object_info):
    description = object_info["CogniEditSampler"]["description"]
    assert "Output size = source size" not in description and "multiple of 32 px" in description, description


def test_examples_are_current_with_the_node_schemas(object_info):
    built = specs.build_all(object_info)
    on_disk = sorted(p.stem for p in specs.EXAMPLES.glob("*.json"))
    assert on_disk == sorted(specs.FILE_NAMES.values()), f"example_workflows/ holds {on_disk}, the specs define {specs.FILE_NAMES}"
    stale = [name for name, workflow in built.items() if specs.dumps(workflow) != specs.example_path(name).read_text()]
    assert not stale, (f"{stale} differ from what the node schemas give; regenerate with "
                       "`python tests/host/workflow_specs.py <server url>` and review the diff")


def test_each_workflow_has_a_same_name_jpg_thumbnail():
    from PIL import Image

    for name in NAMES:
        thumb = specs.example_path(name, ".jpg")
        assert thumb.is_file(), f"{thumb.name} missing (the template browser shows <name>.jpg)"
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and min(image.size) >= 64


def test_workflows_are_served_as_templates(server):
    listed = server.get("/workflow_templates")
    titles = sorted(specs.FILE_NAMES.values())
    pack = next((key for key, names in listed.items() if set(titles) <= set(names)), None)
    assert pack, f"/workflow_templates does not list our workflows: {listed}"
    assert sorted(listed[pack]) == titles, "another example folder (e.g. workflows/) would list duplicates"
    for name in NAMES:
        quoted = urllib.parse.quote(specs.FILE_NAMES[name])
        served = json.loads(urllib_get(f"{server.url}/api/workflow_templates/{pack}/{quoted}.json"))
        assert served == load(name)
        assert urllib_get(f"{server.url}/api/workflow_templates/{pack}/{quoted}.jpg")[:3] == b"\xff\xd8\xff"


def test_template_titles_are_short_and_readable():
    for name, title in specs.FILE_NAMES.items():  # the card shows about 35 characters before cutting the title
        if name in specs.ISSUE_FILE_NAMES:
            assert title == name and len(title) <= 35, title
            continue
        assert title.startswith("CogniEdit ") and len(title) <= 35 and "_" not in title, title


def test_the_example_image_ships_and_the_pack_puts_it_into_the_input_folder(object_info):
    import numpy as np
    from PIL import Image

    shipped = specs.EXAMPLES / specs.SOURCE_IMAGE
    with Image.open(shipped) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), specs.source_image_array()), \
            "the shipped image is not what workflow_specs renders; regenerate with workflow_specs.py"
    choices = object_info["LoadImage"]["input"]["required"]["image"]
    choices = choices[1]["options"] if choices[0] == "COMBO" else choices[0]
    assert specs.SOURCE_IMAGE in choices, "the pack did not copy its example image into ComfyUI's input folder"


@pytest.mark.parametrize("name", NAMES)
def test_every_file_an_example_names_ships_or_is_a_listed_comfy_org_download(name):
    workflow = load(name)
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    for node in workflow["nodes"]:
        if node["type"] == "MarkdownNote":
            continue
        files = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v.lower().endswith(FILE_SUFFIXES)]
        for file in files:
            if file == specs.SOURCE_IMAGE:
                assert (specs.EXAMPLES / file).is_file(), file
                continue
            assert file in specs.COMFY_ORG_FILES, f"{node['type']} names {file}: neither shipped nor a Comfy-Org download"
            assert f"`{file}`" in note, f"the note does not list {file}"
            folder, url = specs.COMFY_ORG_FILES[file]
            assert {"name": file, "url": url + file, "directory": folder} in node["properties"].get("models", []), \
                f"{node['type']}: properties.models lacks {file} (the missing-models panel would say folder Unknown)"


def urllib_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.mark.parametrize("name", NAMES)
def test_workflow_converts_against_object_info(object_info, name):
    workflow = load(name)
    prompt = convert(workflow, object_info, absent_files=DEFAULT_FILES)
    assert len(prompt) == sum(node["type"] not in FRONTEND_ONLY for node in workflow["nodes"])
    notes = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    assert len(notes) == 1 and "models" in notes[0]["widgets_values"][0], "each example lists its model files"
    server_nodes = [node for node in workflow["nodes"] if node["type"] not in FRONTEND_ONLY]
    foreign = {node["type"]: object_info[node["type"]]["python_module"] for node in server_nodes
               if not object_info[node["type"]]["python_module"].startswith(CORE_MODULES)
               and not node["type"].startswith("CogniEdit")}
    assert not foreign, f"nodes from other packs: {foreign}"
    assert any(node["type"].startswith("CogniEdit") for node in workflow["nodes"])
    # The default Comfy-Org file names are what the loaders ask for.
    values = {value for node in workflow["nodes"] for value in node.get("widgets_values", []) if isinstance(value, str)}
    assert bool(values & DEFAULT_FILES) != (name in specs.SHIPS_ITS_MODELS)


def test_converter_names_broken_workflows(object_info):
    """The converter is the check, so it must fail on each kind of defect."""
    workflow = load("cogniedit_flux_kontext")
    cases = []
    wrong_type = copy.deepcopy(workflow)
    wrong_type["links"][0][5] = "LATENT"
    cases.append((wrong_type, "type"))
    missing_node = copy.deepcopy(workflow)
    missing_node["nodes"][0]["type"] = "CogniEditNoSuchNode"
    cases.append((missing_node, "missing node"))
    short_widgets = copy.deepcopy(workflow)
    sampler = next(n for n in short_widgets["nodes"] if n["type"] == "CogniEditSampler")
    sampler["widgets_values"] = sampler["widgets_values"][:3]
    cases.append((short_widgets, "no value for"))
    dangling = copy.deepcopy(workflow)
    dangling["links"][1][3] = 999
    cases.append((dangling, "does not exist"))
    bad_choice = copy.deepcopy(workflow)
    sampler = next(n for n in bad_choice["nodes"] if n["type"] == "CogniEditSampler")
    sampler["widgets_values"][-1] = "stretch"  # align
    cases.append((bad_choice, "not one of"))
    for broken, message in cases:
        with pytest.raises(WorkflowError, match=message):
            convert(broken, object_info, absent_files=DEFAULT_FILES)


def image_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("name", NAMES)
def test_tiny_variant_runs_to_an_output_image(server, object_info, name):
    workflow = load(name)
    runnable = workflow if name in specs.SHIPS_ITS_MODELS else tiny_variant(workflow, object_info)
    prompt = convert(runnable, object_info)  # every combo value is a real choice
    entry = server.run(prompt)
    assert "http_error" not in entry, entry
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors[0].get("exception_message") if errors else entry["status"]
    save_id = next(i for i, node in prompt.items() if node["class_type"] == "SaveImage")
    images = entry["outputs"][save_id]["images"]
    assert len(images) == 1
    width, height = image_size(server.view(images[0]))
    assert height % 32 == 0 and height >= 64
    if name == "cogniedit_compare_plain_vs_cogniedit":  # plain | 16 px | CogniEdit, both at the source size
        assert (width - 16) % 2 == 0 and ((width - 16) // 2) % 32 == 0
    else:
        assert width % 32 == 0
    texts = {prompt[i]["_meta"]["title"]: "".join(out.get("text", [])) for i, out in entry["outputs"].items()}
    report = texts["Sampler report"]
    assert "node: CogniEdit Sampler" in report
    if name in specs.SHIPS_ITS_MODELS:  # Token Focus at its default (strength 0): the decomposition is what acts
        assert "prompt: re-encoded from the directives' enriched instruction" in report, report
        decompose_id = next(i for i, node in prompt.items() if node["class_type"] == "CogniEditInstructionDecompose")
        check_shapeedit_demo_is_the_command_line_editor(server.view(images[0]),
                                                        "".join(entry["outputs"][decompose_id]["text"]))
        return
    assert "focus: off" not in report, f"the focus patch did not reach the sampler:\n{report}"
    if any(node["type"] == "CogniEditTokenFocus" for node in workflow["nodes"]):  # and it lands inside the text:
        applied = TOKENS_HIT.search(report)  # calls biased, and every focus token inside the text that arrived
        assert applied and int(applied[1]) > 0 and int(applied[3]) == int(applied[4]) > 0, report
        assert "FOCUS NOT APPLIED" not in report and "lie outside" not in report, report
    if name == "cogniedit_qwen_image_edit_2511_lora_focus":
        assert "learned" in report
    if name in FAMILY_RUNS:  # the tiny file is loaded as that family (its layout resolved from the model)
        model_class, layout = FAMILY_RUNS[name]
        assert f"model: {model_class}\n" in report and f"layout: {layout}," in texts["Focus report"], texts


def check_shapeedit_demo_is_the_command_line_editor(png: bytes, decompose_report: str) -> None:
    """The demo's saved panels (source | plain | CogniEdit at 4x, 4 px apart before scaling) equal what
    cogniedit.shapes.editor edits from the same scene, instruction (plain) or enriched instruction (CogniEdit:
    Token Focus at strength 0 changes nothing) and seed: the ComfyUI graph is the command-line editor."""
    import numpy as np
    from PIL import Image

    from cogniedit.shapes.editor import load_default_editor
    from cogniedit.shapes.render import render_scene
    from cogniedit.shapes.scene import random_scene

    asked = next((line for line in decompose_report.splitlines() if line.startswith("asked: ")), "")
    assert asked.replace("\\", "/").endswith("cogniedit/shapes/weights/decomposer"), \
        f"the shipped decomposer was not asked:\n{decompose_report}"  # its answer may change when it is retrained
    enriched = next(line for line in decompose_report.splitlines() if line.startswith("enriched instruction: "))
    enriched = enriched[len("enriched instruction: "):]
    with Image.open(io.BytesIO(png)) as image:
        saved = np.asarray(image.convert("RGB"))[::4, ::4]  # nearest-exact 4x: every 4th pixel is the original
    panels = [saved[:, i * 52:i * 52 + 48] for i in range(3)]
    source = render_scene(random_scene(specs.SHAPEEDIT_SCENE_SEED))
    editor = load_default_editor(steps=specs.SHAPEEDIT_STEPS)
    plain, cogniedit = (editor.edit(source[None], [text], seed=specs.SEED)[0]
                        for text in (specs.SHAPEEDIT_INSTRUCTION, enriched))
    assert np.array_equal(panels[0], source)
    for name, got, want in (("plain", panels[1], plain), ("CogniEdit", panels[2], cogniedit)):
        diff = np.abs(got.astype(int) - want.astype(int))
        # float32 in both; ComfyUI's sampler computes x0 and the velocity in another order: at most 1 level on
        # at most 1 % of the values (measured: identical)
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (name, int(diff.max()), float((diff > 0).mean()))


def test_the_example_image_is_copied_once_and_never_over_a_users_file(comfy, tmp_path):
    from comfy_inprocess import pack_module

    install = pack_module("nodes.example_input").install_example_image
    written = install(tmp_path)
    assert written == tmp_path / specs.SOURCE_IMAGE
    assert written.read_bytes() == (specs.EXAMPLES / specs.SOURCE_IMAGE).read_bytes()
    written.write_bytes(b"the user's own picture")
    assert install(tmp_path) is None and written.read_bytes() == b"the user's own picture"
