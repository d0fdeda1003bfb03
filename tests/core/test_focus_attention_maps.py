"""Per-phrase attention maps: the row mass against attention computed by hand, and the maps of the shipped ShapeEdit
editor (training-free focus): where its image tokens attend to a phrase, with and without focus, what the bias can
and cannot do to them, block/step selection, the sheet, and that recording never changes the edit."""

import math

import numpy as np
import pytest
import torch

from cogniedit.focus.attention_maps import AttentionMapRecorder, phrase_weights, render_phrase_maps
from cogniedit.focus.bias import FocusSchedule, attention_mass, row_attention_mass
from cogniedit.focus.spans import FocusSpans, TokenSpan


def test_row_mass_is_the_attention_on_each_phrase_computed_by_hand():
    torch.manual_seed(0)
    b, h, n_txt, n_img, d = 2, 3, 5, 4, 8
    q, k = torch.randn(b, h, n_txt + n_img, d), torch.randn(b, h, n_txt + n_img, d)
    weights = torch.zeros(b, 2, n_txt)
    weights[:, 0, 1] = 1.0
    weights[:, 1, 2:4] = 1.0
    mask = torch.zeros(b, 1, 1, n_txt + n_img)
    mask[1, ..., 4] = -math.inf  # sample 1 pads its last text token
    got = row_attention_mass(q, k, weights, n_txt, (n_txt, n_txt + n_img), mask)
    assert got.shape == (b, 2, n_img)
    for s in range(b):
        for r in range(n_img):
            logits = torch.einsum("hd,hld->hl", q[s, :, n_txt + r], k[s]) / math.sqrt(d) + mask[s, 0, 0]  # [H, keys]
            p = logits.softmax(-1)
            want = [float(p[:, 1].mean()), float(p[:, 2:4].sum(-1).mean())]
            assert got[s, :, r].tolist() == pytest.approx(want, rel=1e-5)
    union = weights.sum(1)
    assert torch.allclose(attention_mass(q, k, union, n_txt, (n_txt, n_txt + n_img), mask), got.sum(1).mean(-1))


def test_phrase_weights_one_map_per_phrase_every_occurrence():
    spans = [FocusSpans([TokenSpan("red", 2, 3, 0, 3), TokenSpan("left", 5, 6, 0, 4), TokenSpan("red", 7, 8, 0, 3)],
                        text_len=9),
             FocusSpans([TokenSpan("to the right", 3, 6, 0, 12)], text_len=9)]
    weights, names = phrase_weights(spans, 9)
    assert names == [["red", "left"], ["to the right"]] and weights.shape == (2, 2, 9)
    assert torch.nonzero(weights[0, 0]).flatten().tolist() == [2, 7]
    assert torch.nonzero(weights[1, 0]).flatten().tolist() == [3, 4, 5] and weights[1, 1].sum() == 0


# ------------------------------------------------------------------------------------ the shipped ShapeEdit editor
@pytest.fixture(scope="module")
def shipped():
    from cogniedit.shapes.editor import load_default_editor

    return load_default_editor()


@pytest.fixture(scope="module")
def colour_cases():
    from cogniedit.shapes.cases import generate_cases
    from cogniedit.shapes.render import render_scene

    cases = generate_cases(80, seed=11, kinds=["colour"])[:24]
    return cases, np.stack([render_scene(c.source) for c in cases])


def mapped_edit(shipped, cases_images, strength, n=None, sample_steps=None, **maps):
    from cogniedit.shapes.cogniedit_editor import load_cogniedit_editor

    cases, images = cases_images
    editor = load_cogniedit_editor(focus="training_free", focus_strength=strength, base=shipped)
    if sample_steps:
        editor.steps = sample_steps
    editor.attention_maps = maps
    out = editor.edit(images[:n], [c.instruction for c in cases[:n]], seed=0)
    return editor, out


