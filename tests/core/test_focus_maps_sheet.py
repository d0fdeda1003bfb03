"""Attention maps from hand-built attention: a known hotspot lights up its cell on the sheet, phrase entries that count
from the end give the same weights as explicit positions, the probe's shortened schedule gates the same steps as the
full one, the row mass is the same in chunks, the ComfyUI-style override records the maps read-only, and the sheet
is written atomically."""

import math

import numpy as np
import pytest
import torch

from cogniedit.focus import bias
from cogniedit.focus.attention_maps import (AttentionMapRecorder, PhraseMaps, ProbeSteps, heat, phrase_entries,
                                            phrase_weights, render_phrase_maps, save_phrase_maps)
from cogniedit.focus.bias import FocusSchedule, row_attention_mass
from cogniedit.focus.override import TXT_LEN_KEY, make_attention_override
from cogniedit.focus.spans import FocusSpans, TokenSpan

ROWS, COLS, N_TXT, D = 3, 4, 3, 8
HOT = (2, 1)  # the image token that attends to the phrase


def hotspot_qk():
    """One head; text key 1 is the phrase; only the image token at HOT has a query that matches it."""
    n = N_TXT + ROWS * COLS
    q, k = torch.zeros(1, 1, n, D), torch.zeros(1, 1, n, D)
    k[0, 0, 1, 0] = 6.0
    q[0, 0, N_TXT + HOT[0] * COLS + HOT[1], 0] = 3.0  # logit 6 * 3 / sqrt(8) on the phrase, 0 on every other key
    return q, k


def test_a_hand_built_hotspot_lights_up_its_cell():
    q, k = hotspot_qk()
    recorder = AttentionMapRecorder(torch.tensor([[[0.0, 1.0, 0.0]]]), [["red"]], (ROWS, COLS))
    recorder.record(q, k, N_TXT, (N_TXT, N_TXT + ROWS * COLS), None, None, block_index=0)
    maps = recorder.result()
    n = N_TXT + ROWS * COLS
    hot = math.exp(18 / math.sqrt(8)) / (math.exp(18 / math.sqrt(8)) + n - 1)  # softmax by hand
    want = torch.full((ROWS, COLS), 1 / n)
    want[HOT] = hot
    assert torch.allclose(maps.base[0, 0], want, atol=1e-6) and torch.equal(maps.base, maps.focused)

    tile = 96  # 4 columns -> 24-px token cells, the map 96 x 72
    sheet = render_phrase_maps(maps, None, tile=tile)
    assert sheet.shape == (72 + 14, 3 * tile, 3)
    without = sheet[14:, tile:2 * tile]
    cell = lambda r, c: without[r * 24 + 12, c * 24 + 12]  # noqa: E731 - a token cell's centre pixel
    assert tuple(cell(*HOT)) == (252, 255, 164)  # the ramp's top: the row's largest value
    others = [tuple(cell(r, c)) for r in range(ROWS) for c in range(COLS) if (r, c) != HOT]
    assert all(sum(int(c) for c in p) < 80 for p in others), others  # 1/15 of the hotspot's share: near black
    assert tuple(cell(0, 0)) == tuple(heat(np.array([1 / n]), hot)[0])


def test_phrase_entries_from_the_end_give_the_explicit_positions():
    found = FocusSpans([TokenSpan("red", 2, 3, 0, 3), TokenSpan("left cup", 4, 6, 0, 8), TokenSpan("red", 7, 8, 0, 3)],
                       text_len=9)
    names, from_end = phrase_entries(found, "end")
    assert names == ["red", "left cup"] and from_end == [[-7, -2], [-5, -4]]
    recorder = AttentionMapRecorder(None, [names], (1, 1), entries=[from_end])
    shifted = recorder.weights_for(20)  # 11 tokens precede the prompt at run time (e.g. vision tokens)
    explicit, _ = phrase_weights([FocusSpans([TokenSpan(s.phrase, s.start + 11, s.end + 11, 0, 0)
                                              for s in found.spans], text_len=20)], 20)
    assert torch.equal(shifted, explicit)
    _, plain = phrase_entries(found, "start")
    assert plain == [[2, 7], [4, 5]]
    _, spans = phrase_entries(found, "spans")  # a FocusSpans per phrase: its repeated copies count too
    assert bias.focus_weights([spans[0]], 18)[0].nonzero().flatten().tolist() == [2, 7, 11, 16]
    with pytest.raises(ValueError, match="start, end or spans"):
        phrase_entries(found, "middle")


