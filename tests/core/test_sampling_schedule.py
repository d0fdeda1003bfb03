"""Sigma schedules from the formulas (ComfyUI equality itself is checked in tests/host/)."""

from __future__ import annotations

import math

import pytest
import torch

from cogniedit.sampling import flow_sigmas, flux_shift_for_size, flux_time_shift, time_snr_shift


def test_time_snr_shift_formula():
    assert time_snr_shift(3.1, 0.5) == pytest.approx(3.1 * 0.5 / (1 + 2.1 * 0.5))
    assert time_snr_shift(1.0, 0.37) == 0.37
    assert time_snr_shift(3.1, 1.0) == pytest.approx(1.0) and time_snr_shift(3.1, 0.0) == 0.0


def test_flux_time_shift_formula():
    mu = 0.8
    assert flux_time_shift(mu, 0.25) == pytest.approx(math.exp(mu) / (math.exp(mu) + 3.0))
    assert flux_time_shift(mu, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_discrete_flow_sigmas_from_formula(steps):
    sigmas = flow_sigmas(steps, shift=3.1)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    # "simple": table entry t_k = k/1000 at index -(1 + int(i * 1000/steps)), then 0
    expected = [time_snr_shift(3.1, (1000 - int(i * 1000 / steps)) / 1000) for i in range(steps)] + [0.0]
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and torch.all(sigmas[1:] < sigmas[:-1])


@pytest.mark.parametrize("steps", [3, 20])
def test_flux_sigmas_from_formula(steps):
    mu = flux_shift_for_size(512, 512)
    sigmas = flow_sigmas(steps, shift=mu, kind="flux")
    expected = [flux_time_shift(mu, (10000 - int(i * 10000 / steps)) / 10000) for i in range(steps)] + [0.0]
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_denoise_keeps_the_tail_of_a_longer_schedule():
    full = flow_sigmas(int(10 / 0.5), shift=3.1)
    assert torch.equal(flow_sigmas(10, shift=3.1, denoise=0.5), full[-11:])
    assert flow_sigmas(10, shift=3.1, denoise=0.5)[0] < 0.8


def test_flux_shift_for_size():
    assert flux_shift_for_size(1024, 1024) == pytest.approx(1.15)
    assert flux_shift_for_size(256, 256) == pytest.approx(0.5)  # 256 tokens -> base_shift
    assert flux_shift_for_size(64, 64) == pytest.approx(0.459375)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps"), (dict(steps=4, denoise=0.0), "denoise"), (dict(steps=4, kind="karras"), "kind"),
])
def test_bad_schedule_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_sigmas(**kwargs)
