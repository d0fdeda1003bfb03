"""The trainer on a real architecture: Qwen-Image-Edit (tiny random diffusers/transformers models, real tokenizer)
trained on image edit records, from a diffusers folder and from a single-file DiT beside its components."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.edit_records import write_edit_records
from tests.fixtures.tiny_models import tiny_qwen_image_edit_folder
from training.config import ConfigError, load_config
from training.grpo import Trainer, main
from training.image_records import RecordError, read_records
from training.lora import read_lora_file
from training.rewards import PreservationReward

REPO = Path(__file__).resolve().parents[2]
RES = 32
ROPE = "model.transformer_config.axes_dims_rope=[8,12,12]"  # a narrow DiT's file cannot tell its rope axes


@pytest.fixture(scope="module")
def components():
    return tiny_qwen_image_edit_folder()


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    """Four 40x48 photos (cropped to squares) with masks over their top halves."""
    return write_edit_records(tmp_path_factory.mktemp("records"))


def run_args(model_args, records, out, steps=2):
    return [*model_args, f"data.records={records}", f"data.resolution={RES}", "rewards.shapeedit.enabled=false",
            "rewards.preservation.enabled=true", "rewards.preservation.weights.ssim=1.0",
            "rewards.preservation.weights.psnr=0.5", f"output_dir={out}", f"train.steps={steps}",
            "checkpoint.every=2", "rollout.steps=4", "objective.window=2", "rollout.group_size=2",
            "rollout.cases_per_step=2", "optim.lr=3e-2", "train.num_threads=1", "log.progress=false",
            "advantages.min_group_std=0"]


def flags(args):
    return [x for a in args for x in ("--set", a)]


# ------------------------------------------------------------------------------------------------ records
def test_records_are_cropped_resized_and_masked(records_file):
    records = read_records(records_file, RES)
    assert [r.case_id for r in records] == ["r0", "r1", "r2", "r3"]
    r = records[0]
    assert r.source_image.shape == (RES, RES, 3) and r.source_image.dtype == np.uint8
    # the 40x48 mask (top 20 rows white) centre-cropped to 40x40: still the top half
    assert r.edit_mask.shape == (RES, RES) and r.edit_mask[: RES // 2 - 1].all() and not r.edit_mask[RES // 2 + 1:].any()
    assert r.to_dict() == {"id": "r0", "instruction": "make cup 0 red", "image": "img0.png", "has_mask": True}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"image": "img0.png"}', '"instruction"'),
    ('{"image": "missing.png", "instruction": "x"}', "not found"),
    ('{"image": "edits.jsonl", "instruction": "x"}', "not a readable image"),
])
def test_bad_record_lines_name_the_line_and_the_fix(records_file, tmp_path, line, message):
    bad = records_file.parent / f"bad-{abs(hash(line))}.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(RecordError, match=message) as info:
        read_records(bad, RES)
    assert f"{bad}:1" in str(info.value)


def test_duplicate_ids_and_bad_resolutions_are_refused(records_file):
    dup = records_file.parent / "dup.jsonl"
    dup.write_text('{"id": "a", "image": "img0.png", "instruction": "x"}\n' * 2)
    with pytest.raises(RecordError, match="appears twice"):
        read_records(dup, RES)
    with pytest.raises(RecordError, match="multiple of 16"):
        read_records(records_file, 40)


def test_images_go_to_the_bucket_of_their_aspect_ratio(tmp_path):
    from training.image_records import bucket_sizes, group_by_size

    sizes = bucket_sizes(512, 16)
    assert (512, 512) in sizes and all(w % 16 == 0 and h % 16 == 0 and 0.5 <= w / h <= 2 for w, h in sizes)
    assert all(abs(w * h / 512**2 - 1) < 0.1 for w, h in sizes) and all((h, w) in sizes for w, h in sizes)
    lines = []
    for i, (w, h) in enumerate([(48, 48), (120, 60), (50, 100), (64, 60)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "instruction": "x"}))
    (tmp_path / "r.jsonl").write_text("\n".join(lines))
    records = read_records(tmp_path / "r.jsonl", 64)
    assert [r.source_image.shape[:2] for r in records] == [(64, 64), (48, 96), (96, 48), (64, 64)]
    assert group_by_size(records) == {(48, 96): [1], (64, 64): [0, 3], (96, 48): [2]}
    squares = read_records(tmp_path / "r.jsonl", 64, buckets=False)
    assert {r.source_image.shape[:2] for r in squares} == {(64, 64)}


def test_preservation_of_records_ignores_the_masked_region(records_file):
    record = read_records(records_file, RES)[0]
    reward = PreservationReward()
    same = record.source_image.copy()
    inside = same.copy()
    inside[: RES // 2] = 255 - inside[: RES // 2]  # changed only where the edit may change pixels
    outside = same.copy()
    outside[RES // 2 + 4:] = 0
    got = reward(np.stack([same, inside, outside]), [record] * 3)
    assert got["ssim"][0] == pytest.approx(1.0) and got["psnr"][0] == 1.0
    assert got["ssim"][1] == pytest.approx(1.0) and got["psnr"][1] == 1.0
    assert got["ssim"][2] < 0.5 and got["psnr"][2] < 0.3


# ------------------------------------------------------------------------------------------------ policy
@pytest.fixture(scope="module")
def policy(components, records_file, tmp_path_factory):
    from training.qwen_edit import QwenEditPolicy, load_qwen_edit

    transformer, vae, text_encoder, processor, folder = load_qwen_edit({"kind": "diffusers", "path": str(components)})
    return QwenEditPolicy(transformer, vae, text_encoder, processor, folder)


def test_tokens_and_decoding_equal_diffusers_pipeline(policy, records_file):
    """The policy's packing / normalisation are the pipeline's own (its VAE encode, pack, unpack, decode)."""
    pipe = policy.pipeline
    record = read_records(records_file, RES)[0]
    pixels = torch.tensor(record.source_image).float().permute(2, 0, 1)[None, :, None] / 127.5 - 1
    with torch.no_grad():
        latents = pipe._encode_vae_image(pixels, generator=None)
        grid = RES // pipe.vae_scale_factor
        want = pipe._pack_latents(latents, 1, latents.shape[1], grid, grid)
    tokens = policy.image_to_tokens(record.source_image)
    cond = policy.collate([policy.encode_record(record)[:4]])
    cond.grid = (grid // 2, grid // 2)
    assert tokens.shape == policy.latent_shape(1, cond) == (1, (grid // 2) ** 2, 4 * latents.shape[1])
    assert torch.allclose(tokens, want, atol=1e-6)
    with torch.no_grad():
        unpacked = pipe._unpack_latents(tokens, RES, RES, pipe.vae_scale_factor)
        z_dim = pipe.vae.config.z_dim
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
        std = torch.tensor(pipe.vae.config.latents_std).view(1, z_dim, 1, 1, 1)
        decoded = pipe.vae.decode(unpacked * std + mean, return_dict=False)[0][:, :, 0]
        want_img = pipe.image_processor.postprocess(decoded, output_type="np")
    got = policy.decode(tokens, cond)
    assert got.shape == (1, RES, RES, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - np.round(want_img * 255).astype(int)).max() <= 1


def test_velocity_is_the_pipelines_transformer_call(policy, records_file):
    record = read_records(records_file, RES)[1]
    cond = policy.encode_cases([record])
    vlm_image = Image.fromarray(record.source_image).resize((384, 384), Image.BICUBIC)  # 384x384, as ComfyUI
    embeds, mask = policy.pipeline.encode_prompt(record.instruction, image=vlm_image)
    assert torch.equal(cond.text[0], embeds[0]) and (mask is None or torch.equal(cond.mask[0], mask[0]))
    x = torch.randn(policy.latent_shape(1, cond), generator=torch.Generator().manual_seed(0))
    grid = cond.grid[0]
    assert cond.grid == (RES // 16, RES // 16)
    with torch.no_grad():
        want = policy.transformer(hidden_states=torch.cat([x, cond.ref], 1), timestep=torch.tensor([0.7]),
                                  encoder_hidden_states=embeds, encoder_hidden_states_mask=mask,
                                  img_shapes=[[(1, grid, grid), (1, grid, grid)]], return_dict=False)[0][:, :x.shape[1]]
        got = policy.velocity_fn(cond)(x, torch.tensor([0.7]))
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("variant, pipeline_class", [("edit_plus", "QwenImageEditPlusPipeline"),
                                                     ("edit", "QwenImageEditPipeline")])
def test_each_variant_encodes_as_its_diffusers_pipeline(components, records_file, variant, pipeline_class):
    """edit_plus (2509/2511) labels the image "Picture 1:", edit does not; each equals its own diffusers pipeline."""
    import diffusers

    from training.qwen_edit import QwenEditPolicy, load_qwen_edit

    transformer, vae, text_encoder, processor, folder = load_qwen_edit({"kind": "diffusers", "path": str(components)})
    policy = QwenEditPolicy(transformer, vae, text_encoder, processor, folder, variant=variant)
    record = read_records(records_file, RES)[2]
    text, mask, _, n_instruction, _ = policy.encode_record(record)
    pipe = getattr(diffusers, pipeline_class)(diffusers.FlowMatchEulerDiscreteScheduler(), vae, text_encoder,
                                              processor.tokenizer, processor, transformer)
    vlm_image = Image.fromarray(record.source_image).resize((384, 384), Image.BICUBIC)
    want, _ = pipe.encode_prompt(record.instruction, image=[vlm_image] if variant == "edit_plus" else vlm_image)
    assert torch.equal(text, want[0]) and mask.sum() == want.shape[1]
    assert int(n_instruction) == len(processor.tokenizer(record.instruction, add_special_tokens=False)["input_ids"])
    label = len(processor.tokenizer("Picture 1: ", add_special_tokens=False)["input_ids"])
    other = QwenEditPolicy(transformer, vae, text_encoder, processor, folder,
                           variant="edit" if variant == "edit_plus" else "edit_plus").encode_record(record)[0]
    assert text.shape[0] - other.shape[0] == (label if variant == "edit_plus" else -label)


def test_the_2511_marker_turns_on_timestep_zero_references(components, tmp_path):
    """Edit-2511's empty marker: diffusers' zero_cond_t on (reference tokens modulated at t = 0), as in ComfyUI."""
    from tests.fixtures.tiny_models import tiny_qwen_image_edit_2511_file
    from training.models import load_single_file

    from safetensors.torch import load_file, save_file

    from cogniedit.focus.weights_file import base_model_hash

    rope = {"axes_dims_rope": [8, 12, 12]}
    marked_file = tiny_qwen_image_edit_2511_file()
    state = load_file(str(marked_file))
    unmarked_file = tmp_path / "unmarked.safetensors"
    save_file({k: v for k, v in state.items() if not k.endswith("__index_timestep_zero__")}, str(unmarked_file))
    plain, marked = load_single_file(unmarked_file, rope), load_single_file(marked_file, rope)
    assert not plain.config.zero_cond_t and marked.config.zero_cond_t
    assert base_model_hash(state) == base_model_hash(plain) == base_model_hash(marked)  # the marker is no weight
    x, ref = torch.randn(1, 4, 64), torch.randn(1, 4, 64)
    text = torch.randn(1, 7, 64)
    outs = [m(hidden_states=torch.cat([x, ref], 1), timestep=torch.tensor([0.6]), encoder_hidden_states=text,
              encoder_hidden_states_mask=torch.ones(1, 7), img_shapes=[[(1, 2, 2), (1, 2, 2)]],
              return_dict=False)[0] for m in (plain, marked)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_conditioning_cache_is_keyed_by_records_and_the_text_encoder_loads_only_on_a_miss(components, records_file,
                                                                                         tmp_path):
    """The encoder is loaded lazily, once, when the cache file misses, and dropped after; a hit never loads it."""
    from training.qwen_edit import QwenEditPolicy, load_qwen_edit, load_text_encoder

    records = read_records(records_file, RES)
    loads = []

    def fresh():
        transformer, vae, text_encoder, processor, folder = load_qwen_edit(
            {"kind": "diffusers", "path": str(components)}, with_text_encoder=False)
        assert text_encoder is None
        return QwenEditPolicy(transformer, vae, None, processor, folder,
                              text_encoder_loader=lambda: loads.append(1) or load_text_encoder(folder, torch.float32))

    first = fresh()
    first.precompute(records, tmp_path)
    assert loads == [1] and first.pipeline.text_encoder is None
    files = list(tmp_path.glob("conditioning-*.safetensors"))
    assert len(files) == 1

    second = fresh()
    calls = []
    second.encode_record = lambda r: calls.append(r)  # must not be needed: the cache file answers
    second.precompute(records, tmp_path)
    assert calls == [] and loads == [1]
    for r in records:
        assert all(torch.equal(a, b) for a, b in zip(first._cache[r.case_id], second._cache[r.case_id]))

    changed = [type(records[0])(records[0].case_id, "make it blue", *(records[0].source_image, records[0].edit_mask,
                                                                       records[0].image_path))] + records[1:]
    assert second.cache_key(changed) != second.cache_key(records)


# ------------------------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize("layout", ["diffusers", "single_file", "bf16_weights+checkpointing"])
def test_short_run_writes_a_lora_that_changes_the_policy(components, records_file, tmp_path, layout):
    model = (["model.kind=single_file", f"model.path={components / 'transformer.safetensors'}",
              f"model.components={components}", ROPE] if layout == "single_file" else
             ["model.kind=diffusers", f"model.path={components}"])
    if layout.startswith("bf16"):  # the scale settings a real run uses: bf16 weights and autocast, block checkpointing
        model += ["model.dtype=bfloat16", "train.bf16=true", "train.gradient_checkpointing=true"]
    out = tmp_path / "out"
    args = run_args(model, records_file, out) + ["log.sample_every=2", "log.sample_cases=2"]
    assert main(flags(args)) == 0
    lora, meta = read_lora_file(out / "lora.safetensors")
    assert meta["base_model_family"] == "qwen_image_edit"
    assert any(v.abs().sum() > 0 for k, v in lora.items() if k.endswith("lora_B.weight"))
    assert (out / "samples" / "step-000002.png").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(0 < m["r/preservation.ssim"] <= 1 for m in metrics)

    trainer = Trainer(load_config(None, args))
    trainer.resume("latest")
    policy = trainer.policy
    cond = policy.encode_cases(trainer.cases[:1])
    x = torch.randn(policy.latent_shape(1, cond), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained = policy.velocity_fn(cond)(x, torch.tensor([0.6]))
        base = policy.reference_velocity_fn(cond)(x, torch.tensor([0.6]))
    assert (trained - base).abs().max() > 1e-6


def test_batches_come_from_one_bucket_and_train(components, tmp_path):
    """Wide and square records: each step's cases share one size; the run trains and draws its sample sheet."""
    from tests.fixtures.edit_records import write_edit_records

    (tmp_path / "wide").mkdir()
    (tmp_path / "square").mkdir()
    wide = write_edit_records(tmp_path / "wide", n=3, height=32, width=64)
    square = write_edit_records(tmp_path / "square", n=3, height=48, width=48, seed=1)
    merged = tmp_path / "all.jsonl"
    rows = [dict(json.loads(line), id=f"{f.parent.name}-{i}", image=f"{f.parent.name}/{json.loads(line)['image']}",
                 mask=f"{f.parent.name}/{json.loads(line)['mask']}")
            for f in (wide, square) for i, line in enumerate(f.read_text().splitlines())]
    merged.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    args = [a for a in run_args(["model.kind=diffusers", f"model.path={components}"], merged, out, steps=2)
            if not a.startswith("data.resolution")] + ["data.resolution=48", "log.sample_every=2",
                                                         "log.sample_cases=6"]
    assert main(flags(args)) == 0
    trainer = Trainer(load_config(None, args))
    assert sorted(trainer.buckets) == [(32, 64), (48, 48)]
    for step in range(1, 9):
        assert len({c.source_image.shape for c in trainer.step_cases(step)}) == 1
    assert {tuple(c.source_image.shape[:2]) for s in range(1, 9) for c in trainer.step_cases(s)} == {(32, 64), (48, 48)}
    wide_cond = trainer.policy.encode_cases([c for c in trainer.cases if c.source_image.shape[1] == 64][:2])
    assert wide_cond.grid == (2, 4) and wide_cond.ref.shape[1] == 8
    assert (out / "samples" / "step-000002.png").is_file()


