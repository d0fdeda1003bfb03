"""The exact scorer: parse_image inverts render_scene, edits are judged per attribute, SSIM matches skimage."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cogniedit.shapes.cases import EditCase, EditOp, apply_ops, generate_cases, touched_cells
from cogniedit.shapes.metrics import psnr, ssim, ssim_map
from cogniedit.shapes.render import render_scene
from cogniedit.shapes.scene import Scene, ShapeObject, WorldConfig, random_scene
from cogniedit.shapes.scorer import aggregate, parse_image, preservation, reward, score_edit


def attrs(scene):
    return sorted((o.row, o.col, o.shape, o.colour) for o in scene.objects)


def test_parse_inverts_render_exactly_on_300_scenes():
    for seed in range(300):
        scene = random_scene(seed)
        assert parse_image(render_scene(scene)) == scene, seed


def test_parse_reads_an_empty_image_and_a_bigger_world():
    assert parse_image(render_scene(Scene(()))) == Scene(())
    world = WorldConfig(grid=4, cell=24, object_size=20, max_objects=8)
    for seed in range(20):
        scene = random_scene(seed, world)
        assert parse_image(render_scene(scene, world), world) == scene


def _degrade(img, rng, sigma=0.8, noise=8.0, specks=5):
    out = np.stack([gaussian_filter(img[..., c].astype(float), sigma) for c in range(3)], -1)
    out += rng.normal(0, noise, out.shape)
    for _ in range(specks):  # isolated 2x2 specks of random colour
        y, x = rng.integers(0, 47, 2)
        out[y:y + 2, x:x + 2] = rng.integers(0, 256, 3)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def test_parse_is_robust_to_blur_noise_specks_and_size():
    rng = np.random.default_rng(0)
    for seed in range(100):
        scene = random_scene(seed)
        assert attrs(parse_image(_degrade(render_scene(scene), rng))) == attrs(scene), seed
        # an editor drawing objects a bit smaller or bigger, one pixel off
        other = Scene(tuple(o.replace(size=10 + seed % 5) for o in scene.objects))
        shifted = np.roll(render_scene(other), (1, -1), axis=(0, 1))
        assert attrs(parse_image(shifted)) == attrs(scene), seed
    # float images in 0..1 are accepted; a wrong shape is refused with the expected shape named
    scene = random_scene(7)
    assert parse_image(render_scene(scene) / 255.0) == scene
    with pytest.raises(ValueError, match=r"\[48, 48, 3\]"):
        parse_image(np.zeros((32, 32, 3), np.uint8))


def test_target_render_succeeds_and_source_render_fails_every_case():
    cases = generate_cases(200, seed=4)
    for case in cases:
        good = score_edit(render_scene(case.target), case)
        assert good.success and good.preserved, case.instruction
        assert good.psnr == math.inf and good.ssim == pytest.approx(1.0) or math.isnan(good.psnr)
        for ok in (good.colour_ok, good.position_ok, good.count_ok):
            assert ok in (None, True)
        same = score_edit(render_scene(case.source), case)
        assert not same.success and same.preserved, case.instruction
        assert False in (same.colour_ok, same.position_ok, same.count_ok)


def test_requested_kinds_are_reported_per_case():
    for case in generate_cases(40, seed=9):
        s = score_edit(render_scene(case.target), case)
        kinds = {op.kind for op in case.ops}
        assert (s.colour_ok is not None) == ("recolour" in kinds)
        assert (s.position_ok is not None) == ("move" in kinds)
        assert (s.count_ok is not None) == bool(kinds & {"add", "remove"})


def _case(ops, objects, kind):
    source = Scene(tuple(objects))
    return EditCase("t", kind, "test", source, apply_ops(source, ops), touched_cells(source, ops), tuple(ops))


RED_CIRCLE, BLUE_SQUARE = ShapeObject(0, 0, "circle", "red"), ShapeObject(2, 2, "square", "blue")


def test_wrong_colour_is_a_colour_failure():
    case = _case([EditOp("recolour", (0, 0), colour="green")], [RED_CIRCLE, BLUE_SQUARE], "colour")
    wrong = Scene((RED_CIRCLE.replace(colour="yellow"), BLUE_SQUARE))
    s = score_edit(render_scene(wrong), case)
    assert (s.success, s.colour_ok, s.preserved) == (False, False, True)
    # the right colour but an unrequested change elsewhere: colour right, not preserved, no success
    spill = Scene((RED_CIRCLE.replace(colour="green"), BLUE_SQUARE.replace(colour="red")))
    s = score_edit(render_scene(spill), case)
    assert (s.success, s.colour_ok, s.preserved) == (False, True, False)
    assert s.psnr < 30 and s.ssim < 0.95
    # the right colour on the wrong shape is not the requested object
    s = score_edit(render_scene(Scene((RED_CIRCLE.replace(colour="green", shape="square"), BLUE_SQUARE))), case)
    assert (s.success, s.colour_ok) == (False, False)


def test_wrong_position_is_a_position_failure():
    case = _case([EditOp("move", (0, 0), to_cell=(0, 1))], [RED_CIRCLE, BLUE_SQUARE], "position")
    assert score_edit(render_scene(case.target), case).position_ok
    for wrong in (Scene((RED_CIRCLE.replace(row=1), BLUE_SQUARE)),                    # moved down, not right
                  Scene((RED_CIRCLE, RED_CIRCLE.replace(col=1), BLUE_SQUARE))):       # copied, not moved
        s = score_edit(render_scene(wrong), case)
        assert (s.success, s.position_ok) == (False, False)


def test_wrong_count_is_a_count_failure_and_added_objects_may_go_to_any_free_cell():
    add_two = _case([EditOp("add", shape="triangle", colour="yellow", count=2)], [RED_CIRCLE, BLUE_SQUARE], "count")
    placed_elsewhere = Scene((RED_CIRCLE, BLUE_SQUARE, ShapeObject(2, 0, "triangle", "yellow"),
                              ShapeObject(1, 1, "triangle", "yellow")))
    assert placed_elsewhere != add_two.target
    s = score_edit(render_scene(placed_elsewhere), add_two)
    assert s.success and s.count_ok and s.preserved
    one_only = Scene((RED_CIRCLE, BLUE_SQUARE, ShapeObject(2, 0, "triangle", "yellow")))
    s = score_edit(render_scene(one_only), add_two)
    assert (s.success, s.count_ok) == (False, False)
    three = Scene(one_only.objects + (ShapeObject(0, 1, "triangle", "yellow"), ShapeObject(0, 2, "triangle", "yellow")))
    assert not score_edit(render_scene(three), add_two).count_ok
    # an added object that replaces an existing one is not an add
    over = Scene((ShapeObject(0, 0, "triangle", "yellow"), BLUE_SQUARE, ShapeObject(2, 0, "triangle", "yellow")))
    s = score_edit(render_scene(over), add_two)
    assert (s.success, s.count_ok, s.preserved) == (False, False, False)

    remove = _case([EditOp("remove", (2, 2))], [RED_CIRCLE, BLUE_SQUARE], "count")
    assert score_edit(render_scene(Scene((RED_CIRCLE,))), remove).success
    s = score_edit(render_scene(Scene((RED_CIRCLE, BLUE_SQUARE))), remove)
    assert (s.success, s.count_ok) == (False, False)
    s = score_edit(render_scene(Scene(())), remove)  # removed the wrong one as well
    assert (s.success, s.count_ok, s.preserved) == (False, True, False)


def test_blurred_noisy_oracle_still_succeeds():
    rng = np.random.default_rng(1)
    cases = generate_cases(60, seed=8)
    scores = [score_edit(_degrade(render_scene(c.target), rng, sigma=0.7, noise=5, specks=2), c) for c in cases]
    assert all(s.success for s in scores)
    assert all(s.psnr < 60 for s in scores if not math.isnan(s.psnr))


def test_aggregate_per_kind():
    cases = generate_cases(40, seed=2)
    scores = [score_edit(render_scene(c.target if (i // 4) % 2 else c.source), c) for i, c in enumerate(cases)]
    agg = aggregate(scores)
    assert agg["n"] == 40 and agg["success"] == 0.5
    assert set(agg["per_kind"]) == {"colour", "position", "count", "compound"}
    assert agg["per_kind"]["colour"]["position_acc"] is None
    assert agg["per_kind"]["colour"]["colour_acc"] == 0.5
    assert agg["psnr"] == 100.0 and agg["ssim"] == pytest.approx(1.0)  # identity elsewhere: inf capped


def test_psnr_ssim_identity_and_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = render_scene(random_scene(1))
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    for noise in (5, 30):
        b = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
        ref = structural_similarity(a, b, gaussian_weights=True, use_sample_covariance=False, sigma=1.5,
                                    data_range=255, channel_axis=-1)
        assert ssim_map(a, b)[5:-5, 5:-5].mean() == pytest.approx(ref, abs=1e-9)
        mse = ((a.astype(float) - b) ** 2).mean()
        assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert math.isnan(psnr(a, a, np.zeros(a.shape[:2], bool)))


def test_preservation_ignores_the_touched_cells_only():
    case = _case([EditOp("recolour", (0, 0), colour="green")], [RED_CIRCLE, BLUE_SQUARE], "colour")
    img = render_scene(case.source).copy()
    img[0:16, 0:16] = 0  # scribble inside the touched cell: preservation unaffected
    assert preservation(img, case) == (math.inf, pytest.approx(1.0))
    img[40, 2] = 0  # one pixel outside it
    p, s = preservation(img, case)
    assert math.isfinite(p) and s < 1.0


def test_reward_is_one_for_the_target_and_graded_below():
    case = _case([EditOp("recolour", (0, 0), colour="green"), EditOp("move", (2, 2), to_cell=(2, 1))],
                 [RED_CIRCLE, BLUE_SQUARE], "compound")
    perfect = reward(score_edit(render_scene(case.target), case))
    half = reward(score_edit(render_scene(Scene((RED_CIRCLE.replace(colour="green"), BLUE_SQUARE))), case))
    nothing = reward(score_edit(render_scene(case.source), case))
    spoiled = reward(score_edit(render_scene(Scene((BLUE_SQUARE.replace(row=0, col=1),))), case))
    assert perfect == pytest.approx(1.0)
    assert perfect > half > nothing > spoiled >= 0.0
    assert nothing == pytest.approx(0.3)  # preserved (0.2) + SSIM 1 (0.1)
