"""The evaluation command end to end with the model-free editors, the grid, results JSON and editor plumbing."""

import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from cogniedit.shapes import evaluate
from cogniedit.shapes.cases import generate_cases, write_jsonl
from cogniedit.shapes.editors import IdentityEditor, OracleEditor
from cogniedit.shapes.render import render_scene


def test_identity_fails_and_oracle_succeeds_through_the_command(tmp_path, capsys):
    grid, results = tmp_path / "grid.png", tmp_path / "results.json"
    assert evaluate.main(["--n", "32", "--seed", "3", "--editor", "oracle", "--grid", str(grid),
                          "--grid-rows", "5", "--results", str(results), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "overall" in table and "compound" in table and "100.0%" in table
    payload = json.loads(results.read_text())
    assert payload["metrics"]["success"] == 1.0 and len(payload["cases"]) == 32
    assert set(payload["metrics"]["per_kind"]) == {"colour", "position", "count", "compound"}
    assert payload["cases"][0]["psnr"] in ("inf", None)
    img = Image.open(grid)
    assert img.size[0] == 3 * 144 + 16 and img.size[1] > 5 * 144
    assert evaluate.main(["--n", "32", "--seed", "3", "--editor", "identity", "--results", str(results),
                          "--no-progress"]) == 0
    metrics = json.loads(results.read_text())["metrics"]
    assert metrics["success"] == 0.0 and metrics["preserved"] == 1.0


def test_case_file_and_limit(tmp_path, capsys):
    path = tmp_path / "cases.jsonl"
    write_jsonl(path, generate_cases(30, seed=1))
    results = tmp_path / "r.json"
    assert evaluate.main(["--cases", str(path), "--limit", "10", "--editor", "oracle", "--results", str(results),
                          "--no-progress", "--kinds", "colour,position"]) == 0
    payload = json.loads(results.read_text())
    assert payload["metrics"]["n"] == 10 and {c["kind"] for c in payload["cases"]} == {"colour", "position"}
    path.write_text(path.read_text() + "{broken\n")
    assert evaluate.main(["--cases", str(path), "--editor", "oracle", "--no-progress"]) == 2
    assert "line 31" in capsys.readouterr().err


def test_run_cases_scores_each_case_and_checks_the_editor_output():
    cases = generate_cases(12, seed=0)
    outputs, scores = evaluate.run_cases(OracleEditor(cases), cases, batch_size=5, progress=False)
    assert outputs.shape == (12, 48, 48, 3) and all(s.success for s in scores)
    assert np.array_equal(outputs[3], render_scene(cases[3].target))
    _, scores = evaluate.run_cases(IdentityEditor(), cases, progress=False)
    assert not any(s.success for s in scores)

    class Cropping:
        def edit(self, images, instructions, seed=0):
            return images[:, :32]

    with pytest.raises(ValueError, match="keep the batch and image size"):
        evaluate.run_cases(Cropping(), cases, progress=False)
    with pytest.raises(KeyError, match="no case"):
        OracleEditor(cases[:1]).edit(np.stack([render_scene(cases[1].source)]), [cases[1].instruction])


def test_options_reach_a_plugged_editor_factory(monkeypatch, capsys):
    seen = {}

    def factory(**options):
        seen.update(options)
        return IdentityEditor()

    module = types.ModuleType("shapes_eval_plugin")
    module.make = factory
    monkeypatch.setitem(sys.modules, "shapes_eval_plugin", module)
    assert evaluate.main(["--n", "4", "--editor", "shapes_eval_plugin:make", "--decompose", "on", "--focus", "learned",
                          "--lora", "x.safetensors", "--editor-option", "steps=4", "--no-progress"]) == 0
    assert seen == {"decompose": True, "focus": "learned", "lora": "x.safetensors", "steps": 4}
    seen.clear()
    assert evaluate.main(["--n", "4", "--editor", "shapes_eval_plugin:make", "--no-progress"]) == 0
    assert seen == {}  # defaults (off) are not passed


def test_unavailable_editors_give_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cogniedit.shapes.editor", None)  # import of the default editor fails
    assert evaluate.main(["--n", "4", "--editor", "default", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "default ShapeEdit editor cannot be imported" in err and "--editor identity" in err
    assert evaluate.main(["--n", "4", "--editor", "no_such_module_xyz:make", "--no-progress"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert evaluate.main(["--n", "4", "--editor", "magic", "--no-progress"]) == 2
    assert "unknown editor" in capsys.readouterr().err


def test_table_formats_missing_kinds_as_dash():
    text = evaluate.format_table({"n": 1, "success": 1.0, "colour_acc": None, "psnr": 100.0, "ssim": 1.0,
                                  "per_kind": {}})
    assert "100.0%" in text and " - " in text


def test_compare_gives_paired_counts_and_an_exact_sign_test(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert evaluate.main(["--n", "8", "--seed", "3", "--editor", "oracle", "--results", str(a), "--no-progress"]) == 0
    assert evaluate.main(["--n", "8", "--seed", "3", "--editor", "identity", "--results", str(b),
                          "--no-progress"]) == 0
    capsys.readouterr()
    assert evaluate.main(["--compare", str(a), str(b)]) == 0
    assert "only A right 8, only B right 0, sign test p = 0.00781" in capsys.readouterr().out  # 2 / 2**8
    assert evaluate.sign_test_p(4, 19) == pytest.approx(0.00259, abs=1e-5)  # the README's focus-vs-base split
    assert evaluate.sign_test_p(0, 0) == 1.0 and evaluate.sign_test_p(5, 5) == 1.0
    c = tmp_path / "c.json"
    assert evaluate.main(["--n", "8", "--seed", "4", "--editor", "oracle", "--results", str(c), "--no-progress"]) == 0
    assert evaluate.main(["--compare", str(a), str(c)]) == 2
    assert "different cases" in capsys.readouterr().err
