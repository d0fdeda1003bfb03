"""ShapeEdit world: palette separation, scenes, alias-free rendering, case generation, JSONL I/O."""

import json

import numpy as np
import pytest
import torch

from cogniedit.shapes import palette
from cogniedit.shapes.cases import (
    KINDS, EditOp, apply_ops, generate_cases, read_jsonl, touched_cells, write_jsonl,
)
from cogniedit.shapes.refer import describe, resolve
from cogniedit.shapes.render import render_scene, render_scene_tensor, shape_mask
from cogniedit.shapes.scene import DEFAULT_WORLD, Scene, ShapeObject, WorldConfig, random_scene


def test_srgb_to_lab_matches_skimage_and_palette_is_well_separated():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    np.testing.assert_allclose(palette.srgb_to_lab(rgb), rgb2lab(rgb[None])[0], atol=0.02)
    lab = palette.palette_lab()
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    assert dist[np.triu_indices(len(lab), 1)].min() > 40
    bg = palette.srgb_to_lab(np.array(palette.BACKGROUND, np.uint8))
    assert np.linalg.norm(lab - bg, axis=-1).min() > 60


def test_shape_masks_have_the_fill_ratios_the_scorer_relies_on():
    assert shape_mask("square", 12).mean() == 1.0
    assert 0.74 < shape_mask("circle", 12).mean() < 0.80
    assert 0.45 < shape_mask("triangle", 12).mean() < 0.55
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("star", 12)


def test_random_scene_is_deterministic_valid_and_json_round_trips():
    for seed in range(200):
        s = random_scene(seed)
        assert s == random_scene(seed)
        s.validate()
        assert DEFAULT_WORLD.min_objects <= len(s.objects) <= DEFAULT_WORLD.max_objects
        assert Scene.from_json(s.to_json()) == s
    assert len({random_scene(seed).to_json() for seed in range(50)}) > 40
    assert any(len({(o.shape, o.colour) for o in random_scene(seed).objects}) < len(random_scene(seed).objects)
               for seed in range(50)), "twins (same colour+shape) must occur so fine-grained references are needed"


def test_render_is_exact_uint8_and_tensor_is_comfy_image():
    obj = ShapeObject(1, 2, "square", "red")
    img = render_scene(Scene((obj,)))
    assert img.dtype == np.uint8 and img.shape == (48, 48, 3)
    assert (img[16 + 2:16 + 14, 32 + 2:32 + 14] == palette.COLOURS["red"]).all()
    assert (img[:16] == palette.BACKGROUND).all()
    # only palette colours and the background: no anti-aliasing
    s = random_scene(3)
    colours = {tuple(p) for p in render_scene(s).reshape(-1, 3)}
    assert colours <= set(palette.COLOURS.values()) | {palette.BACKGROUND}
    t = render_scene_tensor(s)
    assert t.dtype == torch.float32 and tuple(t.shape) == (1, 48, 48, 3)
    assert torch.equal((t[0] * 255).round().to(torch.uint8), torch.from_numpy(render_scene(s)))


def test_bigger_world_renders_generates_and_round_trips(tmp_path):
    world = WorldConfig(grid=4, cell=24, object_size=20, max_objects=6)
    s = random_scene(1, world)
    assert render_scene(s, world).shape == (96, 96, 3)
    cases = generate_cases(12, seed=0, world=world)
    write_jsonl(tmp_path / "big.jsonl", cases)
    assert read_jsonl(tmp_path / "big.jsonl") == cases
    with pytest.raises(ValueError, match="object_size"):
        WorldConfig(cell=10, object_size=12)


def test_scene_validation_names_the_problem():
    with pytest.raises(ValueError, match="two objects in cell"):
        Scene((ShapeObject(0, 0, "circle", "red"), ShapeObject(0, 0, "square", "blue"))).validate()
    with pytest.raises(ValueError, match="unknown colour"):
        Scene((ShapeObject(0, 0, "circle", "pink"),)).validate()


def test_generation_is_deterministic_balanced_and_prefix_stable():
    a = generate_cases(60, seed=5)
    assert [c.to_dict() for c in a] == [c.to_dict() for c in generate_cases(60, seed=5)]
    assert [c.to_dict() for c in a[:20]] == [c.to_dict() for c in generate_cases(20, seed=5)]
    assert [c.to_dict() for c in a] != [c.to_dict() for c in generate_cases(60, seed=6)]
    assert [c.kind for c in a[:4]] == list(KINDS)
    assert all(c.kind == "position" for c in generate_cases(10, seed=1, kinds=["position"]))
    with pytest.raises(ValueError, match="unknown kind"):
        generate_cases(3, seed=0, kinds=["rotate"])


def test_cases_are_consistent():
    for case in generate_cases(400, seed=11):
        case.source.validate()
        case.target.validate()
        assert case.target == apply_ops(case.source, case.ops)
        assert case.touched == touched_cells(case.source, case.ops)
        assert case.target != case.source
        # outside the touched cells the source and the target are identical
        for cell in {(r, c) for r in range(3) for c in range(3)} - set(case.touched):
            assert case.source.at(cell) == case.target.at(cell)
        assert (len(case.ops) == 2) == (case.kind == "compound")
        assert " and " in case.instruction or ", " in case.instruction or case.kind != "compound"


