"""The source of example_workflows/*.json: each example as a short graph spec, laid out and written in the
front end's UI format with widget order taken from a live server's /object_info.

Regenerate after a node's inputs change (test_workflows.py fails and names this command):

    .venv/bin/python tests/host/workflow_specs.py http://127.0.0.1:8188

Widget values are the schema defaults unless a spec sets them; links are given by input name (or, for an
input a node does not have yet, the first free input of the link's type), so a renamed input shows up as a
clear error instead of a silently shifted widget.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_to_api import node_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_workflows"
PACK_ID = "cogniedit"  # pyproject [project] name: the registry id ComfyUI-Manager matches cnr_id against

# Comfy-Org split-file default names (ComfyUI_examples / official templates).
QWEN_2509 = "qwen_image_edit_2509_fp8_e4m3fn.safetensors"
QWEN_2511 = "qwen_image_edit_2511_bf16.safetensors"
QWEN_TE = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
QWEN_VAE = "qwen_image_vae.safetensors"
KONTEXT = "flux1-dev-kontext_fp8_scaled.safetensors"
CLIP_L = "clip_l.safetensors"
T5 = "t5xxl_fp8_e4m3fn_scaled.safetensors"
FLUX_VAE = "ae.safetensors"
# FLUX.2 klein 4B base (the cfg-guided variant; the distilled one runs at cfg 1 in 4 steps) and its Qwen3 4B encoder,
# LongCat-Image-Edit (fed by the Qwen-Image text encoder): names from ComfyUI 0.33's templates and blueprints.
KLEIN = "flux-2-klein-base-4b.safetensors"
KLEIN_TE = "qwen_3_4b.safetensors"
FLUX2_VAE = "flux2-vae.safetensors"
LONGCAT_EDIT = "longcat_image_edit_bf16.safetensors"
# Where Comfy-Org publishes them (as in ComfyUI's own templates): the loaders carry these as properties.models,
# so the front end's missing-models panel names each file's folder and offers its download.
COMFY_ORG_FILES = {
    QWEN_2509: ("diffusion_models", "https://huggingface.co/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/"),
    QWEN_2511: ("diffusion_models", "https://huggingface.co/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/"),
    QWEN_TE: ("text_encoders", "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/"),
    QWEN_VAE: ("vae", "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/"),
    KONTEXT: ("diffusion_models", "https://huggingface.co/Comfy-Org/flux1-kontext-dev_ComfyUI/resolve/main/split_files/diffusion_models/"),
    CLIP_L: ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"),
    T5: ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"),
    FLUX_VAE: ("vae", "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/"),
    KLEIN: ("diffusion_models", "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/"),
    KLEIN_TE: ("text_encoders", "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/text_encoders/"),
    FLUX2_VAE: ("vae", "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/"),
    # Comfy-Org publishes no LongCat-Image-Edit file: ComfyUI's own template (image_longcat_image_edit) links this one.
    LONGCAT_EDIT: ("diffusion_models",
                   "https://huggingface.co/TalmajM/LongCat-Image-Edit_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/"),
}
# The LoRA and focus weights are the user's own training run's (any names): the Loader starts at "(none)".
NO_FILE = "(none)"
# Ships with the pack (example_workflows/); the pack copies it into ComfyUI's input folder when it loads.
SOURCE_IMAGE = "cogniedit_example.png"
# Files named like the real models (test servers only, never loaded: only tiny variants run), so the front end
# shows the examples as a user with the models installed sees them.
PLACEHOLDERS = {"diffusion_models": [QWEN_2509, QWEN_2511, KONTEXT, KLEIN, LONGCAT_EDIT],
                "text_encoders": [QWEN_TE, CLIP_L, T5, KLEIN_TE], "vae": [QWEN_VAE, FLUX_VAE, FLUX2_VAE]}
# Matches the source image: colour ("red"), position ("left") and count ("two") in one edit.
INSTRUCTION = "Make the left blue circle red and add two yellow triangles in the bottom row."
SEED = 42
# Lines a report box shows without scrolling (the reports of a run; the browser test checks they fit).
REPORT_LINES = {"decompose": 7, "focus_report": 13, "report": 16, "shape_loader_report": 4, "shape_decompose": 9}


def qwen_base(unet: str) -> list[dict]:
    """Loaders + source image + the shared instruction, as Comfy-Org's Qwen-Image-Edit template wires them."""
    return [
        dict(key="unet", type="UNETLoader", col=0, row=0, widgets={"unet_name": unet, "weight_dtype": "default"}),
        dict(key="clip", type="CLIPLoader", col=0, row=1, widgets={"clip_name": QWEN_TE, "type": "qwen_image"}),
        dict(key="vae", type="VAELoader", col=0, row=2, widgets={"vae_name": QWEN_VAE}),
        dict(key="image", type="LoadImage", col=0, row=3, widgets={"image": SOURCE_IMAGE}),
        dict(key="shift", type="ModelSamplingAuraFlow", col=1, row=0, widgets={"shift": 3.0}, links={"model": ("unet", 0)}),
        dict(key="cfgnorm", type="CFGNorm", col=2, row=0, widgets={"strength": 1.0}, links={"model": ("shift", 0)}),
        dict(key="scaled", type="ImageScaleToTotalPixels", col=1, row=3,
             widgets={"upscale_method": "lanczos", "megapixels": 1.0, "resolution_steps": 32}, links={"image": ("image", 0)}),
        dict(key="text", type="PrimitiveStringMultiline", col=1, row=1, title="Instruction", widgets={"value": INSTRUCTION}),
        dict(key="pos", type="TextEncodeQwenImageEditPlus", col=2, row=1, title="Positive (instruction)",
             links={"clip": ("clip", 0), "prompt": ("text", 0), "image1": ("scaled", 0)}),
        dict(key="neg", type="TextEncodeQwenImageEditPlus", col=2, row=2, title="Negative", widgets={"prompt": ""},
             links={"clip": ("clip", 0), "image1": ("scaled", 0)}),
    ]


