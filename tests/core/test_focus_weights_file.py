"""Focus-weights file: round trip, base-model hash, refusal messages, corrupt files."""

import pytest
import torch

from cogniedit.focus.learned import LearnedFocus
from cogniedit.focus.weights_file import (
    FocusWeightsError, base_model_hash, load_focus_weights, load_learned_focus, read_focus_metadata, save_focus_weights,
)


def dit(width=8, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Linear(width, 4))


def test_base_hash_is_stable_and_discriminating():
    a = dit()
    h = base_model_hash(a)
    assert h == base_model_hash({k: v.clone() for k, v in a.state_dict().items()})
    assert h == base_model_hash({"diffusion_model." + k: v.half() for k, v in a.state_dict().items()})  # host prefix, fp16
    assert h != base_model_hash(dit(width=9))   # other shapes
    assert h != base_model_hash(dit(seed=1))    # same shapes, other weights


def test_round_trip(tmp_path):
    lf = LearnedFocus(16, [3, 4], xi=2, window=6)
    path = save_focus_weights(tmp_path / "focus.safetensors", lf, {"family": "shapeedit", "base_hash": base_model_hash(dit())})
    assert [p.name for p in tmp_path.iterdir()] == ["focus.safetensors"]  # no temp file left
    meta = read_focus_metadata(path)
    assert meta["blocks"] == "3,4" and meta["xi"] == "2" and meta["hidden_size"] == "16" and meta["format_version"] == "1"
    back = load_learned_focus(path, expect_family="shapeedit", expect_hash=base_model_hash(dit()), expect_hidden=16)
    for k, v in lf.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert back.block_indices == [3, 4]


def test_mismatch_refusals_name_both_models(tmp_path):
    lf = LearnedFocus(16, [0], xi=2, window=6)
    path = save_focus_weights(tmp_path / "f.safetensors", lf, {"family": "qwen_image_edit", "base_hash": "abc123"})
    with pytest.raises(FocusWeightsError) as e:
        load_focus_weights(path, expect_family="flux_kontext")
    assert "family=qwen_image_edit" in str(e.value) and "family=flux_kontext" in str(e.value)
    with pytest.raises(FocusWeightsError, match="base_hash=abc123.*base_hash=ffff"):
        load_focus_weights(path, expect_hash="ffff")
    with pytest.raises(FocusWeightsError, match="hidden_size=32"):
        load_focus_weights(path, expect_hidden=32)
    with pytest.raises(ValueError, match="family"):
        save_focus_weights(tmp_path / "g.safetensors", lf, {"family": "sd15", "base_hash": "x"})
    with pytest.raises(ValueError, match="base_model_hash"):
        save_focus_weights(tmp_path / "g.safetensors", lf, {"family": "shapeedit"})


def test_corrupt_truncated_missing_and_foreign_files(tmp_path):
    lf = LearnedFocus(16, [0], xi=2, window=6)
    good = save_focus_weights(tmp_path / "good.safetensors", lf, {"family": "shapeedit", "base_hash": "h"})
    data = good.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "junk.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    for bad, problem in ((truncated, "is truncated"), (garbage, "is not a safetensors file")):
        with pytest.raises(FocusWeightsError) as info:  # one line: the file, the problem, the fix
            load_focus_weights(bad)
        assert str(info.value).startswith(f"focus weights {bad.name!r} {problem}") and "\n" not in str(info.value)
        assert str(tmp_path) not in str(info.value)
    with pytest.raises(FocusWeightsError, match="does not exist"):
        load_focus_weights(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(FocusWeightsError, match="not a CogniEdit focus weights file"):
        load_focus_weights(other)
