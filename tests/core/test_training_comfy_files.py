"""ComfyUI's split files in, no diffusers folder: the VAE, the Qwen2.5-VL text encoder (also fp8 "scaled") and the
fp8 e4m3fn DiT, read from tiny files in ComfyUI's key layout, give the same latents, decoding, conditioning and
velocity as the diffusers / transformers models they were written from; a run on those files alone trains and
resumes exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.fixtures.comfy_files import (DIT_FILE, TE_FILE, TE_FP8_FILE, VAE_FILE, comfy_text_encoder_state,
                                        comfy_vae_state, fp8_e4m3fn_state, quantize_fp8, tiny_comfy_dit,
                                        tiny_comfy_model_files, tiny_comfy_text_encoder, tiny_comfy_vae)
from tests.fixtures.edit_records import write_edit_records
from training.comfy_files import (ComfyFileError, load_comfy_text_encoder, load_comfy_vae, qwen25_vl_processor,
                                  vae_config)
from training.image_records import read_records

REPO = Path(__file__).resolve().parents[2]
RES = 32
ROPE = {"axes_dims_rope": [8, 12, 12]}
# fp8 e4m3fn keeps 3 mantissa bits: each weight is off by up to 2^-4 of itself (about 3.6 % RMS); through the
# quantised vision blocks and language layers the tiny encoder's embeddings move by 8-9 % of their norm
FP8_CONDITIONING_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def files():
    return tiny_comfy_model_files()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return read_records(write_edit_records(tmp_path_factory.mktemp("records")), RES)


def save(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def policy_of(transformer, vae, text_encoder, processor):
    from training.qwen_edit import QwenEditPolicy

    return QwenEditPolicy(transformer, vae, text_encoder, processor, None)


# ------------------------------------------------------------------------------------------------ VAE
@pytest.mark.parametrize("shape", ["comfyui", "narrow"])
def test_vae_file_in_comfyuis_layout_is_the_diffusers_vae(tmp_path, shape):
    """Architecture read from the shapes (also one ComfyUI's loader could not build: 1 res block, other widths);
    every weight lands on its diffusers parameter, so encoding and decoding are bit-identical."""
    from diffusers import AutoencoderKLQwenImage

    from tests.fixtures.tiny_models import TINY_EDIT_VAE, _seeded

    vae = tiny_comfy_vae() if shape == "comfyui" else _seeded(AutoencoderKLQwenImage(**TINY_EDIT_VAE), 3, std=0.05)
    state = comfy_vae_state(vae)
    assert "decoder.middle.0.residual.0.gamma" in state and "conv2.weight" in state  # ComfyUI's detection keys
    loaded = load_comfy_vae(save(state, tmp_path / "vae.safetensors"))
    config = vae_config({k: tuple(v.shape) for k, v in state.items()})
    assert all(loaded.config[k] == vae.config[k] for k in config)
    pixels = torch.rand(1, 3, 1, RES, RES, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(pixels).latent_dist.mode()
        assert torch.equal(loaded.encode(pixels).latent_dist.mode(), latent)
        assert torch.equal(loaded.decode(latent).sample, vae.decode(latent).sample)


def test_policy_on_comfyui_files_equals_the_diffusers_components(records, tmp_path):
    """Float32 ComfyUI files (DiT with ComfyUI's prefix, VAE, text encoder) against the in-memory models: the
    policy's latent tokens, decoding, text conditioning and velocity are bit-identical."""
    from training.qwen_edit import load_qwen_edit

    dit, vae, text_encoder = tiny_comfy_dit(), tiny_comfy_vae(), tiny_comfy_text_encoder()
    save({f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()}, tmp_path / "dit.safetensors")
    save(comfy_vae_state(vae), tmp_path / "vae.safetensors")
    save(comfy_text_encoder_state(text_encoder), tmp_path / "te.safetensors")
    model = {"kind": "single_file", "path": str(tmp_path / "dit.safetensors"), "vae": str(tmp_path / "vae.safetensors"),
             "text_encoder": str(tmp_path / "te.safetensors"), "transformer_config": ROPE}
    got_parts = load_qwen_edit(model)
    assert got_parts[4].processor is None  # the processor is built in code: no folder anywhere
    got = policy_of(*got_parts[:4])
    want = policy_of(dit, vae, text_encoder, qwen25_vl_processor())
    record = records[0]
    tokens = got.image_to_tokens(record.source_image)
    assert torch.equal(tokens, want.image_to_tokens(record.source_image))
    row, want_row = got.encode_record(record), want.encode_record(record)
    assert all(torch.equal(a, b) for a, b in zip(row, want_row))
    cond = got.collate([row[:4]])
    cond.grid = tuple(int(v) for v in row[4])
    assert np.array_equal(got.decode(tokens, cond), want.decode(tokens, cond))
    x = torch.randn(got.latent_shape(1, cond), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(got.velocity(x, torch.tensor([0.6]), cond), want.velocity(x, torch.tensor([0.6]), cond))


def test_bf16_text_encoder_file_loads_as_from_pretrained_in_bf16(files, tmp_path):
    """Built directly in bfloat16 (a 7B is never held in float32): the same model as transformers'
    from_pretrained(torch_dtype=bfloat16) of a folder with those weights, rotary buffers kept float32."""
    import transformers

    tiny_comfy_text_encoder().save_pretrained(tmp_path / "folder")
    want = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "folder",
                                                                         torch_dtype=torch.bfloat16)
    got = load_comfy_text_encoder(files / TE_FILE, torch.bfloat16)
    assert {p.dtype for p in got.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in got.buffers()} == {b.dtype for b in want.buffers()} == {torch.float32}
    ids = torch.tensor([[151644, 872, 198, 100, 200, 151645]])
    with torch.no_grad():
        assert torch.equal(got(input_ids=ids, output_hidden_states=True).hidden_states[-1],
                           want(input_ids=ids, output_hidden_states=True).hidden_states[-1])
    assert torch.get_default_dtype() == torch.float32


# ------------------------------------------------------------------------------------------------ fp8
@pytest.mark.parametrize("layout", ["scaled_fp8", "comfy_quant"])
def test_fp8_scaled_text_encoder_is_dequantised_with_its_scales(records, tmp_path, layout):
    """Each fp8 weight times its scale, exactly; the conditioning equals the transformers model holding those
    dequantised weights bit for bit, and the float32 original within FP8_CONDITIONING_TOLERANCE (relative norm)."""
    original = tiny_comfy_text_encoder()
    state = comfy_text_encoder_state(original, layout)
    assert sum(v.dtype == torch.float8_e4m3fn for v in state.values()) >= 10
    loaded = load_comfy_text_encoder(save(state, tmp_path / "te.safetensors"))
    dequantised = tiny_comfy_text_encoder()
    with torch.no_grad():
        for name, param in dequantised.named_parameters():
            if param.ndim == 2 and (".layers." in name or ".blocks." in name):
                q, scale = quantize_fp8(param)
                param.copy_(q.float() * scale)
    assert torch.equal(loaded.model.language_model.layers[0].self_attn.q_proj.weight,
                       dequantised.model.language_model.layers[0].self_attn.q_proj.weight)
    processor, dit, vae = qwen25_vl_processor(), tiny_comfy_dit(), tiny_comfy_vae()
    got = policy_of(dit, vae, loaded, processor).encode_record(records[1])[0]
    exact = policy_of(dit, vae, dequantised, processor).encode_record(records[1])[0]
    reference = policy_of(dit, vae, original, processor).encode_record(records[1])[0]
    assert torch.equal(got, exact)
    error = float((got - reference).norm() / reference.norm())
    assert 0 < error < FP8_CONDITIONING_TOLERANCE, error


def test_fp8_e4m3fn_dit_file_is_widened(files):
    """The DiT file of plain fp8 weights (no scales) loads as the diffusers model of those weights."""
    from training.models import load_single_file

    dit = tiny_comfy_dit()
    stored = load_file(str(files / DIT_FILE))
    assert stored["model.diffusion_model.img_in.weight"].dtype == torch.float8_e4m3fn
    loaded = load_single_file(files / DIT_FILE, ROPE)
    want = tiny_comfy_dit()
    want.load_state_dict({k: v.to(torch.float8_e4m3fn).float() if v.ndim >= 2 else v
                          for k, v in dit.state_dict().items()})
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), want.state_dict().values()))


