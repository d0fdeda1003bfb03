"""The trainer's attention sheet (training/attention_sheet.py) on the tiny Qwen-Image-Edit folder: written atomically
at the end of a run, one row per focus phrase of the fixed cases; the phrase weights sit on the phrase's own tokens in
the encoded text (checked against the tokenizer); learned focus changes the "with" map, no focus leaves both equal;
recording leaves the edit unchanged."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.edit_records import write_edit_records
from tests.fixtures.tiny_models import tiny_qwen_image_edit_folder
from training.attention_sheet import TILE, case_maps, focus_phrases, phrase_weights_in
from training.config import load_config
from training.grpo import Trainer, main

RES = 32
FOCUS = ["focus.enabled=true", "focus.blocks=all", "focus.xi=2", "focus.window=4", "focus.strength=2.0",
         "focus.gate_init=2.0"]


@pytest.fixture(scope="module")
def components():
    return tiny_qwen_image_edit_folder()


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    return write_edit_records(tmp_path_factory.mktemp("sheet_records"))  # instructions "make cup i red"


def args_for(components, records, out, extra=()):
    return ["model.kind=diffusers", f"model.path={components}", f"data.records={records}", f"data.resolution={RES}",
            "rewards.shapeedit.enabled=false", "rewards.preservation.enabled=true",
            "rewards.preservation.weights.ssim=1.0", f"output_dir={out}",
            "train.steps=1", "checkpoint.every=1", "rollout.steps=4", "objective.window=2", "rollout.group_size=2",
            "rollout.cases_per_step=2", "train.num_threads=1", "log.progress=false", "advantages.min_group_std=0",
            "log.attention_cases=2", *extra]


def test_a_run_writes_the_attention_sheet_at_its_end(components, records_file, tmp_path):
    out = tmp_path / "out"
    assert main([x for a in args_for(components, records_file, out) for x in ("--set", a)]) == 0
    sheet = out / "samples" / "attention-step-000001.png"
    assert sheet.is_file() and [p.name for p in sheet.parent.iterdir()] == [sheet.name]  # no temp file left
    trainer = Trainer(load_config(None, args_for(components, records_file, tmp_path / "again")))
    phrases = [focus_phrases(c, c.instruction, None) for c in trainer.cases[:2]]
    assert all(phrases), phrases
    with Image.open(sheet) as image:  # rows: one per phrase; columns: source | without | with (square 16x16 grid)
        assert image.size == (3 * TILE, sum(len(p) for p in phrases) * (TILE + 14))


def test_phrase_weights_sit_on_the_phrase_tokens_of_the_encoded_text(components, records_file, tmp_path):
    trainer = Trainer(load_config(None, args_for(components, records_file, tmp_path / "out")))
    policy, case = trainer.policy, trainer.cases[0]
    cond = policy.encode_cases([case])
    names, weights = phrase_weights_in(case.instruction, ["red"], policy.tokenizer, cond.mask[0])
    n_valid = int(cond.mask[0].sum())
    red = policy.tokenizer(" red", add_special_tokens=False)["input_ids"]  # mid-sentence: with its space
    # independent: the instruction's tokens end 5 suffix tokens before the end of the valid text
    ids = policy.tokenizer(case.instruction, add_special_tokens=False)["input_ids"]
    start = n_valid - 5 - len(ids) + ids.index(red[0])
    assert names == ["red"] and torch.nonzero(weights[0, 0]).flatten().tolist() == list(range(start, start + len(red)))


def test_learned_focus_shows_in_the_with_map_and_recording_is_read_only(components, records_file, tmp_path):
    plain = Trainer(load_config(None, args_for(components, records_file, tmp_path / "plain")))
    case = plain.cases[0]
    maps = case_maps(plain.policy, case, case.instruction, ["red"], plain.config["rollout"], "all",
                     plain_schedule())
    assert torch.equal(maps.base, maps.focused) and maps.calls > 0
    focused = Trainer(load_config(None, args_for(components, records_file, tmp_path / "focus", FOCUS)))
    with torch.no_grad():
        torch.nn.init.normal_(focused.focus.soft_tokens, std=1.0)
    before = focused.edit_record(case, 0)
    maps = case_maps(focused.policy, case, case.instruction, ["red"], focused.config["rollout"], "all",
                     plain_schedule())
    assert not torch.equal(maps.base, maps.focused)
    assert np.array_equal(focused.edit_record(case, 0), before)  # processors as they were, nothing left recording
    assert focused.policy.focus_state.maps is None


def plain_schedule():
    from cogniedit.focus.bias import FocusSchedule

    return FocusSchedule(0.0, 1.0)
