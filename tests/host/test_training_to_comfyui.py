"""From the trainer to ComfyUI: the LoRA and focus-weights files of a short Dense GRPO run (learned focus on), loaded
through the CogniEdit Loader and the Token Focus node (learned) into ComfyUI's own Qwen-Image model of the same DiT,
change its output exactly as they change the trainer's policy: same inputs, same DiT output within float tolerance.

The base is the ShapeEdit editor's narrow Qwen-Image-Edit transformer (training.tiny), rebuilt with ComfyUI's classes
from the same weights; its latent tokens map onto ComfyUI's 5-D latents by ComfyUI's own 2x2 packing.
"""

from __future__ import annotations

import pytest
import torch

from comfy_inprocess import comfy_model_of_shapeedit_editor, pack_module
# imported before ComfyUI's own tests/ package can shadow ours
from tests.fixtures.comfy_files import DIT_FILE, TE_FP8_FILE, VAE_FILE, tiny_comfy_model_files
from tests.fixtures.edit_records import write_edit_records
from tests.fixtures.tiny_models import tiny_qwen_image_edit_2511_file, tiny_qwen_image_edit_folder

pytestmark = pytest.mark.host

FOCUS_STRENGTH = 2.0
RUN = ["--train.steps=2", "--checkpoint.every=2", "--rollout.steps=4", "--rollout.group_size=2",
       "--rollout.cases_per_step=2", "--objective.window=2", "--optim.lr=3e-2", "--data.n_cases=8",
       "--train.num_threads=1", "--log.progress=false", "--lora.targets=[to_q,to_k,to_v,to_out.0,add_k_proj]",
       "--focus.enabled=true", "--focus.blocks=all", "--focus.xi=2", "--focus.window=6",
       f"--focus.strength={FOCUS_STRENGTH}", "--advantages.min_group_std=0"]


@pytest.fixture(scope="module")
def trained(comfy, tmp_path_factory):
    """(trainer with the run's final LoRA + focus, folder with the files, base editor file)."""
    from training.config import load_config
    from training.grpo import Trainer, main
    from training.tiny import save_tiny_editor

    folder = tmp_path_factory.mktemp("run")
    editor_file = save_tiny_editor(folder / "editor.safetensors", layers=2)
    out = folder / "out"
    args = [f"model.path={editor_file}", f"output_dir={out}", *[a[2:] for a in RUN]]
    assert main([x for a in args for x in ("--set", a)]) == 0
    trainer = Trainer(load_config(None, args))
    trainer.resume("latest")
    return trainer, out, editor_file


@pytest.fixture()
def model_folders(comfy, trained):
    """The run folder registered as ComfyUI's loras and models/cogniedit folder (what a user copies into)."""
    loader = pack_module("nodes.loader")
    _, out, _ = trained
    added = [("loras", str(out)), (loader.MODELS_FOLDER, str(out))]
    for name, path in added:
        comfy.folder_paths.add_model_folder_path(name, path)
    yield loader
    for name, path in added:
        comfy.folder_paths.folder_names_and_paths[name][0].remove(path)


def to_latent(tokens, grid):
    """Editor tokens [B, grid*grid, C*4] -> ComfyUI's 5-D latent [B, C, 1, 2*grid, 2*grid] (inverse of its packing)."""
    from einops import rearrange

    return rearrange(tokens, "b (h w) (c ph pw) -> b c 1 (h ph) (w pw)", h=grid, ph=2, pw=2)