def test_vlm_judge_scores_record_edits_over_http(components, records_file, tmp_path):
    """Image records travel through the vlm_http contract (edited + source PNGs, the record as ``case``)."""
    from training.rewards.reference_server import ReferenceRewardServer

    out = tmp_path / "out"
    with ReferenceRewardServer() as server:
        args = run_args(["model.kind=diffusers", f"model.path={components}"], records_file, out, steps=1) + [
            "rewards.vlm_http.enabled=true", f"rewards.vlm_http.url={server.url}"]
        assert main(flags(args)) == 0
        assert server.requests == 1
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert 1.0 <= metrics["r/vlm_http.consistency"] <= 5.0 and metrics["r/vlm_http.alignment"] == 3.0


FOCUS = ["focus.enabled=true", "focus.blocks=all", "focus.xi=2", "focus.window=4", "focus.strength=2.0"]


def test_learned_focus_trains_on_the_instruction_tokens_only(components, records_file, tmp_path):
    """With focus on, the run writes focus.safetensors for qwen_image_edit; the predicted window lies inside the
    instruction (never on the source image's vision tokens before it, nor the suffix after it)."""
    from cogniedit.focus.weights_file import load_focus_weights

    out = tmp_path / "out"
    args = run_args(["model.kind=diffusers", f"model.path={components}"], records_file, out) + FOCUS
    assert main(flags(args)) == 0
    tensors, meta = load_focus_weights(out / "focus.safetensors")
    assert meta["family"] == "qwen_image_edit" and tensors
    trainer = Trainer(load_config(None, args))
    trainer.resume("latest")
    policy = trainer.policy
    cond = policy.encode_cases(trainer.cases[:2])
    valid = cond.mask.sum(1)
    assert (cond.instruction_len > 0).all() and (cond.instruction_len + 5 < valid).all()  # vision tokens first
    x = torch.randn(policy.latent_shape(2, cond), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with policy.focus_applied(cond.mask, True, cond.instruction_len, cond.ref.shape[1]):
            focused = policy.velocity(x, torch.tensor([0.5]), cond)
            weights = {i: w.clone() for i, w in policy.focus_state.block_weights.items()}
        plain = policy.velocity(x, torch.tensor([0.5]), cond)
    assert (focused - plain).abs().max() > 1e-6
    assert sorted(weights) == [0, 1]
    for w in weights.values():
        for row, n, total in zip(w, cond.instruction_len.tolist(), valid.tolist()):
            start = total - 5 - n
            assert row[start:start + n].sum() > 0.99 and row.sum() == pytest.approx(row[start:start + n].sum())


def test_learned_window_covers_exactly_the_instruction_tokens(components, records_file, tmp_path):
    """A predictor window longer than the instruction, soft starts: the window weights are non-zero on every
    instruction token and on nothing else. The instruction's place is checked against the tokenizer: the text
    template's last tokens are the instruction, then <|im_end|>\n<|im_start|>assistant\n (the stream ends there)."""
    args = run_args(["model.kind=diffusers", f"model.path={components}"], records_file, tmp_path / "out") + [
        "focus.enabled=true", "focus.blocks=all", "focus.xi=16", "focus.window=32", "focus.strength=2.0"]
    trainer = Trainer(load_config(None, args))
    policy = trainer.policy
    cases = trainer.cases[:2]
    cond = policy.encode_cases(cases)
    x = torch.randn(policy.latent_shape(2, cond), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), policy.focus_applied(cond.mask, True, cond.instruction_len, cond.ref.shape[1]):
        policy.velocity(x, torch.tensor([0.5]), cond)
        weights = {i: w.clone() for i, w in policy.focus_state.block_weights.items()}
    tokenizer, template = policy.pipeline.tokenizer, policy.pipeline.prompt_template_encode
    assert sorted(weights) == [0, 1]
    for b, case in enumerate(cases):
        ids = tokenizer(template.format(case.instruction), add_special_tokens=False)["input_ids"]
        n = int(cond.instruction_len[b])
        assert n < 32 and tokenizer.decode(ids[-5 - n:-5]) == case.instruction
        assert tokenizer.decode(ids[-5:]) == "<|im_end|>\n<|im_start|>assistant\n"
        end = int(cond.mask[b].sum())  # the DiT's text stream ends where the template does
        for w in weights.values():
            support = torch.nonzero(w[b] > 0).flatten().tolist()
            assert support == list(range(end - 5 - n, end - 5)), (support, end, n)


def test_learned_focus_trains_with_gradient_checkpointing(components, records_file, tmp_path):
    """diffusers calls checkpointed blocks positionally (no ``encoder_hidden_states=``): the focus hooks rewrite the
    text stream there too, a run with train.gradient_checkpointing (the example config) trains, and one step's
    gradient equals the gradient without checkpointing (fp32: only recomputation order differs, rtol 1e-5)."""
    out = tmp_path / "out"
    args = run_args(["model.kind=diffusers", f"model.path={components}"], records_file, out, steps=1) + FOCUS + [
        "train.gradient_checkpointing=true"]
    assert main(flags(args)) == 0 and (out / "focus.safetensors").is_file()
    trainer = Trainer(load_config(None, args))
    policy, transformer = trainer.policy, trainer.policy.transformer
    with torch.no_grad():  # a LoRA with B != 0, so every trainable gets gradient
        for p in trainer.params:
            p.normal_(0, 0.05)
    cond = policy.encode_cases(trainer.cases[:2])
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(policy.latent_shape(2, cond), generator=gen)
    probe = torch.randn(x.shape, generator=gen)
    grads = {}
    for checkpointing in (True, False):
        transformer.enable_gradient_checkpointing() if checkpointing else transformer.disable_gradient_checkpointing()
        for p in trainer.params:
            p.grad = None
        with torch.enable_grad():
            (policy.velocity_fn(cond)(x, torch.tensor([0.6])) * probe).sum().backward()
        grads[checkpointing] = [p.grad.clone() for p in trainer.params]
    focus_grads = grads[True][-len(list(trainer.focus.parameters())):]
    assert all(g.abs().sum() > 0 for g in focus_grads)  # soft tokens and predictors both get gradient
    for with_ckpt, without in zip(grads[True], grads[False]):
        torch.testing.assert_close(with_ckpt, without, rtol=1e-5, atol=1e-8)


def test_held_out_evaluation_compares_base_and_trained_edits(components, records_file, tmp_path):
    """evaluate_records: the run's own config and files, base vs trained ODE edits, the run's rewards."""
    from training.evaluate_records import main as evaluate_main
    from training.image_records import read_records as read

    out = tmp_path / "run"
    # a large learning rate, so that two steps change the tiny model's 8-bit edits
    assert main(flags(run_args(["model.kind=diffusers", f"model.path={components}"], records_file, out) + FOCUS
                      + ["optim.lr=0.5"])) == 0
    held_out = write_edit_records(tmp_path, n=3, seed=9)
    assert evaluate_main(["--run", str(out), "--records", str(held_out), "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [r["id"] for r in result["per_record"]] == ["r0", "r1", "r2"] and result["step"] == 2
    assert set(result["means"]["base"]) == {"preservation.ssim", "preservation.psnr", "weighted"}
    base = [r["base"]["preservation.ssim"] for r in result["per_record"]]
    trained = [r["trained"]["preservation.ssim"] for r in result["per_record"]]
    assert base != trained  # the LoRA and focus file change the edits
    record = read(held_out, RES)[0]
    assert result["per_record"][0]["instruction"] == record.instruction
    assert (tmp_path / "eval" / "sheet.png").is_file()


@pytest.mark.parametrize("focus", [False, True])
def test_resume_after_interruption_matches_uninterrupted_run(components, records_file, tmp_path, focus):
    model = ["model.kind=diffusers", f"model.path={components}"] + (FOCUS if focus else [])
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(flags(run_args(model, records_file, straight, steps=3))) == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "training.grpo",
                           *flags(run_args(model, records_file, broken, steps=3)), "--train.stop_after=2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(flags(run_args(model, records_file, broken, steps=3)) + ["--resume", "latest"]) == 0
    lines = [[{k: v for k, v in json.loads(x).items() if not k.startswith("time_")}
              for x in (out / "metrics.jsonl").read_text().splitlines()] for out in (straight, broken)]
    assert lines[0] == lines[1] and len(lines[0]) == 3
    a, _ = read_lora_file(straight / "lora.safetensors")
    b, _ = read_lora_file(broken / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra, message", [
    (["data.records=null"], "set data.records"),
    (["rewards.shapeedit.enabled=true"], "rewards.shapeedit scores ShapeEdit cases only"),
])
def test_config_errors_for_real_models_name_the_fix(components, records_file, tmp_path, extra, message):
    args = run_args(["model.kind=diffusers", f"model.path={components}"], records_file, tmp_path) + extra
    with pytest.raises(ConfigError, match=message):
        load_config(None, args)


def test_model_errors_name_the_fix(components, records_file, tmp_path):
    single = ["model.kind=single_file", f"model.path={components / 'transformer.safetensors'}", ROPE]
    with pytest.raises(ConfigError, match="set model.components"):
        Trainer(load_config(None, run_args(single, records_file, tmp_path)))
    with pytest.raises(ConfigError, match="lacks vae/, text_encoder/, processor/"):
        Trainer(load_config(None, run_args(single + [f"model.components={components / 'transformer'}"],
                                           records_file, tmp_path)))
    from tests.fixtures.tiny_models import narrow_qwen_image
    from safetensors.torch import save_file

    wide = narrow_qwen_image(text_width=32)  # a DiT for another text encoder
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(tmp_path / "other.safetensors"))
    other = ["model.kind=single_file", f"model.path={tmp_path / 'other.safetensors'}", f"model.components={components}",
             ROPE]
    with pytest.raises(ConfigError, match="expects text width 32, the text encoder .* gives 64"):
        Trainer(load_config(None, run_args(other, records_file, tmp_path)))
