"""Reward-curve plotting from metrics.jsonl: the moving average by hand, a PNG written, clear errors."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib comes with the trainer extra: pip install -e .[train]")

from training.plot_rewards import curves, main, moving_average  # noqa: E402


def test_moving_average_is_the_trailing_mean():
    values = np.array([1.0, 3.0, 5.0, 7.0])
    assert moving_average(values, 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert moving_average(values, 10).tolist() == [1.0, 2.0, 3.0, 4.0]


def write_run(folder, rewards, seconds):
    folder.mkdir()
    rows = [{"step": i + 1, "reward_mean": r, "r/shapeedit.success": float(r > 0.5), "time_step_s": seconds}
            for i, r in enumerate(rewards)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_use_summed_step_time_and_png_is_written(tmp_path):
    write_run(tmp_path / "dense", [0.2, 0.4, 0.6, 0.8], 30.0)
    write_run(tmp_path / "sparse", [0.1, 0.2, 0.3], 20.0)
    c = curves([json.loads(line) for line in (tmp_path / "dense" / "metrics.jsonl").read_text().splitlines()], 2)
    assert c["minutes"].tolist() == [0.5, 1.0, 1.5, 2.0]
    assert c["reward_mean"].tolist() == pytest.approx([0.2, 0.3, 0.5, 0.7])
    out = tmp_path / "curves.png"
    assert main([str(tmp_path / "dense"), str(tmp_path / "sparse"), "--out", str(out), "--window", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_metrics_is_named(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "metrics.jsonl not found: pass the output_dir" in capsys.readouterr().err