def to_tokens(latent):
    from einops import rearrange

    return rearrange(latent, "b c 1 (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def comfy_dit_output(comfy, patcher, x, sigma, text, ref, grid):
    """One call of ComfyUI's DiT with the patcher's transformer options and wrappers, as sampling assembles them."""
    options = dict(patcher.model_options.get("transformer_options", {}))
    options["wrappers"] = comfy.comfy.patcher_extension.copy_nested_dicts(patcher.wrappers)
    comfy.mm.load_models_gpu([patcher])  # applies the LoRA weight patches (and takes other patchers' off)
    with torch.no_grad():
        out = patcher.model.diffusion_model(to_latent(x, grid), sigma, text, ref_latents=[to_latent(ref, grid)],
                                            transformer_options=options)
    return to_tokens(out)


def trainer_dit_output(policy, x, sigma, text, mask, ref, grid, focus=True):
    with torch.no_grad(), policy.focus_applied(mask, focus):
        out = policy.transformer(hidden_states=torch.cat([x, ref], 1), encoder_hidden_states=text,
                                 encoder_hidden_states_mask=mask, timestep=sigma,
                                 img_shapes=[[(1, grid, grid), (1, grid, grid)]], return_dict=False)[0]
    return out[:, :x.shape[1]]


def test_lora_and_focus_change_comfyuis_output_exactly_as_the_trainers(comfy, trained, model_folders):
    from cogniedit.shapes.editor import load_editor
    from cogniedit.shapes.editor.latent import GRID
    from training.grpo import render_source
    from training.lora import lora_disabled

    trainer, out, editor_file = trained
    loader, focus_node = model_folders, pack_module("nodes.focus")
    policy = trainer.policy
    case = trainer.cases[0]
    text, mask = policy.editor.encode_text([case.instruction])
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, GRID * GRID, 192, generator=generator)
    ref = policy.editor.image_to_latent(render_source(case)[None])

    base = comfy_model_of_shapeedit_editor(comfy, load_editor(editor_file))
    model, focus_weights, report = loader.CogniEditLoader.execute(base, "lora.safetensors", 1.0,
                                                                  "focus.safetensors").args
    assert "0 not loaded" in report and "warning" not in report
    patched, focus_report, _ = focus_node.CogniEditTokenFocus.execute(
        model, prompt=case.instruction, phrases="", layout="auto", mode="learned", strength=FOCUS_STRENGTH,
        blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True, focus_weights=focus_weights).args[:3]
    assert "learned focus: blocks [0, 1]" in focus_report

    for sigma in (0.9, 0.35):
        s = torch.tensor([sigma])
        unpatched = comfy_dit_output(comfy, base, x, s, text, ref, GRID)
        with lora_disabled(policy.transformer):  # the two implementations agree on the base model first
            assert torch.allclose(unpatched, trainer_dit_output(policy, x, s, text, mask, ref, GRID, focus=False),
                                  atol=1e-5)
        got = comfy_dit_output(comfy, patched, x, s, text, ref, GRID)
        want = trainer_dit_output(policy, x, s, text, mask, ref, GRID)
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
        assert (got - unpatched).abs().max() > 1e-3  # the files really change the model
        lora_only = comfy_dit_output(comfy, model, x, s, text, ref, GRID)
        assert (got - lora_only).abs().max() > 1e-4  # and the focus file is part of it



# ------------------------------------------------------------------------------------------------ Qwen-Image-Edit
@pytest.fixture(scope="module", params=["2509", "2511", "comfyui_files"])
def trained_qwen_edit(comfy, tmp_path_factory, request):
    """(trainer resumed at the end of a short single-file Qwen-Image-Edit run on image records with learned focus,
    its output folder, the DiT file). The tiny DiT has the host tier's QWEN_CONFIG shape; the 2511 file carries
    the timestep-zero marker, and its run uses the focus gate. ``comfyui_files``: ComfyUI's split files only (fp8
    e4m3fn DiT, VAE, fp8-scaled text encoder; no diffusers folder anywhere)."""
    from training.config import load_config
    from training.grpo import Trainer, main

    if request.param == "comfyui_files":
        models = tiny_comfy_model_files()
        dit_file = models / DIT_FILE
        # the real image processor; a 56x56 VLM image keeps the vision tokens few (4), as the tiny folder's does
        sources = [f"model.vae={models / VAE_FILE}", f"model.text_encoder={models / TE_FP8_FILE}",
                   "data.vlm_image_size=56"]
    else:
        components = tiny_qwen_image_edit_folder()
        dit_file = components / "transformer.safetensors" if request.param == "2509" else tiny_qwen_image_edit_2511_file()
        sources = [f"model.components={components}"]
    folder = tmp_path_factory.mktemp("qwen-edit-run")
    records = write_edit_records(folder)
    out = folder / "out"
    args = ["model.kind=single_file", f"model.path={dit_file}", *sources,
            "model.transformer_config.axes_dims_rope=[8,12,12]",
            f"data.records={records}", "data.resolution=32", "rewards.shapeedit.enabled=false",
            "rewards.preservation.enabled=true", "rewards.preservation.weights.ssim=1.0", f"output_dir={out}",
            "train.steps=2", "checkpoint.every=2", "rollout.steps=4", "objective.window=2", "rollout.group_size=2",
            "rollout.cases_per_step=2", "optim.lr=3e-2", "train.num_threads=1", "log.progress=false",
            "advantages.min_group_std=0", "lora.targets=[to_q,to_k,to_v,to_out.0,add_k_proj,img_mlp.net.2]",
            "focus.enabled=true", "focus.blocks=all", "focus.xi=2", "focus.window=4",
            f"focus.strength={FOCUS_STRENGTH}"]
    if request.param == "2511":
        args.append("focus.gate_init=1.0")  # the warm-start gate travels in the focus file and applies in ComfyUI too
    assert main([x for a in args for x in ("--set", a)]) == 0
    trainer = Trainer(load_config(None, args))
    trainer.resume("latest")
    return trainer, out, dit_file


