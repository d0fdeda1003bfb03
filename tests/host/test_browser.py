"""The example workflows in the real ComfyUI front end (served by a live server on 127.0.0.1), driven by
headless Chromium through Playwright, opened the way a newcomer opens them: Workflow -> Browse Templates ->
Extensions -> comfyui-cogniedit -> a card.

Per workflow, on first open without the model files: every node type is registered, no node overlaps another,
and the only errors are the absent Comfy-Org model files the note lists, each with its folder (no missing
node, no missing input image, no other error); the front end's own API conversion (app.graphToPrompt) equals
tests/host/ui_to_api.convert. With files named like the models in place (a user who has them): no error at all,
and the thumbnail is taken from that canvas. The tiny-model variant, queued from the page, shows its output image
on Save Image, Decompose's report on its node, and every report box holds its whole report without scrolling.
The template browser shows every title in full. A negative control proves the missing-node check can fail.

Screenshots go to the test's tmp dir; with COGNIEDIT_UPDATE_SCREENSHOTS=1 they also replace
docs/screenshots/{templates,<name>,<name>_tiny_run}.png and the example_workflows/*.jpg thumbnails (commit
those by hand).

Needs: Chromium (`apt-get install chromium`; or COGNIEDIT_CHROMIUM=<path>) and the `playwright` Python package
in the host venv (no `playwright install`: the system Chromium is used). Skips with one line when missing.
"""

from __future__ import annotations

import contextlib
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
PACK_FOLDER = "comfyui-cogniedit"  # the folder name the suite's servers link the pack under
THUMBNAIL = 512
NODE_REPORT_JS = """() => {
  const registered = window.LiteGraph.registered_node_types;
  return window.app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title, registered: !!registered[n.type],
                                            errors: !!n.has_errors, bounds: Array.from(n.getBounding())}));
}"""
# The front end's own error stores (Pinia): what its error overlay and "N errors found" toast count.
ERRORS_JS = """() => {
  const stores = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia._s;
  const plain = value => JSON.parse(JSON.stringify(value ?? null));
  return {total: stores.get('executionError').totalErrorCount,
          models: plain(stores.get('missingModel').missingModelCandidates),
          media: plain(stores.get('missingMedia').missingMediaCandidates),
          nodes: stores.get('missingNodesError').missingNodeCount};
}"""
# Every text preview box (Preview Any and the pack's on-node reports): its text and whether it all shows.
# (the preview is a textarea in the page's DOM-widget layer, found by its text: each report is different)
REPORT_BOXES_JS = """() => {
  const areas = Array.from(document.querySelectorAll('.dom-widget textarea'));
  return window.app.graph._nodes.flatMap(n => (n.widgets || []).filter(w => w.name === 'preview_text').map(w => {
    const text = String(w.value ?? ''), box = areas.find(a => text && a.value === text);
    return {id: n.id, type: n.type, title: n.title, text, scroll: box ? box.scrollHeight : -1,
            client: box ? box.clientHeight : -1};
  }));
}"""


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


def new_page(server, browser):
    page = browser.new_page(viewport={"width": 1920, "height": 1080})  # fit view stays above the low-detail zoom
    page.goto(server.url)
    page.wait_for_function("window.app && window.app.vueAppReady && window.LiteGraph", timeout=90_000)
    return page


@pytest.fixture
def page(server, browser):
    """A fresh page per test: nothing left over from another workflow (tabs, panels, outputs)."""
    page = new_page(server, browser)
    yield page
    page.close()


