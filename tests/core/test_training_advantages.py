import pytest
import torch

from training.advantages import compute_advantages


def test_group_normalisation_per_case_and_filter():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])  # case 1 has no variance
    out = compute_advantages({"score": r}, {"score": 1.0}, group_size=4, mode="group", min_group_std=1e-3)
    assert torch.allclose(out.values[:4], torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64), atol=1e-6)
    assert out.mask.tolist() == [True] * 4 + [False] * 4
    assert torch.equal(out.values[4:], torch.zeros(4, dtype=torch.float64))


def test_batch_normalisation_uses_all_rewards_and_clips():
    r = torch.tensor([0.0] * 99 + [1.0])
    out = compute_advantages({"score": r}, {"score": 1.0}, group_size=4, mode="batch", clip_max=5.0)
    assert out.values.max() == 5.0  # the lone 1.0 is ~9.9 sigma before the clip
    assert out.values[0] == pytest.approx(-0.1005, abs=1e-3)


def test_combine_weighted_advantages_like_the_authors():
    rewards = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    out = compute_advantages(rewards, {"a": 1.4, "b": 0.7}, group_size=2, mode="batch", combine="advantage")
    z = (rewards["a"] - 2.5) / rewards["a"].std(unbiased=False)
    assert torch.allclose(out.values, (1.4 * z - 0.7 * z).double(), atol=1e-6)


def test_weight_for_a_missing_dimension_is_an_error():
    with pytest.raises(ValueError, match="no enabled reward plugin"):
        compute_advantages({"score": torch.ones(4)}, {"alignment": 1.0}, group_size=2)