def test_qwen_edit_lora_and_focus_change_comfyuis_output_exactly_as_the_trainers(comfy, trained_qwen_edit):
    """The trainer's text stream holds the source image's vision tokens before the instruction (diffusers'
    Qwen-Image-Edit template); the node, given only the instruction, finds it by counting from the end."""
    from safetensors.torch import load_file

    from comfy_inprocess import QWEN_CONFIG, tiny_qwen_image
    from training.lora import lora_disabled
    from training.models import TIMESTEP_ZERO_MARKER, strip_prefixes

    trainer, out, dit_file = trained_qwen_edit
    assert trainer.policy.transformer.config.zero_cond_t == ("2511" in dit_file.name)
    assert (trainer.focus.gate is not None) == ("2511" in dit_file.name)
    loader, focus_node = pack_module("nodes.loader"), pack_module("nodes.focus")
    added = [("loras", str(out)), (loader.MODELS_FOLDER, str(out))]
    for name, path in added:
        comfy.folder_paths.add_model_folder_path(name, path)
    try:
        state = strip_prefixes(load_file(str(dit_file)))  # fp8 weights as the file has them: ComfyUI widens them
        unet_config = dict(QWEN_CONFIG, joint_attention_dim=state["txt_in.weight"].shape[1])
        if TIMESTEP_ZERO_MARKER in state:  # what ComfyUI's detection derives from the marker
            unet_config["default_ref_method"] = "index_timestep_zero"
        base = tiny_qwen_image(comfy, state=state, unet_config=unet_config)
        model, focus_weights, report = loader.CogniEditLoader.execute(base, "lora.safetensors", 1.0,
                                                                      "focus.safetensors").args
    finally:
        for name, path in added:
            comfy.folder_paths.folder_names_and_paths[name][0].remove(path)
    assert "0 not loaded" in report and "note:" not in report  # keys all consumed, trained on this very base
    case = trainer.cases[0]
    patched, focus_report, _ = focus_node.CogniEditTokenFocus.execute(
        model, prompt=case.instruction, phrases="", layout="auto", mode="learned", strength=FOCUS_STRENGTH,
        blocks="all", start_percent=0.0, end_percent=1.0, cond_only=True, focus_weights=focus_weights).args[:3]
    assert "learned focus: blocks [0, 1]" in focus_report
    assert ("learned focus gate" in focus_report) == (trainer.focus.gate is not None)  # the report shows the gate
    policy = trainer.policy
    cond = policy.encode_cases([case])  # the cached Qwen2.5-VL embeddings and source latent tokens
    assert cond.text.shape[1] > int(cond.instruction_len) + 5  # vision tokens precede the instruction
    x = torch.randn(policy.latent_shape(1, cond), generator=torch.Generator().manual_seed(5))
    for sigma in (0.8, 0.3):
        s = torch.tensor([sigma])
        unpatched = comfy_dit_output(comfy, base, x, s, cond.text, cond.ref, cond.grid[0])
        with torch.no_grad():
            with lora_disabled(policy.transformer):
                assert torch.allclose(unpatched, policy.velocity_fn(cond, focus=False)(x, s), atol=1e-6)
            want = policy.velocity_fn(cond)(x, s)
        got = comfy_dit_output(comfy, patched, x, s, cond.text, cond.ref, cond.grid[0])
        assert torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())
        assert (got - unpatched).abs().max() > 1e-4  # the files really change the model
        lora_only = comfy_dit_output(comfy, model, x, s, cond.text, cond.ref, cond.grid[0])
        assert (got - lora_only).abs().max() > 2e-5  # and the focus file is part of it (tiny model: small effects)