@pytest.mark.parametrize("steps,start,end", [(10, 0.0, 0.5), (10, 0.2, 0.35), (7, 0.1, 0.9), (4, 0.25, 1.0),
                                             (12, 0.5, 0.75)])
def test_the_shortened_probe_gates_the_steps_of_the_full_run(steps, start, end):
    run = ProbeSteps(steps, start, end)
    full = torch.linspace(1, 0, steps + 1)
    short = full[:run.run_steps + 1]
    focus = FocusSchedule(0.15, 0.6)
    for i in range(run.run_steps):  # the steps the shortened run evaluates
        assert run.maps_schedule.active(short[i], short) == (start <= i / steps < end), i
        assert run.rescale(focus).active(short[i], short) == focus.active(full[i], full), i
    assert run.run_steps == math.ceil(end * steps - 1e-9) and any(start <= i / steps < end for i in range(steps))


def test_probe_steps_refuse_an_empty_range():
    with pytest.raises(ValueError, match="hold no step"):
        ProbeSteps(4, 0.3, 0.45)
    with pytest.raises(ValueError, match="start < end"):
        ProbeSteps(10, 0.5, 0.5)


def test_row_mass_in_chunks_equals_one_block(monkeypatch):
    torch.manual_seed(1)
    q, k = torch.randn(2, 3, 40, 8), torch.randn(2, 3, 40, 8)
    weights = torch.rand(2, 2, 6)
    mask = torch.zeros(2, 1, 40, 40)
    mask[1, ..., 5] = -math.inf
    whole = row_attention_mass(q, k, weights, 6, (6, 40), mask)
    monkeypatch.setattr(bias, "ROW_MASS_ELEMENTS", 3 * 40 * 2 * 5)  # 5 rows per chunk
    assert torch.allclose(row_attention_mass(q, k, weights, 6, (6, 40), mask), whole, atol=1e-6)


def attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, transformer_options=None):
    """A host-style attention callable: [B, L, H*D] in and out, additive mask."""
    b, n, _ = q.shape
    split = [t.view(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    out = bias.reference_attention(*split, mask)
    return out.transpose(1, 2).reshape(b, n, -1)


def test_the_override_records_maps_read_only_and_at_strength_zero():
    q, k = hotspot_qk()
    q, k = q.transpose(1, 2).flatten(2), k.transpose(1, 2).flatten(2)   # [1, L, D]: one head
    v = torch.randn_like(q)
    to = {TXT_LEN_KEY: N_TXT, "block_index": 0, "block_type": "double", "cond_or_uncond": [0],
          "sigmas": torch.tensor([1.0]), "sample_sigmas": torch.tensor([1.0, 0.0])}
    outputs, maps = {}, {}
    for s in (0.0, 3.0):
        recorder = AttentionMapRecorder(None, [["red"]], (ROWS, COLS), entries=[[[-2]]])  # key 1 of 3, from the end
        plain = make_attention_override([[-2]], s)
        mapped = make_attention_override([[-2]], s, maps=recorder)
        outputs[s] = plain(attention, q, k, v, 1, transformer_options=to)
        assert torch.equal(mapped(attention, q, k, v, 1, transformer_options=to), outputs[s])  # read-only
        maps[s] = recorder.result()
    assert torch.equal(outputs[0.0], attention(q, k, v, 1))
    assert torch.equal(maps[0.0].base, maps[0.0].focused) and torch.equal(maps[0.0].base, maps[3.0].base)
    # the bias multiplies the phrase's odds by 1 + s: p' = 4p / (1 + 3p), per token
    p = maps[3.0].base
    assert torch.allclose(maps[3.0].focused, 4 * p / (1 + 3 * p), atol=1e-6)
    assert maps[3.0].steps == [0] and maps[3.0].blocks == [0]


def test_the_sheet_file_is_written_atomically(tmp_path):
    maps = PhraseMaps([["red", "cup"]], torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4), 1, [0], [0])
    path = tmp_path / "samples" / "attention-step-000010.png"
    save_phrase_maps(path, maps, [np.zeros((30, 40, 3), np.uint8)], tile=64)
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (3 * 64, 2 * (48 + 14))  # 3 columns; rows of the 4:3 grid's 64 x 48 cells + labels
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