def test_dit_file_is_built_in_its_dtype_and_bundled_parts_are_ignored(tmp_path):
    """A bf16 load (built directly in bf16, one tensor at a time) equals the float32 model cast to bf16, weights and
    output; keys of other components bundled in the file (a checkpoint's VAE) are left out."""
    from training.models import load_single_file

    dit = tiny_comfy_dit()
    state = {f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()}
    state["first_stage_model.decoder.conv_in.weight"] = torch.zeros(3, 3)
    got = load_single_file(save(state, tmp_path / "checkpoint.safetensors"), ROPE, torch.bfloat16)
    want = tiny_comfy_dit().to(torch.bfloat16)
    assert {p.dtype for p in got.parameters()} == {torch.bfloat16}
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    x = torch.randn(1, 8, 64, generator=torch.Generator().manual_seed(4)).bfloat16()
    text = torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(5)).bfloat16()
    outs = [m(hidden_states=x, timestep=torch.tensor([0.6]).bfloat16(), encoder_hidden_states=text,
              encoder_hidden_states_mask=torch.ones(1, 5), img_shapes=[[(1, 2, 2), (1, 2, 2)]],
              return_dict=False)[0] for m in (got, want)]
    assert torch.equal(outs[0], outs[1])


def test_scaled_fp8_dit_file_uses_its_scales(tmp_path):
    from training.models import load_single_file

    dit = tiny_comfy_dit()
    state = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in dit.state_dict().items():
        if value.ndim == 2:
            q, scale = quantize_fp8(value)
            state[f"model.diffusion_model.{key}"] = q
            state[f"model.diffusion_model.{key[:-len('.weight')]}.scale_weight"] = scale
        else:
            state[f"model.diffusion_model.{key}"] = value
    loaded = load_single_file(save(state, tmp_path / "dit.safetensors"), ROPE)
    q, scale = quantize_fp8(dit.img_in.weight)
    assert torch.equal(loaded.img_in.weight, q.float() * scale)
    assert (loaded.img_in.weight - dit.img_in.weight).abs().max() <= dit.img_in.weight.abs().max() / 16


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_or_unsupported_files_name_the_file_and_the_fix(files, tmp_path):
    with pytest.raises(ComfyFileError, match=r"is not a Qwen-Image \(Wan 2.1 layout\) VAE"):
        load_comfy_vae(files / TE_FILE)
    with pytest.raises(ComfyFileError, match="is not a ComfyUI Qwen2.5-VL text encoder"):
        load_comfy_text_encoder(files / VAE_FILE)
    state = comfy_text_encoder_state(tiny_comfy_text_encoder(), "comfy_quant")
    tag = [k for k in state if k.endswith(".comfy_quant")][0]
    nvfp4 = dict(state, **{tag: torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)})
    with pytest.raises(ComfyFileError, match="quantised as 'nvfp4'"):
        load_comfy_text_encoder(save(nvfp4, tmp_path / "nvfp4.safetensors"))
    key = tag[: -len(".comfy_quant")] + ".weight"
    int8 = dict(state, **{key: torch.zeros(state[key].shape, dtype=torch.int8)})
    with pytest.raises(ComfyFileError, match="integer quantisation"):
        load_comfy_text_encoder(save(int8, tmp_path / "int8.safetensors"))
    partial = {k: v for k, v in state.items() if not k.startswith("model.layers.1.mlp")}
    with pytest.raises(ComfyFileError, match=r"partial.safetensors: \d+ missing"):
        load_comfy_text_encoder(save(partial, tmp_path / "partial.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ComfyFileError, match="broken.safetensors: not a readable safetensors file"):
        load_comfy_vae(tmp_path / "broken.safetensors")


def test_processor_built_in_code_is_qwen25_vls(records):
    """The pack's offline tokenizer and Qwen2.5-VL's image settings: a 384x384 source gives a 28x28 patch grid
    (196 vision tokens after the 2x2 merge)."""
    from PIL import Image

    from cogniedit.text.tokenizer import load_qwen25_tokenizer

    processor = qwen25_vl_processor()
    text = "make the left cup red"
    assert processor.tokenizer(text)["input_ids"] == load_qwen25_tokenizer()(text)["input_ids"]
    image = Image.fromarray(records[0].source_image).resize((384, 384))
    out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>x"], images=[image], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 28, 28]]
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 196


# ------------------------------------------------------------------------------------------------ trainer
def comfy_args(files, records_file, out, steps=2, text_encoder=TE_FP8_FILE):
    return ["model.kind=single_file", f"model.path={files / DIT_FILE}", f"model.vae={files / VAE_FILE}",
            f"model.text_encoder={files / text_encoder}", "model.transformer_config.axes_dims_rope=[8,12,12]",
            f"data.records={records_file}", f"data.resolution={RES}", "rewards.shapeedit.enabled=false",
            "rewards.preservation.enabled=true", "rewards.preservation.weights.ssim=1.0", f"output_dir={out}",
            f"train.steps={steps}", "checkpoint.every=2", "rollout.steps=4", "objective.window=2",
            "rollout.group_size=2", "rollout.cases_per_step=2", "optim.lr=3e-2", "train.num_threads=1",
            "log.progress=false", "advantages.min_group_std=0"]


def flags(args):
    return [x for a in args for x in ("--set", a)]


def test_run_on_comfyui_files_alone_trains_and_resumes_exactly(files, tmp_path):
    """DiT fp8 e4m3fn, VAE, fp8-scaled text encoder, no diffusers folder: a 3-step run killed after step 2 and
    resumed equals the uninterrupted run (metrics and LoRA bit for bit); the LoRA moved."""
    from training.lora import read_lora_file

    records_file = write_edit_records(tmp_path)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    from training.grpo import main

    assert main(flags(comfy_args(files, records_file, straight, steps=3))) == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "training.grpo",
                           *flags(comfy_args(files, records_file, broken, steps=3)), "--train.stop_after=2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(flags(comfy_args(files, records_file, broken, steps=3)) + ["--resume", "latest"]) == 0
    lines = [[{k: v for k, v in json.loads(x).items() if not k.startswith("time_")}
              for x in (out / "metrics.jsonl").read_text().splitlines()] for out in (straight, broken)]
    assert lines[0] == lines[1] and len(lines[0]) == 3
    a, meta = read_lora_file(straight / "lora.safetensors")
    b, _ = read_lora_file(broken / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta["base_model_family"] == "qwen_image_edit"
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.endswith("lora_B.weight"))


def test_conditioning_cache_is_keyed_by_the_component_files(files, tmp_path):
    """Another text-encoder file (bf16 instead of fp8 scaled) misses the cache; the same files hit it."""
    from training.config import load_config
    from training.grpo import Trainer

    records_file = write_edit_records(tmp_path)
    policies = [Trainer(load_config(None, comfy_args(files, records_file, tmp_path / "out", text_encoder=te))).policy
                for te in (TE_FP8_FILE, TE_FILE, TE_FP8_FILE)]
    cases = read_records(records_file, RES)
    keys = [p.cache_key(cases) for p in policies]
    assert keys[0] == keys[2] != keys[1]
    assert sorted(p.name for p in (tmp_path / "out" / "cache").glob("*.safetensors")) == sorted(
        {f"conditioning-{k}.safetensors" for k in keys})


def test_missing_components_name_the_keys_to_set(files, tmp_path):
    from training.config import ConfigError, load_config
    from training.grpo import Trainer

    records_file = write_edit_records(tmp_path)
    args = [a for a in comfy_args(files, records_file, tmp_path / "out") if not a.startswith("model.text_encoder")]
    with pytest.raises(ConfigError, match="set model.vae and model.text_encoder to ComfyUI's files"):
        Trainer(load_config(None, args))
    with pytest.raises(ConfigError, match="model.text_encoder: .*nowhere.safetensors not found"):
        Trainer(load_config(None, args + [f"model.text_encoder={tmp_path / 'nowhere.safetensors'}"]))


def test_vae_and_text_encoder_folders_without_a_components_folder(files):
    """model.vae / model.text_encoder also take diffusers / transformers folders; the processor is then built in
    code. A DiT for another text encoder is refused naming both widths."""
    from training.models import ModelLoadError
    from training.qwen_edit import load_qwen_edit
    from tests.fixtures.tiny_models import tiny_qwen_image_edit_folder

    folder = tiny_qwen_image_edit_folder()
    model = {"kind": "single_file", "path": str(folder / "transformer.safetensors"), "vae": str(folder / "vae"),
             "text_encoder": str(folder / "text_encoder"), "transformer_config": ROPE}
    _, vae, text_encoder, processor, components = load_qwen_edit(model)
    assert components.processor is None and type(processor).__name__ == "ImageOnlyQwen2_5_VLProcessor"
    _, want_vae, want_te, _, _ = load_qwen_edit({"kind": "diffusers", "path": str(folder)})
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), want_vae.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(text_encoder.state_dict().values(), want_te.state_dict().values()))
    with pytest.raises(ModelLoadError, match="expects text width 64, the text encoder .* gives 128"):
        load_qwen_edit(dict(model, text_encoder=str(files / TE_FP8_FILE)), with_text_encoder=False)
