"""The example workflows in the real ComfyUI front end (served by a live server on 127.0.0.1), driven by
headless Chromium through Playwright.

Per workflow: the page loads it with every node type registered and no missing-node/error dialog; the front
end's own API conversion (app.graphToPrompt) equals tests/host/ui_to_api.convert; the tiny-model variant,
loaded and queued from the page (app.queuePrompt), shows its output image on the Save Image node. A
negative control proves the missing-node check can fail. Screenshots go to the test's tmp dir; with
COGNIEDIT_UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/*.png and the example_workflows/*.jpg
thumbnails (commit those by hand).

Needs: Chromium (`apt-get install chromium`; or COGNIEDIT_CHROMIUM=<path>) and the `playwright` Python package
in the host venv (no `playwright install`: the system Chromium is used). Skips with one line when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workflow_specs as specs  # noqa: E402
from tiny_workflows.server import workflow_server  # noqa: E402
from tiny_workflows.substitute import tiny_variant  # noqa: E402
from ui_to_api import convert  # noqa: E402

pytestmark = pytest.mark.host

CHROMIUM = os.environ.get("COGNIEDIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = specs.REPO / "docs" / "screenshots"
UPDATE = os.environ.get("COGNIEDIT_UPDATE_SCREENSHOTS") == "1"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAMES = sorted(specs.WORKFLOWS)
NODE_REPORT_JS = """() => {
  const registered = window.LiteGraph.registered_node_types;
  return window.app.graph._nodes.map(n => ({id: n.id, type: n.type, registered: !!registered[n.type],
                                            errors: !!n.has_errors}));
}"""
DIALOG_TEXT_JS = """() => Array.from(document.querySelectorAll('[role=dialog], .p-dialog, .p-toast-message'))
  .filter(d => d.offsetParent !== null).map(d => d.innerText)"""


@pytest.fixture(scope="module")
def server(request, comfyui_root):
    if not CHROMIUM:
        pytest.skip("browser test: no Chromium (apt-get install chromium, or set COGNIEDIT_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="browser test: pip install playwright (no browser download)")
    live = workflow_server(request, comfyui_root)
    # First visit would open the template browser over the canvas.
    # Full node detail at any zoom, so fitted screenshots stay readable.
    hide = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0}
    settings = urllib.request.Request(live.url + "/settings", data=json.dumps(hide).encode(),
                                      headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(settings, timeout=30).close()
    return live


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(server, browser):
    """A fresh page per test: nothing left over from another workflow (tabs, panels, outputs)."""
    page = browser.new_page(viewport={"width": 1920, "height": 1080})  # fit view stays above the low-detail zoom
    page.goto(server.url)
    page.wait_for_function("window.app && window.app.vueAppReady && window.LiteGraph", timeout=90_000)
    yield page
    page.close()


def load_graph(page, workflow: dict) -> None:
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(2000)  # the front end's model/asset checks finish asynchronously after loading


def fit_and_shoot(page, path: Path) -> None:
    page.evaluate("async () => await window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(700)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def save_artifacts(shot: Path, name: str, thumbnail: bool) -> None:
    if not UPDATE:
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / shot.name)
    if thumbnail:
        from PIL import Image

        with Image.open(shot) as image:
            image = image.convert("RGB")
            image.thumbnail((512, 512))
            image.save(specs.EXAMPLES / f"{name}.jpg", "JPEG", quality=85)


def test_missing_node_check_can_fail(page):
    workflow = json.loads((specs.EXAMPLES / "cogniedit_flux_kontext.json").read_text())
    workflow["nodes"][0]["type"] = "CogniEditNoSuchNode"
    load_graph(page, workflow)
    report = page.evaluate(NODE_REPORT_JS)
    assert [n["type"] for n in report if not n["registered"]] == ["CogniEditNoSuchNode"]


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_converts_and_its_tiny_variant_runs_in_the_page(server, page, name, tmp_path):
    workflow = json.loads((specs.EXAMPLES / f"{name}.json").read_text())
    object_info = server.object_info()
    load_graph(page, workflow)

    report = page.evaluate(NODE_REPORT_JS)
    assert len(report) == len(workflow["nodes"])
    assert not [n for n in report if not n["registered"]], f"missing node types in the page: {report}"
    dialogs = [text for text in page.evaluate(DIALOG_TEXT_JS) if "missing" in text.lower() or "error" in text.lower()]
    assert not dialogs, f"dialogs after loading {name}: {dialogs}"
    if server.placeholders:  # every model file is listed, so no node may be flagged
        assert not [n for n in report if n["errors"]], report

    frontend = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = convert(workflow, object_info,
                   absent_files=frozenset().union(*map(frozenset, specs.PLACEHOLDERS.values()), {specs.SOURCE_IMAGE}))
    assert {k: (v["class_type"], v["inputs"]) for k, v in frontend.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in ours.items()}, "ui_to_api disagrees with the front end"

    shot = tmp_path / f"{name}.png"
    fit_and_shoot(page, shot)
    save_artifacts(shot, name, thumbnail=True)

    tiny = tiny_variant(workflow, object_info)
    load_graph(page, tiny)
    save_id = next(n["id"] for n in tiny["nodes"] if n["type"] == "SaveImage")
    page.evaluate("async () => await window.app.queuePrompt(0, 1)")
    page.wait_for_function(
        f"""() => {{ const n = window.app.graph.getNodeById({save_id});
                    return !!(n && n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0); }}""",
        timeout=180_000)
    src = page.evaluate(f"window.app.graph.getNodeById({save_id}).imgs[0].src")
    assert "/view?" in src and "CogniEditTiny" in src, src
    errors = [text for text in page.evaluate(DIALOG_TEXT_JS) if "error" in text.lower()]
    assert not errors, errors
    run_shot = tmp_path / f"{name}_tiny_run.png"
    fit_and_shoot(page, run_shot)
    save_artifacts(run_shot, name, thumbnail=False)