def test_the_target_colour_is_attended_where_the_object_to_recolour_is(shipped, colour_cases):
    """Recolour cases: the image tokens of the object's cell (2x2 of the 6x6 grid) put about twice the image's mean
    attention on the target colour word (the shipped editor, all blocks and steps, no focus)."""
    editor, _ = mapped_edit(shipped, colour_cases, 0.0)
    maps = editor.last_maps
    ratios = []
    for i, case in enumerate(colour_cases[0]):
        (op,) = case.ops
        phrase_map = maps.base[i, maps.phrases[i].index(op.colour)]
        r, c = op.cell
        ratios.append(float(phrase_map[2 * r:2 * r + 2, 2 * c:2 * c + 2].mean() / phrase_map.mean()))
    assert len(ratios) == 24 and np.mean(ratios) > 1.5 and np.mean(np.array(ratios) > 1) >= 0.8, ratios


def test_focus_raises_every_pixels_phrase_attention_by_at_most_one_plus_s(shipped, colour_cases):
    """Per image token the bias multiplies the odds of the focused tokens by (1 + s): each phrase's share grows, and
    by at most (1 + s); at strength 0 the two maps are the same."""
    s = 2.0
    editor, _ = mapped_edit(shipped, colour_cases, s, n=6, sample_steps=4)
    maps = editor.last_maps
    present = maps.base > 0
    assert present.any(dim=(2, 3)).sum() >= 6  # every case has at least one phrase
    assert (maps.focused[present] > maps.base[present]).all()
    assert (maps.focused <= (1 + s) * maps.base + 1e-6).all()
    zero, _ = mapped_edit(shipped, colour_cases, 0.0, n=6, sample_steps=4)
    assert torch.equal(zero.last_maps.base, zero.last_maps.focused)
    assert torch.allclose(zero.last_maps.base, maps.base, atol=0.05)  # same model; s = 2 moves the trajectory a bit


def test_blocks_and_steps_choose_the_calls_and_recording_never_changes_the_edit(shipped, colour_cases):
    from cogniedit.shapes.cogniedit_editor import load_cogniedit_editor

    cases, images = colour_cases
    editor, out = mapped_edit(shipped, colour_cases, 2.0, n=3, sample_steps=4, blocks="1",
                              steps=FocusSchedule(0.0, 0.5))
    maps = editor.last_maps
    assert maps.blocks == [1] and maps.steps == [0, 1] and maps.calls == 2
    plain = load_cogniedit_editor(focus="training_free", focus_strength=2.0, base=shipped)
    plain.steps = 4
    assert np.array_equal(out, plain.edit(images[:3], [c.instruction for c in cases[:3]], seed=0))
    with pytest.raises(ValueError, match="no attention call matched"):
        mapped_edit(shipped, colour_cases, 2.0, n=1, sample_steps=4, blocks="1", steps=FocusSchedule(0.9, 0.95))
    off = load_cogniedit_editor(base=shipped)
    off.attention_maps = {}
    with pytest.raises(ValueError, match="need focus on"):
        off.edit(images[:1], [cases[0].instruction])


def test_the_sheet_shows_each_phrase_without_and_with_focus(shipped, colour_cases):
    editor, _ = mapped_edit(shipped, colour_cases, 2.0, n=2, sample_steps=4)
    maps = editor.last_maps
    sheet = render_phrase_maps(maps, colour_cases[1][:2], tile=64)
    rows = sum(len(names) for names in maps.phrases)
    assert sheet.dtype == np.uint8 and sheet.shape == (rows * (64 + 14), 3 * 64, 3)
    first = sheet[14:78]  # the first phrase's row, below its labels
    source, without, focused = first[:, :64], first[:, 64:128], first[:, 128:]
    assert not np.array_equal(without, focused) and not np.array_equal(source, without)
    bare = render_phrase_maps(maps, None, tile=32)  # no source: the phrase's name heads the row on white
    assert bare.shape == (rows * (32 + 14), 3 * 32, 3) and (bare[14:46, :32] == 255).all()


def test_recorder_refuses_rows_that_do_not_fill_the_grid():
    recorder = AttentionMapRecorder(torch.ones(1, 1, 4), [["red"]], (6, 6))
    with pytest.raises(ValueError, match="do not fill the 6x6"):
        recorder.add(0, 0, torch.zeros(1, 1, 35), torch.zeros(1, 1, 35))