def _references(case):
    """(reference phrase, expected cell) for every object op, cut out of the instruction text."""
    parts = case.instruction.replace(", ", " and ").split(" and ")
    assert len(parts) == len(case.ops)
    out = []
    for part, op in zip(parts, case.ops):
        if op.kind == "add":
            continue
        words = part.split(" ", 1)[1]  # drop the verb
        if op.kind == "recolour":
            words = words.rsplit(" ", 1)[0]
        elif op.kind == "move":
            for tail in (" to the left", " to the right", " up", " down"):
                if words.endswith(tail):
                    words = words[: -len(tail)]
        out.append((words, op.cell))
    return out


def test_every_reference_denotes_exactly_one_object_of_the_source():
    fine_grained = 0
    for case in generate_cases(600, seed=2):
        for phrase, cell in _references(case):
            hits = resolve(phrase, case.source)
            assert [o.cell for o in hits] == [cell], (case.instruction, phrase, case.source)
            fine_grained += any(w in phrase.split() for w in ("left", "right", "top", "bottom")) or " in the " in phrase
        for op in case.ops:  # a reference never collides with an object an add brings in
            if op.kind == "add":
                others = [p for p, _ in _references(case)]
                assert all(not p.endswith(f"{op.colour} {op.shape}") for p in others)
    assert fine_grained > 30  # the position-word phrasing is exercised


def test_resolve_reads_position_words_independently_of_describe():
    s = Scene((ShapeObject(0, 0, "circle", "red"), ShapeObject(0, 2, "circle", "red"),
               ShapeObject(1, 1, "circle", "red"), ShapeObject(2, 2, "square", "blue")))
    assert [o.cell for o in resolve("the left red circle", s)] == [(0, 0)]
    assert [o.cell for o in resolve("the bottom red circle", s)] == [(1, 1)]
    assert len(resolve("the red circle", s)) == 3
    assert len(resolve("the top red circle", s)) == 0  # two share the top row: not a strict extreme
    assert [o.cell for o in resolve("the red circle in the centre", s)] == [(1, 1)]
    assert describe(s.at((1, 1)), s) in ("the bottom red circle",)
    assert describe(s.at((2, 2)), s) == "the square"
    assert describe(s.at((2, 2)), s, extra=[("square", "red")]) == "the blue square"
    assert describe(s.at((2, 2)), s, extra=[("square", "blue")]) is None


def test_jsonl_round_trip_is_atomic_and_exact(tmp_path):
    cases = generate_cases(25, seed=3)
    path = tmp_path / "sub" / "cases.jsonl"
    write_jsonl(path, cases)
    assert read_jsonl(path) == cases
    assert [p.name for p in path.parent.iterdir()] == ["cases.jsonl"]  # no temp file left behind
    first = json.loads(path.read_text().splitlines()[0])
    assert first["version"] == 1
    assert {"case_id", "kind", "instruction", "source", "target", "touched", "ops"} <= set(first)


def test_jsonl_minimal_hand_written_case_fills_target_and_touched(tmp_path):
    line = {"version": 1, "case_id": "mine", "kind": "colour", "instruction": "make the circle blue",
            "source": {"objects": [{"shape": "circle", "colour": "red", "row": 0, "col": 1}]},
            "ops": [{"kind": "recolour", "cell": [0, 1], "colour": "blue"}]}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(line) + "\n\n")
    (case,) = read_jsonl(path)
    assert case.target == Scene((ShapeObject(0, 1, "circle", "blue"),)) and case.touched == ((0, 1),)


@pytest.mark.parametrize("bad, message", [
    ("{not json", "line 2"),
    (json.dumps({"version": 9}), "version"),
    (json.dumps({"version": 1, "case_id": "x", "kind": "zoom", "instruction": "", "source": {"objects": []},
                 "ops": []}), "kind"),
    (json.dumps({"version": 1, "case_id": "x", "kind": "colour", "instruction": "", "source": {"objects": []},
                 "ops": [{"kind": "recolour", "cell": [0, 0]}]}), "needs colour"),
    (json.dumps({"version": 1, "case_id": "x", "kind": "colour", "instruction": "", "source": {"objects": []},
                 "ops": [{"kind": "recolour", "cell": [0, 0], "colour": "red"}]}), "empty cell"),
])
def test_malformed_lines_name_the_line(tmp_path, bad, message):
    good = json.dumps(generate_cases(1, seed=0)[0].to_dict())
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(ValueError, match="line 2") as info:
        read_jsonl(path)
    assert message in str(info.value)


def test_edit_op_round_trip():
    op = EditOp("add", shape="circle", colour="red", count=2)
    assert EditOp.from_dict(op.to_dict()) == op


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "cases.jsonl"
    write_jsonl(path, generate_cases(3, seed=0))
    before = path.read_text()

    class Broken:
        def to_dict(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, generate_cases(2, seed=1) + [Broken()])
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["cases.jsonl"]