def cogniedit_branch(model: str, backend: str, clip: str | None, image: str, focus_weights=None, col: int = 3,
                     cfg: float = 2.5) -> list[dict]:
    """Decompose -> Token Focus -> CogniEdit Sampler -> decode/save, plus the sampler report."""
    decompose_links = {"image": (image, 0), "instruction": ("text", 0)}
    if clip and backend == "text_encoder":
        decompose_links["clip"] = (clip, 0)
    # The focus node patches a clone of the model; its DIRECTIVES output carries the same patch to the
    # sampler, which applies it to the model it samples with (so the MODEL output stays unused here).
    focus_links = {"model": (model, 0), "directives": ("decompose", 0)}
    focus_widgets = {"mode": "training_free_bias", "strength": 1.0}
    if focus_weights:
        focus_links["focus_weights"] = focus_weights
        focus_widgets["mode"] = "learned"
    sampler_links = {"model": (model, 0), "positive": ("pos", 0), "negative": ("neg", 0), "source_image": (image, 0),
                     "vae": ("vae", 0), "directives": ("focus", 2)}
    if clip:
        sampler_links["clip"] = (clip, 0)
    return [
        dict(key="decompose", type="CogniEditInstructionDecompose", col=col, row=2, widgets={"backend": backend},
             links=decompose_links),
        dict(key="focus", type="CogniEditTokenFocus", col=col, row=3, widgets=focus_widgets, links=focus_links),
        dict(key="focus_report", type="PreviewAny", col=col + 1, row=3, title="Focus report",
             links={"source": ("focus", 1)}),
        dict(key="sampler", type="CogniEditSampler", col=col + 1, row=0,
             widgets={"seed": SEED, "steps": 20, "cfg": cfg},
             links=sampler_links),
        dict(key="decode", type="VAEDecode", col=col + 2, row=0, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        # Its own column: after a run it grows to show the edited image.
        dict(key="save", type="SaveImage", col=col + 3, row=0, widgets={"filename_prefix": "CogniEdit/edit"},
             links={"images": ("decode", 0)}),
        dict(key="report", type="PreviewAny", col=col + 2, row=1, title="Sampler report", links={"source": ("sampler", 1)}),
    ]


def qwen_no_download() -> list[dict]:
    return qwen_base(QWEN_2509) + cogniedit_branch("cfgnorm", "text_encoder", "clip", "scaled")


def qwen_lora() -> list[dict]:
    nodes = qwen_base(QWEN_2511) + [
        dict(key="loader", type="CogniEditLoader", col=3, row=0,
             widgets={"lora_name": NO_FILE, "focus_weights": NO_FILE}, links={"model": ("cfgnorm", 0)}),
    ]
    return nodes + cogniedit_branch("loader", "text_encoder", "clip", "scaled", focus_weights=("loader", 1), col=4)


def flux_kontext() -> list[dict]:
    nodes = [
        dict(key="unet", type="UNETLoader", col=0, row=0, widgets={"unet_name": KONTEXT, "weight_dtype": "default"}),
        dict(key="clip", type="DualCLIPLoader", col=0, row=1, widgets={"clip_name1": CLIP_L, "clip_name2": T5, "type": "flux"}),
        dict(key="vae", type="VAELoader", col=0, row=2, widgets={"vae_name": FLUX_VAE}),
        dict(key="image", type="LoadImage", col=0, row=3, widgets={"image": SOURCE_IMAGE}),
        dict(key="scaled", type="FluxKontextImageScale", col=1, row=3, links={"image": ("image", 0)}),
        dict(key="text", type="PrimitiveStringMultiline", col=1, row=1, title="Instruction", widgets={"value": INSTRUCTION}),
        dict(key="encode", type="CLIPTextEncode", col=2, row=1, title="Positive (instruction)",
             links={"clip": ("clip", 0), "text": ("text", 0)}),
        dict(key="pos", type="FluxGuidance", col=2, row=0, widgets={"guidance": 2.5}, links={"conditioning": ("encode", 0)}),
        dict(key="neg", type="ConditioningZeroOut", col=2, row=2, title="Negative (zero)", links={"conditioning": ("encode", 0)}),
    ]
    # Flux Kontext has no vision-language encoder: the rule-based decomposition needs no model.
    return nodes + cogniedit_branch("unet", "rules", "clip", "scaled", cfg=1.0)


def single_clip_inputs(unet: str, clip: str, clip_type: str, vae: str) -> list[dict]:
    """Loaders (one text encoder), the source image at 1 MP in 32-px steps and the instruction."""
    return [
        dict(key="unet", type="UNETLoader", col=0, row=0, widgets={"unet_name": unet, "weight_dtype": "default"}),
        dict(key="clip", type="CLIPLoader", col=0, row=1, widgets={"clip_name": clip, "type": clip_type}),
        dict(key="vae", type="VAELoader", col=0, row=2, widgets={"vae_name": vae}),
        dict(key="image", type="LoadImage", col=0, row=3, widgets={"image": SOURCE_IMAGE}),
        dict(key="text", type="PrimitiveStringMultiline", col=1, row=1, title="Instruction", widgets={"value": INSTRUCTION}),
        dict(key="scaled", type="ImageScaleToTotalPixels", col=1, row=3,
             widgets={"upscale_method": "lanczos", "megapixels": 1.0, "resolution_steps": 32}, links={"image": ("image", 0)}),
    ]


def flux2_klein() -> list[dict]:
    """ComfyUI's FLUX.2 klein edit template: plain text encodes, the source as a ReferenceLatent on both (so the
    sampler adds none); Decompose generates on klein's own Qwen3 encoder."""
    nodes = single_clip_inputs(KLEIN, KLEIN_TE, "flux2", FLUX2_VAE) + [
        dict(key="encode", type="CLIPTextEncode", col=2, row=0, title="Positive (instruction)",
             links={"clip": ("clip", 0), "text": ("text", 0)}),
        dict(key="encode_neg", type="CLIPTextEncode", col=2, row=1, title="Negative", widgets={"text": ""},
             links={"clip": ("clip", 0)}),
        dict(key="source", type="VAEEncode", col=2, row=2, links={"pixels": ("scaled", 0), "vae": ("vae", 0)}),
        dict(key="pos", type="ReferenceLatent", col=3, row=0, title="Positive + reference",
             links={"conditioning": ("encode", 0), "latent": ("source", 0)}),
        dict(key="neg", type="ReferenceLatent", col=3, row=1, title="Negative + reference",
             links={"conditioning": ("encode_neg", 0), "latent": ("source", 0)}),
    ]
    return nodes + cogniedit_branch("unet", "text_encoder", "clip", "scaled", col=4, cfg=5.0)


def longcat_edit() -> list[dict]:
    """ComfyUI's LongCat Image Edit blueprint without its FluxGuidance (model_base.LongCatImage drops guidance):
    TextEncodeQwenImageEdit with the image as vision input and no VAE (the sampler adds the reference at the
    source size), index reference method on both."""
    nodes = single_clip_inputs(LONGCAT_EDIT, QWEN_TE, "longcat_image", FLUX_VAE) + [
        dict(key="encode", type="TextEncodeQwenImageEdit", col=2, row=0, title="Positive (instruction)",
             links={"clip": ("clip", 0), "prompt": ("text", 0), "image": ("scaled", 0)}),
        dict(key="encode_neg", type="TextEncodeQwenImageEdit", col=2, row=1, title="Negative", widgets={"prompt": ""},
             links={"clip": ("clip", 0), "image": ("scaled", 0)}),
        dict(key="pos", type="FluxKontextMultiReferenceLatentMethod", col=3, row=0, title="Positive (index references)",
             widgets={"reference_latents_method": "index"}, links={"conditioning": ("encode", 0)}),
        dict(key="neg", type="FluxKontextMultiReferenceLatentMethod", col=3, row=1, title="Negative (index references)",
             widgets={"reference_latents_method": "index"}, links={"conditioning": ("encode_neg", 0)}),
    ]
    # ComfyUI's Qwen2.5-VL encoder cannot generate text: the rule-based decomposition needs no model.
    return nodes + cogniedit_branch("unet", "rules", "clip", "scaled", col=4, cfg=4.5)


def compare() -> list[dict]:
    """Plain Qwen-Image-Edit (KSampler) and CogniEdit on the same seed, stitched side by side."""
    nodes = qwen_base(QWEN_2509) + [
        dict(key="plain_pos", type="TextEncodeQwenImageEditPlus", col=2, row=3, title="Plain positive (with reference)",
             links={"clip": ("clip", 0), "prompt": ("text", 0), "vae": ("vae", 0), "image1": ("scaled", 0)}),
        dict(key="plain_neg", type="TextEncodeQwenImageEditPlus", col=2, row=4, title="Plain negative (with reference)",
             widgets={"prompt": ""}, links={"clip": ("clip", 0), "vae": ("vae", 0), "image1": ("scaled", 0)}),
        dict(key="encode", type="VAEEncode", col=1, row=4, links={"pixels": ("scaled", 0), "vae": ("vae", 0)}),
        dict(key="plain", type="KSampler", col=3, row=4, title="Plain edit (KSampler)",
             widgets={"seed": SEED, "steps": 20, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0},
             links={"model": ("cfgnorm", 0), "positive": ("plain_pos", 0), "negative": ("plain_neg", 0),
                    "latent_image": ("encode", 0)}),
        dict(key="plain_decode", type="VAEDecode", col=4, row=4, links={"samples": ("plain", 0), "vae": ("vae", 0)}),
    ]
    nodes += cogniedit_branch("cfgnorm", "text_encoder", "clip", "scaled")
    for node in nodes:
        if node["key"] == "save":
            node["links"] = {"images": ("stitch", 0)}
            node["widgets"] = {"filename_prefix": "CogniEdit/compare"}
            node["col"], node["row"] = 6, 0
    nodes.append(dict(key="stitch", type="ImageStitch", col=5, row=4, title="Plain | CogniEdit",
                      widgets={"direction": "right", "match_image_size": True, "spacing_width": 16},
                      links={"image1": ("plain_decode", 0), "image2": ("decode", 0)}))
    return nodes


# ---------------------------------------------------------------- ShapeEdit demo (issue 13): everything ships
SHAPEEDIT_DEMO = "cogniedit_shapeedit_demo"
# A fixed scene outside the evaluation seeds (20261129, 0, 1, ...): a red triangle (middle left) and a purple
# circle (middle right); the instruction must be read off the image (the triangle's colour). Chosen once, not
# tried against others: the workflow shows what the shipped models do with it, right or wrong.
SHAPEEDIT_SCENE_SEED = 4711
SHAPEEDIT_INSTRUCTION = "Make the circle the same colour as the triangle."
SHAPEEDIT_STEPS = 12  # the command-line editor's settings: 12 Euler steps, cfg 1, simple schedule (shift 1)


def shapeedit_demo() -> list[dict]:
    """The shipped ShapeEdit editor and decomposer, plain (core KSampler) vs CogniEdit (decomposed instruction,
    Token Focus at its default, CogniEdit Sampler), same seed; saved as source | plain | CogniEdit, 4x."""
    sampling = {"seed": SEED, "steps": SHAPEEDIT_STEPS, "cfg": 1.0}
    return [
        dict(key="editor", type="CogniEditShapeEditLoader", col=0, row=0),
        dict(key="shape_loader_report", type="PreviewAny", col=0, row=1, title="Editor report",
             links={"source": ("editor", 3)}),
        dict(key="scene", type="CogniEditShapeScene", col=0, row=2, widgets={"seed": SHAPEEDIT_SCENE_SEED}),
        dict(key="text", type="PrimitiveStringMultiline", col=0, row=3, title="Instruction",
             widgets={"value": SHAPEEDIT_INSTRUCTION}),
        dict(key="encode", type="VAEEncode", col=1, row=0, links={"pixels": ("scene", 0), "vae": ("editor", 2)}),
        dict(key="pos", type="CLIPTextEncode", col=1, row=1, title="Positive (instruction)",
             links={"clip": ("editor", 1), "text": ("text", 0)}),
        dict(key="plain_pos", type="ReferenceLatent", col=1, row=2, title="Plain positive (with reference)",
             links={"conditioning": ("pos", 0), "latent": ("encode", 0)}),
        dict(key="neg", type="ConditioningZeroOut", col=1, row=3, title="Negative (unused at cfg 1)",
             links={"conditioning": ("plain_pos", 0)}),
        dict(key="plain", type="KSampler", col=2, row=0, title="Plain edit (KSampler)",
             widgets={**sampling, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0},
             links={"model": ("editor", 0), "positive": ("plain_pos", 0), "negative": ("neg", 0),
                    "latent_image": ("encode", 0)}),
        dict(key="shape_decompose", type="CogniEditInstructionDecompose", col=2, row=1,
             widgets={"backend": "transformers_vlm", "model": "shapeedit_decomposer"},
             links={"image": ("scene", 0), "instruction": ("text", 0)}),
        dict(key="focus", type="CogniEditTokenFocus", col=3, row=1,
             links={"model": ("editor", 0), "directives": ("shape_decompose", 0)}),
        dict(key="focus_report", type="PreviewAny", col=3, row=2, title="Focus report", links={"source": ("focus", 1)}),
        dict(key="sampler", type="CogniEditSampler", col=3, row=0, widgets=sampling,
             links={"model": ("editor", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                    "source_latent": ("encode", 0), "directives": ("focus", 2), "clip": ("editor", 1)}),
        dict(key="report", type="PreviewAny", col=4, row=1, title="Sampler report", links={"source": ("sampler", 1)}),
        dict(key="plain_decode", type="VAEDecode", col=4, row=0, links={"samples": ("plain", 0), "vae": ("editor", 2)}),
        dict(key="decode", type="VAEDecode", col=5, row=0, links={"samples": ("sampler", 0), "vae": ("editor", 2)}),
        dict(key="stitch_plain", type="ImageStitch", col=5, row=1, title="Source | plain",
             widgets={"direction": "right", "match_image_size": True, "spacing_width": 4},
             links={"image1": ("scene", 0), "image2": ("plain_decode", 0)}),
        dict(key="stitch", type="ImageStitch", col=5, row=2, title="Source | plain | CogniEdit",
             widgets={"direction": "right", "match_image_size": True, "spacing_width": 4},
             links={"image1": ("stitch_plain", 0), "image2": ("decode", 0)}),
        dict(key="zoom", type="ImageScaleBy", col=6, row=1, title="4x (48 px scenes)",
             widgets={"upscale_method": "nearest-exact", "scale_by": 4.0}, links={"image": ("stitch", 0)}),
        dict(key="save", type="SaveImage", col=6, row=0, widgets={"filename_prefix": "CogniEdit/shapeedit_demo"},
             links={"images": ("zoom", 0)}),
    ]


# Workflows whose models ship with the pack: the tests run them as they are (no tiny variant, nothing to download).
SHIPS_ITS_MODELS = {SHAPEEDIT_DEMO}
# File names an issue fixes (issue 13: example_workflows/cogniedit_shapeedit_demo.json), exempt from the title style.
ISSUE_FILE_NAMES = {SHAPEEDIT_DEMO}


# The template browser shows the file name as the title (custom-node templates have no other): short, readable.
FILE_NAMES = {
    "cogniedit_qwen_image_edit_2509_no_download": "CogniEdit Qwen-Image-Edit 2509",
    "cogniedit_qwen_image_edit_2511_lora_focus": "CogniEdit Qwen-Image-Edit 2511 LoRA",
    "cogniedit_flux_kontext": "CogniEdit Flux Kontext",
    "cogniedit_compare_plain_vs_cogniedit": "CogniEdit vs plain Qwen-Image-Edit",
    "cogniedit_flux2_klein": "CogniEdit FLUX.2 klein",
    "cogniedit_longcat_image_edit": "CogniEdit LongCat-Image-Edit",
    SHAPEEDIT_DEMO: SHAPEEDIT_DEMO,
}


def example_path(name: str, suffix: str = ".json") -> Path:
    """example_workflows/<file name><suffix> of the workflow with key ``name``."""
    return EXAMPLES / f"{FILE_NAMES[name]}{suffix}"


def source_image_array():
    """The shipped source image (uint8 HxWx3): a ShapeEdit scene, rendered at 480 px, that INSTRUCTION fits."""
    from cogniedit.shapes.render import render_scene
    from cogniedit.shapes.scene import Scene, ShapeObject, WorldConfig

    world = WorldConfig(cell=160, object_size=120)
    scene = Scene((ShapeObject(1, 0, "circle", "blue", 120), ShapeObject(1, 2, "circle", "blue", 120),
                   ShapeObject(0, 1, "square", "green", 120)))
    return render_scene(scene.validate(world), world)


def write_source_image() -> Path:
    from PIL import Image

    from cogniedit.atomic_io import atomic_save

    return atomic_save(EXAMPLES / SOURCE_IMAGE, lambda tmp: Image.fromarray(source_image_array()).save(tmp, "PNG"))


WORKFLOWS = {
    "cogniedit_qwen_image_edit_2509_no_download": qwen_no_download,
    "cogniedit_qwen_image_edit_2511_lora_focus": qwen_lora,
    "cogniedit_flux_kontext": flux_kontext,
    "cogniedit_compare_plain_vs_cogniedit": compare,
    "cogniedit_flux2_klein": flux2_klein,
    "cogniedit_longcat_image_edit": longcat_edit,
    SHAPEEDIT_DEMO: shapeedit_demo,
}

SOURCE_NOTE = f"\nLoad Image starts with `{SOURCE_IMAGE}` (ships with the pack): load your own image there.\n"
QWEN_FILES = f"""
| folder under ComfyUI/models | file |
| --- | --- |
| diffusion_models | `{{unet}}` |
| text_encoders | `{QWEN_TE}` (CLIPLoader type qwen_image) |
| vae | `{QWEN_VAE}` |
"""
NOTES = {  # + SOURCE_NOTE, below
    "cogniedit_qwen_image_edit_2509_no_download": "## CogniEdit: Qwen-Image-Edit-2509, no extra download\n"
    "Instruction Decompose runs on the loaded Qwen2.5-VL (falls back to the built-in rules when the encoder cannot "
    "generate text; see its report), Token Focus adds training-free attention focus on the colour/position/count "
    "words. Only the Comfy-Org files below are needed.\n" + QWEN_FILES.format(unet=QWEN_2509) +
    "\nLoad your image in **Load Image**, write the instruction in **Instruction**, press Run.\n",
    "cogniedit_qwen_image_edit_2511_lora_focus": "## CogniEdit: Qwen-Image-Edit-2511 + trained LoRA and focus weights\n"
    "Full CogniEdit: the Dense-GRPO LoRA and the learned Token Focus weights from the same training run.\n"
    + QWEN_FILES.format(unet=QWEN_2511) + "| loras | the LoRA your training run wrote |\n"
    "| cogniedit | the focus weights of the same run |\n\nPick both in the **CogniEdit Loader** (they start at "
    "(none)); the trainer is `python -m training.grpo` (the pack's docs/training.md).\n",
    "cogniedit_flux_kontext": "## CogniEdit: Flux.1 Kontext dev\n"
    "Rule-based decomposition (no vision-language model needed), training-free Token Focus on the T5 tokens, "
    "cfg 1 with FluxGuidance 2.5.\n\n| folder under ComfyUI/models | file |\n| --- | --- |\n"
    f"| diffusion_models | `{KONTEXT}` |\n| text_encoders | `{CLIP_L}`, `{T5}` (DualCLIPLoader type flux) |\n"
    f"| vae | `{FLUX_VAE}` |\n",
    "cogniedit_compare_plain_vs_cogniedit": "## Plain Qwen-Image-Edit vs CogniEdit, same seed\n"
    "Left: the core KSampler edit. Right: the same model, seed and steps with CogniEdit's decomposition and "
    "Token Focus. The saved image shows both side by side.\n" + QWEN_FILES.format(unet=QWEN_2509),
    "cogniedit_flux2_klein": "## CogniEdit: FLUX.2 klein 4B (base)\n"
    "Instruction Decompose generates on klein's own Qwen3 4B text encoder (no extra model), Token Focus adds "
    "training-free focus on the focus words, the source goes in as a Reference Latent on both prompts, cfg 5.\n\n"
    "| folder under ComfyUI/models | file |\n| --- | --- |\n"
    f"| diffusion_models | `{KLEIN}` |\n| text_encoders | `{KLEIN_TE}` (CLIPLoader type flux2) |\n"
    f"| vae | `{FLUX2_VAE}` |\n",
    "cogniedit_longcat_image_edit": "## CogniEdit: LongCat-Image-Edit\n"
    "Rule-based decomposition (ComfyUI's Qwen2.5-VL encoder cannot generate text), training-free Token Focus on the "
    "prompt's Qwen2.5-VL tokens, index reference method, cfg 4.5.\n\n"
    "| folder under ComfyUI/models | file |\n| --- | --- |\n"
    f"| diffusion_models | `{LONGCAT_EDIT}` |\n| text_encoders | `{QWEN_TE}` (CLIPLoader type longcat_image) |\n"
    f"| vae | `{FLUX_VAE}` |\n",
}
NOTES = {name: text + SOURCE_NOTE for name, text in NOTES.items()}
NOTES[SHAPEEDIT_DEMO] = (
    "## CogniEdit ShapeEdit demo: plain vs CogniEdit, nothing to download\n"
    "The pack's own small models, on the CPU in seconds: the **CogniEdit ShapeEdit Loader** gives the shipped "
    "ShapeEdit editor as MODEL, CLIP and VAE; **Instruction Decompose** runs the shipped decomposer (backend "
    "`transformers_vlm`, model `shapeedit_decomposer`, a small Qwen2.5-VL) on the scene. Plain: core KSampler on "
    "the instruction as written. CogniEdit: the decomposed instruction, Token Focus (its default strength 0 "
    "changes nothing: raise it to relocate attention), the CogniEdit Sampler; same seed, 12 steps, cfg 1. "
    "Saved: source | plain | CogniEdit, 4x.\n\n"
    "No models to download. Change the scene seed in **CogniEdit ShapeEdit Scene** and write an instruction "
    "for that scene in **Instruction**; both models know ShapeEdit scenes only (docs/shapeedit-decomposer.md).\n")

NODE_WIDTH, REPORT_WIDTH, COL_GAP, GAP = 340, 560, 60, 50
# Heights the front end gives what the schema does not show: its text preview (Preview Any, and the pack's
# Decompose report, web/cogniedit_reports.js) and that preview's Markdown/Plain toggle.
REPORT_LINE, REPORT_PADDING, PREVIEW_TOGGLE = 21, 24, 28  # text-sm at leading-normal: 21 px a line
REPORT_NODE_TYPES = {"PreviewAny", "CogniEditInstructionDecompose"}


def widget_default(spec_input):
    options = spec_input.options
    if "default" in options:
        return options["default"]
    if spec_input.choices:
        return spec_input.choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec_input.type, "")


def stack_columns(nodes: list[dict], ui_nodes: dict) -> None:
    """Columns left to right, each as wide as its widest node plus COL_GAP; each column's nodes top to bottom in
    row order, GAP apart (sizes are estimates that err on the tall side; the browser test checks no overlap)."""
    widths: dict[int, float] = {}
    for n in nodes:
        widths[n["col"]] = max(widths.get(n["col"], 0), ui_nodes[n["key"]]["size"][0])
    lefts, x = {}, 40
    for col in range(max(widths) + 1):
        lefts[col] = x
        x += widths.get(col, NODE_WIDTH) + COL_GAP
    tops: dict[int, float] = {}
    for n in sorted(nodes, key=lambda n: (n["col"], n["row"])):
        node = ui_nodes[n["key"]]
        top = tops.get(n["col"], 40)
        node["pos"] = [lefts[n["col"]], top]
        tops[n["col"]] = top + node["size"][1] + GAP


def note_node(node_id: int, text: str) -> dict:
    """A front-end-only MarkdownNote (never sent to the server) with the files the workflow needs."""
    return {"id": node_id, "type": "MarkdownNote", "pos": [40, -420], "size": [760, 380], "flags": {}, "order": 0,
            "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def build(nodes: list[dict], object_info: dict, notes: str = "") -> dict:
    """UI-format workflow (front-end schema version 0.4) for a spec list."""
    ids = {n["key"]: i + 1 for i, n in enumerate(nodes)}
    specs = {n["key"]: node_spec(object_info, n["type"]) for n in nodes}
    ui_nodes, links, link_id = {}, [], 0

    for n in nodes:
        spec = specs[n["key"]]
        unknown = set(n.get("widgets", {})) - {w.name for w in spec.widgets}
        if unknown:
            raise ValueError(f"{n['type']} has no widget inputs {sorted(unknown)}")
        values = []
        for widget in spec.widgets:
            values.append(n.get("widgets", {}).get(widget.name, widget_default(widget)))
            if widget.has_control_after_generate:
                values.append("fixed")
            if widget.options.get("image_upload"):
                values.append("image")
        inputs = [{"name": i.name, "type": i.type, "link": None, **({"widget": {"name": i.name}} if i.is_widget else {})}
                  for i in spec.inputs]
        outputs = [{"name": (spec.output_names[k] if k < len(spec.output_names) else t), "type": t, "links": []}
                   for k, t in enumerate(spec.outputs)]
        sockets = sum(not i.is_widget for i in spec.inputs)
        height = 40 + 22 * max(sockets, len(outputs)) + 28 * len(spec.widgets) + \
            80 * sum(bool(w.options.get("multiline")) for w in spec.widgets)
        if n["type"] in REPORT_NODE_TYPES:
            height += REPORT_PADDING + REPORT_LINE * REPORT_LINES.get(n["key"], 6) + PREVIEW_TOGGLE
        models = [{"name": v, "url": COMFY_ORG_FILES[v][1] + v, "directory": COMFY_ORG_FILES[v][0]}
                  for v in values if isinstance(v, str) and v in COMFY_ORG_FILES]
        ui_nodes[n["key"]] = {
            "id": ids[n["key"]], "type": n["type"], "pos": [0, 0],
            "size": [REPORT_WIDTH if n["type"] in REPORT_NODE_TYPES else NODE_WIDTH, height], "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": n["type"], **({"cnr_id": PACK_ID} if n["type"].startswith("CogniEdit") else {}),
                           **({"models": models} if models else {})},
            "widgets_values": values, **({"title": n["title"]} if n.get("title") else {}),
        }

    stack_columns(nodes, ui_nodes)
    if notes:
        ui_nodes["_note"] = note_node(len(nodes) + 1, notes)
    for n in nodes:
        target = ui_nodes[n["key"]]
        for name, (src_key, src_slot) in n.get("links", {}).items():
            source = ui_nodes[src_key]
            link_type = source["outputs"][src_slot]["type"]
            slot = next((k for k, i in enumerate(target["inputs"]) if i["name"] == name), None)
            if slot is None:
                raise ValueError(f"{n['type']} has no input {name!r}")
            link_id += 1
            target["inputs"][slot]["link"] = link_id
            source["outputs"][src_slot]["links"].append(link_id)
            links.append([link_id, source["id"], src_slot, target["id"], slot, link_type])

    # Execution order for the front end: topological by links.
    deps = {n["id"]: set() for n in ui_nodes.values()}  # MarkdownNote included: no links, order 0
    for _, src, _, dst, _, _ in links:
        deps[dst].add(src)
    order, done = [], set()
    while len(order) < len(deps):
        ready = sorted(k for k, d in deps.items() if k not in done and d <= done)
        order += ready
        done |= set(ready)
    for n in ui_nodes.values():
        n["order"] = order.index(n["id"])

    return {"id": "00000000-0000-4000-8000-0000000000" + f"{len(ui_nodes):02d}", "revision": 0,
            "last_node_id": len(ui_nodes), "last_link_id": link_id,
            "nodes": sorted(ui_nodes.values(), key=lambda x: x["id"]), "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}}, "version": 0.4}


def build_all(object_info: dict) -> dict[str, dict]:
    return {name: build(make(), object_info, NOTES[name]) for name, make in WORKFLOWS.items()}


def dumps(workflow: dict) -> str:
    return json.dumps(workflow, indent=1, ensure_ascii=False) + "\n"


def write_all(object_info: dict, folder: Path = EXAMPLES) -> list[Path]:
    folder.mkdir(exist_ok=True)
    written = []
    for name, workflow in build_all(object_info).items():
        path = folder / f"{FILE_NAMES[name]}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dumps(workflow), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    import urllib.request

    sys.path.insert(1, str(REPO))  # cogniedit, for the source image

    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188"
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as response:
        info = json.load(response)
    for written in write_all(info) + [write_source_image()]:
        print(written)