@contextlib.contextmanager
def model_files_in_place(server):
    """Files named like every model the examples load, in the server's models folders (never loaded: only the
    tiny variants run), so the front end shows the examples as a user with the models sees them. Removed after."""
    written = []
    try:
        for folder, names in specs.PLACEHOLDERS.items():
            (server.models_dir / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                path = server.models_dir / folder / name
                if not path.exists():
                    path.write_bytes(b"placeholder: not a model")  # not empty: empty files are not listed as assets
                    written.append(path)
        yield
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def open_templates(page):
    page.evaluate("async () => await window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
    page.wait_for_timeout(1000)
    return dialog


def open_example(page, name: str) -> None:
    open_templates(page).get_by_text(specs.FILE_NAMES[name], exact=True).first.click()
    page.wait_for_function("() => !document.querySelector('[role=dialog]')", timeout=30_000)
    page.wait_for_timeout(2500)  # the front end's model/media checks finish asynchronously after loading


def load_graph(page, workflow: dict) -> None:
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(2000)


def fit_and_shoot(page, path: Path) -> None:
    page.evaluate("async () => await window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(700)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def shoot_thumbnail(page, path: Path) -> None:
    """A square crop of the fitted canvas around the CogniEdit nodes (the card shows a square image)."""
    page.evaluate("async () => await window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(700)
    box = page.evaluate("""() => {
      const ds = window.app.canvas.ds, rect = window.app.canvas.canvas.getBoundingClientRect();
      const ours = window.app.graph._nodes.filter(n => n.type.startsWith('CogniEdit')).map(n => n.getBounding());
      const [x0, y0] = [Math.min(...ours.map(b => b[0])), Math.min(...ours.map(b => b[1]))];
      const [x1, y1] = [Math.max(...ours.map(b => b[0] + b[2])), Math.max(...ours.map(b => b[1] + b[3]))];
      const screen = (x, y) => [(x + ds.offset[0]) * ds.scale + rect.left, (y + ds.offset[1]) * ds.scale + rect.top];
      const [a, b] = [screen(x0, y0), screen(x1, y1)];
      return {x: a[0], y: a[1], width: b[0] - a[0], height: b[1] - a[1], right: rect.right, bottom: rect.bottom};
    }""")
    side = max(box["width"], box["height"]) + 40
    x = max(0, min(box["x"] + box["width"] / 2 - side / 2, box["right"] - side))
    y = max(0, min(box["y"] + box["height"] / 2 - side / 2, box["bottom"] - side))
    page.screenshot(path=str(path), clip={"x": x, "y": y, "width": side, "height": side})


def overlaps(report: list[dict]) -> list[tuple]:
    """(id, title, id, title) of the nodes whose bounding boxes (title bar included) intersect."""
    pairs = []
    for i, a in enumerate(report):
        for b in report[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["bounds"], b["bounds"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                pairs.append((a["id"], a["title"], b["id"], b["title"]))
    return pairs


def note_of(workflow: dict) -> str:
    return next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]


def save_screenshot(shot: Path, name: str | None = None) -> None:
    if UPDATE:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / (name or shot.name))


def save_thumbnail(shot: Path, name: str) -> None:
    if not UPDATE:
        return
    from PIL import Image

    with Image.open(shot) as image:
        image = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
        image.save(specs.example_path(name, ".jpg"), "JPEG", quality=85)


def test_missing_node_check_can_fail(page):
    workflow = json.loads(specs.example_path("cogniedit_flux_kontext").read_text())
    workflow["nodes"][0]["type"] = "CogniEditNoSuchNode"
    load_graph(page, workflow)
    report = page.evaluate(NODE_REPORT_JS)
    assert [n["type"] for n in report if not n["registered"]] == ["CogniEditNoSuchNode"]
    assert page.evaluate(ERRORS_JS)["nodes"] == 1


def test_overlap_check_can_fail(page):
    workflow = json.loads(specs.example_path("cogniedit_flux_kontext").read_text())
    first, second = [n for n in workflow["nodes"] if n["type"] != "MarkdownNote"][:2]
    second["pos"] = [first["pos"][0] + 20, first["pos"][1] + 20]
    load_graph(page, workflow)
    pairs = [(str(a), str(c)) for a, _, c, _ in overlaps(page.evaluate(NODE_REPORT_JS))]
    assert (str(first["id"]), str(second["id"])) in pairs, pairs


def test_template_browser_shows_every_title_in_full(page, tmp_path):
    dialog = open_templates(page)
    titles = page.evaluate("""() => Array.from(document.querySelectorAll('[role=dialog] [data-testid^=template-workflow-] h3'))
                                  .map(h => ({text: h.textContent.trim(), cut: h.scrollWidth > h.clientWidth}))""")
    assert sorted(t["text"] for t in titles) == sorted(specs.FILE_NAMES.values()), titles
    assert not [t for t in titles if t["cut"]], f"titles cut off in the template browser: {titles}"
    assert dialog.count() == 1
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[role=dialog] [data-testid^=template-workflow-] img'))
                                   .every(i => i.complete)""", timeout=30_000)
    thumbs = page.evaluate("""() => Array.from(document.querySelectorAll('[role=dialog] [data-testid^=template-workflow-]'))
        .map(card => ({card: card.getAttribute('data-testid'),
                       sizes: Array.from(card.querySelectorAll('img')).map(i => [i.naturalWidth, i.naturalHeight])}))""")
    for title in specs.FILE_NAMES.values():  # each card shows the example's own square .jpg (the front end uses blobs)
        card = next(t for t in thumbs if t["card"] == f"template-workflow-{title}")
        assert [THUMBNAIL, THUMBNAIL] in card["sizes"], (title, thumbs)
    shot = tmp_path / "templates.png"
    page.screenshot(path=str(shot))
    save_screenshot(shot)


@pytest.mark.parametrize("name", NAMES)
def test_example_opens_clean_converts_and_its_tiny_variant_runs_in_the_page(server, browser, page, name, tmp_path):
    workflow = json.loads(specs.example_path(name).read_text())
    object_info = server.object_info()
    open_example(page, name)

    report = page.evaluate(NODE_REPORT_JS)
    assert len(report) == len(workflow["nodes"])
    assert not [n for n in report if not n["registered"]], f"missing node types in the page: {report}"
    assert not overlaps(report), f"overlapping nodes in {name}: {overlaps(report)}"
    errors = page.evaluate(ERRORS_JS)
    assert errors["nodes"] == 0 and not errors["media"], f"missing nodes or input files: {errors}"
    note = note_of(workflow)
    missing_models = errors["models"] or []  # null in the store when the workflow names no model file
    for model in missing_models:  # absent model files: the only errors allowed, each a listed Comfy-Org download
        assert model["name"] in specs.COMFY_ORG_FILES and f"`{model['name']}`" in note, model
        assert model.get("directory") == specs.COMFY_ORG_FILES[model["name"]][0], f"folder not known: {model}"
    assert errors["total"] == len(missing_models), f"errors other than absent model files: {errors}"

    frontend = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = convert(workflow, object_info, absent_files=frozenset(specs.COMFY_ORG_FILES))
    assert {k: (v["class_type"], v["inputs"]) for k, v in frontend.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in ours.items()}, "ui_to_api disagrees with the front end"
    shot = tmp_path / f"{name}.png"
    fit_and_shoot(page, shot)
    save_screenshot(shot)

    with model_files_in_place(server):
        page.close()
        page = new_page(server, browser)
        try:
            open_example(page, name)
            report = page.evaluate(NODE_REPORT_JS)
            assert not [n for n in report if n["errors"]], f"nodes flagged with every model in place: {report}"
            assert page.evaluate(ERRORS_JS)["total"] == 0, page.evaluate(ERRORS_JS)
            thumb = tmp_path / f"{name}_thumbnail.png"
            shoot_thumbnail(page, thumb)
            save_thumbnail(thumb, name)
            run_tiny_variant(page, workflow, object_info, name, tmp_path)
        finally:
            page.close()


def run_tiny_variant(page, workflow: dict, object_info: dict, name: str, tmp_path: Path) -> None:
    shipped = name in specs.SHIPS_ITS_MODELS  # its models ship with the pack: it runs as it is
    tiny = workflow if shipped else tiny_variant(workflow, object_info)
    # Nothing cached from an earlier test: a node whose consumers are cached is not visited, so sends no report.
    urllib.request.urlopen(urllib.request.Request(page.url.split("#")[0].rstrip("/") + "/free",
                                                  data=json.dumps({"free_memory": True}).encode(),
                                                  headers={"Content-Type": "application/json"}), timeout=30).close()
    load_graph(page, tiny)
    # The front end loads a node's output image when it draws the node: the whole graph must be in view.
    page.evaluate("async () => await window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    save_id = next(n["id"] for n in tiny["nodes"] if n["type"] == "SaveImage")
    page.evaluate("async () => await window.app.queuePrompt(0, 1)")
    page.wait_for_function(  # the output image, or a rejected prompt / an execution error (reported below)
        f"""() => {{ const n = window.app.graph.getNodeById({save_id});
                    const e = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia
                              ._s.get('executionError');
                    return !!(e.lastExecutionError || e.lastPromptError || e.lastNodeErrors) ||
                           !!(n && n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0); }}""",
        timeout=300_000)
    failed = page.evaluate("""() => { const e = document.querySelector('#vue-app').__vue_app__.config.globalProperties
                                       .$pinia._s.get('executionError');
                                return JSON.parse(JSON.stringify([e.lastExecutionError, e.lastPromptError, e.lastNodeErrors])); }""")
    assert not any(failed), f"the tiny variant of {name} failed in the page: {failed}"
    src = page.evaluate(f"window.app.graph.getNodeById({save_id}).imgs[0].src")
    assert "/view?" in src and ("shapeedit_demo" if shipped else "CogniEditTiny") in src, src
    errors = page.evaluate(ERRORS_JS)
    assert errors["total"] == 0, errors
    page.wait_for_timeout(500)
    boxes = page.evaluate(REPORT_BOXES_JS)
    decompose = [b for b in boxes if b["type"] == "CogniEditInstructionDecompose"]
    assert len(decompose) == 1 and decompose[0]["text"].startswith("source: " if shipped else "source: rules"), \
        f"Decompose does not show its report on the node: {decompose}"
    assert all(b["text"] for b in boxes), f"empty report boxes after the run: {boxes}"
    after = page.evaluate(NODE_REPORT_JS)  # Save Image has grown to show the output
    assert not overlaps(after), f"overlapping nodes after the run of {name}: {overlaps(after)}"
    cut = [b for b in boxes if b["scroll"] > b["client"] + 1]
    assert not cut, f"report boxes too small for their report (workflow_specs.REPORT_LINES): {cut}"
    run_shot = tmp_path / f"{name}_tiny_run.png"
    fit_and_shoot(page, run_shot)
    save_screenshot(run_shot)
