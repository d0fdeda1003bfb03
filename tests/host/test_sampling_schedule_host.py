"""cogniedit.sampling against the real ComfyUI: schedules, seeds and the Euler sampler agree bit for bit."""

from __future__ import annotations

import sys

import pytest
import torch

from cogniedit.sampling import flow_sigmas, flux_shift_for_size, initial_noise, noise_latent, sample_trajectory

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def comfy(comfyui_root):
    sys.path.insert(0, str(comfyui_root))
    from comfy.cli_args import args

    args.cpu = True  # before anything imports comfy.model_management (no CUDA here)
    try:
        import comfy.k_diffusion.sampling
        import comfy.model_sampling
        import comfy.sample
        import comfy.samplers
    except ModuleNotFoundError as error:  # a ComfyUI requirement missing from this Python, not a ComfyUI bug
        if (error.name or "").startswith("comfy"):
            raise
        pytest.skip(f"ComfyUI's requirement {error.name!r} is not installed in {sys.executable}; run the host "
                    "tier with the Python that runs ComfyUI (scripts/setup_env.sh installs its requirements)")

    return comfy


def _model_sampling(comfy, kind, shift, multiplier=1.0):
    ms = comfy.model_sampling
    if kind == "flux":
        sampling = type("FluxSampling", (ms.ModelSamplingFlux, ms.CONST), {})()
        sampling.set_parameters(shift=shift)
    else:
        sampling = type("DiscreteFlowSampling", (ms.ModelSamplingDiscreteFlow, ms.CONST), {})()
        sampling.set_parameters(shift=shift, multiplier=multiplier)
    return sampling


@pytest.mark.parametrize(
    "kind,shift,multiplier",
    [("discrete_flow", 3.1, 1.0), ("discrete_flow", 3.1, 1000), ("discrete_flow", 1.0, 1.0),
     ("flux", 1.15, 1.0), ("flux", flux_shift_for_size(64, 64), 1.0)],
)
@pytest.mark.parametrize("steps", [1, 4, 20, 50, 333])
def test_flow_sigmas_equal_comfy_simple_scheduler(comfy, kind, shift, multiplier, steps):
    expected = comfy.samplers.calculate_sigmas(_model_sampling(comfy, kind, shift, multiplier), "simple", steps)
    ours = flow_sigmas(steps, shift, kind=kind, multiplier=multiplier)
    assert ours.dtype == expected.dtype == torch.float32
    assert torch.equal(ours, expected), (ours - expected).abs().max()


@pytest.mark.parametrize("denoise", [0.3, 0.55, 0.8])
def test_flow_sigmas_denoise_equal_basic_scheduler(comfy, denoise):
    from comfy_extras.nodes_custom_sampler import BasicScheduler

    class Model:  # BasicScheduler only asks the MODEL for its model_sampling object
        def get_model_object(self, name):
            assert name == "model_sampling"
            return _model_sampling(comfy, "discrete_flow", 3.1)

    expected = BasicScheduler.execute(Model(), "simple", 12, denoise)[0]
    assert torch.equal(flow_sigmas(12, 3.1, denoise=denoise), expected)


def test_flux_shift_matches_node(comfy):
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    class Model:  # the node clones the model and patches in a ModelSamplingFlux with the computed shift
        class model:
            model_config = None

        def clone(self):
            patched = Model()
            patched.patches = {}
            patched.add_object_patch = patched.patches.__setitem__
            return patched

    for height, width in [(1024, 1024), (64, 64), (512, 768)]:
        patched = ModelSamplingFlux().patch(Model(), 1.15, 0.5, width, height)[0]
        assert patched.patches["model_sampling"].shift == pytest.approx(flux_shift_for_size(height, width), abs=0)


@pytest.mark.parametrize("seed", [0, 42, 2**32 + 7])
@pytest.mark.parametrize("shape", [(1, 16, 8, 8), (2, 4, 5, 6), (1, 16, 1, 8, 8)])
def test_initial_noise_equals_prepare_noise(comfy, seed, shape):
    latent = torch.zeros(shape)
    assert torch.equal(initial_noise(shape, seed), comfy.sample.prepare_noise(latent, seed))


def test_noise_latent_equals_const_noise_scaling(comfy):
    sampling = _model_sampling(comfy, "discrete_flow", 3.1)
    x0, noise = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    sigma = flow_sigmas(10, 3.1, denoise=0.6)[0]
    assert torch.equal(noise_latent(x0, noise, sigma), sampling.noise_scaling(sigma.expand(2), noise, x0))


def test_euler_trajectory_equals_comfy_sample_euler(comfy):
    """Our eta=0 loop reproduces ComfyUI's Euler sampler exactly when the velocity is (x - denoised)/sigma."""
    torch.manual_seed(0)
    weight = torch.randn(4, 4) * 0.3

    def denoiser(x, sigma):  # a fixed nonlinear "model" returning denoised x0, as ComfyUI models do
        return torch.tanh(torch.einsum("oc,bchw->bohw", weight, x)) * (1 - sigma.view(-1, 1, 1, 1))

    sigmas = flow_sigmas(8, 3.1)
    x_init = initial_noise((2, 4, 6, 6), seed=3)
    expected = comfy.k_diffusion.sampling.sample_euler(denoiser, x_init.clone(), sigmas, disable=True)

    def velocity(x, sigma):
        return (x - denoiser(x, sigma)) / sigma.view(-1, 1, 1, 1)

    ours = sample_trajectory(velocity, x_init, sigmas).final
    assert torch.equal(ours, expected), (ours - expected).abs().max()
